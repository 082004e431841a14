"""Live training logs for dashboards: TensorBoard and Weights & Biases, when the run config asks.

The run directory's JSON files stay the record of a run; these sinks mirror them while it runs:
every optimizer step's loss, learning rate and method scalars (e.g. the EMA's share of coefficients
inside (0, 1)) at a global step that runs on across stages, each evaluation row's scores, and the final
metrics. On resume TensorBoard drops the events past the checkpoint, so a curve never runs twice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lcia.errors import input_error


class RunLoggers:
    def __init__(self, cfg, run_dir: Path, resumed_at: int | None = None, enabled: bool = True):
        """``enabled`` False (ranks other than 0 of a multi-process run): no sink is opened."""
        self.tensorboard = self.wandb = None
        if enabled and cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resumed_at)
        if enabled and cfg.logging.wandb:
            if importlib.util.find_spec("wandb") is None:
                raise input_error("the wandb package is not installed (pip install wandb)", field="logging.wandb")
            import wandb

            self.wandb = wandb.init(
                project=cfg.logging.wandb_project,
                name=run_dir.name,
                dir=str(run_dir),
                config=cfg.model_dump(mode="json"),
                resume="allow",
                id=f"{run_dir.name}",
            )

    def scalars(self, values: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
