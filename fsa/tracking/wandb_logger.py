"""Weights & Biases: one W&B run per run folder, grouped per sweep, offline unless logged in."""

import logging
import netrc
import os
from pathlib import Path
from typing import Any

from fsa.guidance.decoder import POST, Evaluation
from fsa.tracking.run_folder import RunFolder, SampleResult, target_folder_name

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
    """Per-evaluation distances under `<variant>/<nnn>_<target>/sample<i>/`, best and final images with
    their distances as captions, and the run summary.

    The x axis is each sample's own guided iteration, so guided and baseline curves of the same
    target and seed overlay. Pre-guidance scores are `distance`, post-guidance checks `post_distance`
    (their `k` is logged as k + 0.5, as the authors log it). Rows are held until `send()`, which the
    runner calls whenever a checkpoint is written: W&B gets exactly what a checkpoint covers, so a
    run killed and resumed logs every iteration once."""

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
            settings=wandb.Settings(quiet=True),  # fsa's log already says what came out
        )
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")
        self._keys: list[str] = []
        self._pending: list[dict[str, Any]] = []
        log.info("W&B run %s (%s mode) in %s", self.run.id, self.mode, self.run.dir)

    def start_batch(self, variant: str, keys: list[str]) -> None:
        """The metric prefixes of the batch's samples: `<variant>/<nnn>_<target>/sample<i>`."""
        self._keys = [f"{variant}/{key}" for key in keys]

    def __call__(self, ev: Evaluation) -> None:
        post = ev.phase == POST
        row: dict[str, Any] = {"iteration": ev.iteration, "t": ev.t, "k": ev.k + (0.5 if post else 0.0)}
        stats = ev.stats
        norms = stats.grad_norm.tolist() if stats is not None else None
        clipped = stats.clipped_fraction.tolist() if stats is not None else None
        values = zip(self._keys, ev.distance.tolist(), ev.cosine.tolist(), ev.best_distance.tolist(), strict=True)
        for i, (key, d, c, best) in enumerate(values):
            row[f"{key}/{'post_' if post else ''}distance"] = d
            row[f"{key}/{'post_' if post else ''}cosine"] = c
            row[f"{key}/best_distance"] = best
            if norms is not None and clipped is not None:
                row[f"{key}/grad_norm"] = norms[i]
                row[f"{key}/clipped_fraction"] = clipped[i]
        self._pending.append(row)

    def log_images(self, variant: str, records: list[SampleResult], folder: RunFolder) -> None:
        """The best and final image of each sample, and each target's actual image once."""
        images: dict[str, Any] = {}
        for r in records:
            key = f"{variant}/{target_folder_name(r.target_index, r.target)}"
            best = f"best d={r.best_distance:.5g} (t={r.best_t}, k={r.best_k}, {r.best_phase}); "
            images[f"{key}/sample{r.sample}/best_image"] = self._image(
                folder.path(r.best_image), best + f"PNG d={r.best_png_distance:.5g}"
            )
            images[f"{key}/sample{r.sample}/final_image"] = self._image(
                folder.path(r.final_image), f"final d={r.final_distance:.5g}; PNG d={r.final_png_distance:.5g}"
            )
            target = folder.target_image(variant, r.target_index, r.target)
            if r.sample == 0 and target.exists():
                images[f"{key}/target_image"] = self._image(target, f"target {r.target}")
        self._pending.append(images)

    def _image(self, path: Path, caption: str) -> Any:
        return self._wandb.Image(str(path), caption=caption)

    def send(self) -> None:
        """Log the rows held since the last send (called when a checkpoint covers them)."""
        for row in self._pending:
            self.run.log(row)
        self._pending.clear()

    def finish(self, summary: dict[str, Any], exit_code: int = 0) -> None:
        """A finished run sends what it holds; a failed or interrupted one drops it, since the rows
        after the last checkpoint are decoded again when the run resumes."""
        if exit_code == 0:
            self.send()
        for key, value in summary.items():
            self.run.summary[key] = value
        self.run.finish(exit_code=exit_code)
