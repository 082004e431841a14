"""``lcia serve``: an OpenAI-compatible chat server over a trained run (docs/serving.md).

A request's messages become an ``Example`` (``requests``), a single worker thread answers what is queued with
one batched ``generate_answers`` call (``batcher``), and the answers go back whole or streamed token by token
(``responses``); ``server`` holds the FastAPI app and the command.
"""

from __future__ import annotations

from lcia.serving.server import create_app, serve

__all__ = ["create_app", "serve"]
