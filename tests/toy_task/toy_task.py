"""A toy task, as a user adds one: this module and one YAML (conf/task/toy.yaml).

A random walk of `steps` steps from the job's seed, each step one iteration that the job may
checkpoint (every `checkpoint_every` steps, and on SIGTERM): a stopped job resumes to the same walk.
It writes `toy.csv` and `overview.png`, logs each step to W&B, and returns its summary. TOY_STOP_AT=k
sends the job SIGTERM at step k, so that tests can stop it at a known place.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from PIL import Image

from fsa.errors import ConfigError


@dataclass(frozen=True)
class ToyOptions:
    steps: int = 8
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"task.steps must be >= 1, got {self.steps}")


@dataclass
class ToyState:
    """The walk so far: its positions, one per step taken."""

    positions: list[float] = field(default_factory=list)


class ToyTask:
    name = "toy"
    options = ToyOptions
    uses = ()  # no component group: its root config holds only the common keys
    outputs = ("toy.csv", "overview.png")
    tables = {"toy.csv": "the walk, one row per step"}  # noqa: RUF012
    state = ToyState
    metrics = ("final_position", "wall_time_s")

    def check(self, cfg: Any) -> None:
        pass

    def run(self, job: Any) -> dict[str, Any]:
        options: ToyOptions = job.options
        state: ToyState = job.saved or ToyState()
        if job.tracker is not None:
            job.tracker.open("toy", job_type="toy")
        stop_at = int(os.environ.get("TOY_STOP_AT", "-1"))
        while len(state.positions) < options.steps:
            step = len(state.positions)
            generator = torch.Generator().manual_seed(job.cfg.seed * 1000 + step)
            last = state.positions[-1] if state.positions else 0.0
            state.positions.append(last + options.scale * float(torch.randn(1, generator=generator)))
            if job.tracker is not None:
                job.tracker.log("toy", {"step": step, "position": state.positions[-1]})
            if step == stop_at:
                signal.raise_signal(signal.SIGTERM)
            job.checkpoints.after_iteration(lambda: state)
        table = pd.DataFrame({"step": range(options.steps), "position": state.positions})
        table.to_csv(job.folder.path("toy.csv"), index=False)
        shade = int(max(0, min(255, 128 + 20 * state.positions[-1])))
        Image.new("RGB", (16, 16), (shade, shade, shade)).save(job.folder.overview_file)
        return {"steps": options.steps, "final_position": state.positions[-1]}

    def headline(self, summary: dict[str, Any]) -> str:
        return f"walked {summary['steps']} steps to {summary['final_position']:.4f}"
