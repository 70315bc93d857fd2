"""Weights & Biases: one W&B run per Hydra job, grouped per sweep, offline unless logged in."""

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from fsa.guidance.decoder import POST, Evaluation

log = logging.getLogger("fsa")


def logged_in() -> bool:
    """An API key in the environment or in ~/.netrc; checked without touching the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if logged_in() else "offline"
    return mode


class WandbLogger:
    """Per-evaluation distances (k + 0.5 marks the post-guidance check, as the authors log it),
    best/final images with their distances as captions, and the run summary."""

    def __init__(
        self,
        mode: str,
        run_dir: Path,
        config: dict[str, Any],
        project: str,
        entity: str | None,
        group: str | None,
        name: str | None,
        tags: list[str],
        run_id: str | None = None,
    ) -> None:
        """`run_id`: continue that W&B run (a resumed fsa run) instead of starting a new one."""
        import wandb

        self.mode = resolve_mode(mode)
        self._wandb = wandb
        self.run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=name,
            tags=tags,
            config=config,
            dir=str(run_dir),
            mode=self.mode,
            reinit="finish_previous",
            id=run_id,
            resume="allow" if run_id else None,
        )
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")
        self._iteration_offset = 0
        self._keys: list[str] = []
        log.info("W&B run %s (%s mode) in %s", self.run.id, self.mode, self.run.dir)

    def start_batch(self, keys: list[str], iteration_offset: int) -> None:
        """Metric prefixes of the batch's samples ("<variant>/<nnn>_<target>/sample<i>") and where
        its iterations start on the run's common iteration axis."""
        self._keys, self._iteration_offset = keys, iteration_offset

    def __call__(self, ev: Evaluation) -> None:
        row: dict[str, Any] = {
            "iteration": self._iteration_offset + ev.iteration,
            "t": ev.t,
            "k": ev.k + (0.5 if ev.phase == POST else 0.0),
        }
        stats = ev.stats
        norms = stats.grad_norm.tolist() if stats is not None else None
        clipped = stats.clipped_fraction.tolist() if stats is not None else None
        values = zip(self._keys, ev.distance.tolist(), ev.cosine.tolist(), ev.best_distance.tolist(), strict=True)
        for i, (key, d, c, best) in enumerate(values):
            row[f"{key}/distance"] = d
            row[f"{key}/cosine"] = c
            row[f"{key}/best_distance"] = best
            if norms is not None and clipped is not None:
                row[f"{key}/grad_norm"] = norms[i]
                row[f"{key}/clipped_fraction"] = clipped[i]
        self.run.log(row)

    def log_images(self, images: dict[str, tuple[Path, str]]) -> None:
        """{key: (png path, caption)}."""
        self.run.log({key: self._wandb.Image(str(path), caption=caption) for key, (path, caption) in images.items()})

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        for key, value in summary.items():
            self.run.summary[key] = value
        self.run.finish(exit_code=exit_code)
