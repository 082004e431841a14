"""Continual-learning methods, one file each, registered by config name in ``METHODS``."""

from lcia.methods import ema, grouping, multitask, seq_lora, zero_shot  # noqa: F401  (register)
from lcia.methods.base import METHODS, Capabilities, Method, TrainContext, build_method, register

__all__ = ["METHODS", "Capabilities", "Method", "TrainContext", "build_method", "register"]
