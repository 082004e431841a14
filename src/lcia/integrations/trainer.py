"""The dynamic EMA for a stock Hugging Face ``Trainer`` (and so TRL's ``SFTTrainer``), as a callback.

    from lcia.integrations import DynamicEmaCallback

    trainer = SFTTrainer(model=model, args=args, train_dataset=data, peft_config=LoraConfig(...),
                         callbacks=[DynamicEmaCallback("official")])
    trainer.train()   # one call per task: the EMA replaces the trained weights when it returns

The EMA covers every trainable tensor and runs once per optimizer step, after the step, on the
gradient the step used (accumulated over ``gradient_accumulation_steps``, clipped). Under DeepSpeed
(gradients outside ``param.grad``) and FSDP1 (flattened shards) the callback stops with an error instead
of computing a shard's coefficient; DDP and FSDP2 are exact. ``callback.ema.counts`` holds the
fallbacks by reason, ``callback.ema.last`` the last step's coefficients, and
``callback.ema.state_dict()`` is what to save beside a checkpoint.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from lcia.core.params import trainable
from lcia.mechanisms.weight_ema import DynamicEma, refuse_unsupported_sharding, settings_for


class DynamicEmaCallback(TrainerCallback):
    def __init__(self, preset: str = "official", **overrides: Any):
        self.ema = DynamicEma(settings_for(preset, **overrides))

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        refuse_unsupported_sharding(
            deepspeed=bool(args.deepspeed), fsdp_version=int(args.fsdp_config.get("version", 2)) if args.fsdp else None
        )
        self.ema.start_task(trainable(model))

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.ema.update(trainable(model))  # after optimizer.step(), before the gradients are zeroed

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.ema.finish_task(trainable(model))
