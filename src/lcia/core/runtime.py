"""What every entry point (the command line, the Python API) sets before the libraries load."""

from __future__ import annotations

import logging
import os
import warnings


def offline_and_quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub at run time
    # PEFT calls a transformers API that warns of its own deprecation on every adapter: noise for users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # bitsandbytes (imported by PEFT) logs at import, on AVX512-BF16 CPUs, that it could not fetch an optional
    # kernel from the Hugging Face hub: lcia never fetches one, and a bad-input error must stay one line.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
