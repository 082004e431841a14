"""lcia: continual instruction tuning of (multimodal) language models on upstream Hugging Face libraries.

``lcia.run(...)`` and ``lcia.load(RUN_DIR)`` are the Python API (``lcia.api``), imported on first use so that
``import lcia`` stays light.
"""

__version__ = "0.1.0"
__all__ = ["Run", "load", "run"]


def __getattr__(name: str):
    if name in __all__:
        from lcia import api

        return getattr(api, name)
    raise AttributeError(f"module 'lcia' has no attribute {name!r}")
