"""lcia's mechanisms for code that does not use lcia's runner (a stock Hugging Face Trainer, TRL)."""

from lcia.integrations.trainer import DynamicEmaCallback

__all__ = ["DynamicEmaCallback"]
