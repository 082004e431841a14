"""Continual-learning methods, one file each, registered by config name in ``METHODS``."""

from lcia.methods import (  # noqa: F401  (register)
    ema,
    ewc,
    grouping,
    lwf,
    moelora,
    multitask,
    olora,
    replay,
    seq_lora,
    zero_shot,
)
from lcia.methods.base import METHODS, Capabilities, Method, TrainContext, build_method, register

__all__ = ["METHODS", "Capabilities", "Method", "TrainContext", "build_method", "register"]
