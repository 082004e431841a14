"""lcia: continual instruction tuning of (multimodal) language models on upstream Hugging Face libraries."""

__version__ = "0.1.0"
