"""The guide task's listeners: each hears every evaluation of the decoder (`Evaluation`).

- `EvaluationTable`: evaluations.csv, one row per sample and evaluation;
- `GradientRecorder`: the normalised gradients of the first steps (the paper's Fig. 2), gradients.pt;
- `EvaluationSeries`: the same evaluations as W&B series, with the images and the results tables.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

from fsa.guidance.decoder import POST, Evaluation
from fsa.tracking.run_folder import RunFolder, SampleResult, target_folder_name
from fsa.tracking.tracker import Tracker

TABLE_COLUMNS = (
    "target",
    "sample",
    "seed",
    "iteration",
    "step",
    "t",
    "k",
    "phase",
    "distance",
    "cosine",
    "grad_norm",
    "grad_std",
    "clipped_fraction",
    "elapsed_s",
)


class EvaluationTable:
    """Appends one CSV row per sample and evaluation as the run goes (flushed every `flush_every` rows)."""

    def __init__(self, path: Path, flush_every: int = 256, resume_at: int | None = None) -> None:
        """A new table, or with `resume_at` (a byte offset from `offset()`) the same table cut back to
        that point and continued: the rows of a resumed run then follow on exactly."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if resume_at is None:
            self._file: IO[str] = path.open("w", newline="")
        else:
            self._file = path.open("r+", newline="")
            self._file.truncate(resume_at)
            self._file.seek(resume_at)
        self._writer = csv.writer(self._file)
        if resume_at is None:
            self._writer.writerow(TABLE_COLUMNS)
        self._flush_every = flush_every
        self._pending = 0
        self.samples: list[tuple[str, int, int]] = []
        self._start = time.perf_counter()

    def start_batch(self, samples: list[tuple[str, int, int]]) -> None:
        """(target name, sample index, seed) of each row of the batch about to be decoded."""
        self.samples = samples
        self._start = time.perf_counter()

    def __call__(self, ev: Evaluation) -> None:
        elapsed = f"{time.perf_counter() - self._start:.3f}"
        distances, cosines = ev.distance.tolist(), ev.cosine.tolist()
        stats = ev.stats
        if stats is None:
            grads = [("", "", "")] * len(self.samples)
        else:
            columns = (stats.grad_norm, stats.normalised_std, stats.clipped_fraction)
            grads = [tuple(f"{v:.6g}" for v in row) for row in zip(*(c.tolist() for c in columns), strict=True)]
        for i, ((target, sample, seed), grad) in enumerate(zip(self.samples, grads, strict=True)):
            self._writer.writerow(
                (
                    target,
                    sample,
                    seed,
                    ev.iteration,
                    ev.step,
                    ev.t,
                    ev.k,
                    ev.phase,
                    f"{distances[i]:.8g}",
                    f"{cosines[i]:.8g}",
                    *grad,
                    elapsed,
                )
            )
        self._pending += len(self.samples)
        if self._pending >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self._pending = 0

    def offset(self) -> int:
        """Bytes written so far (everything flushed): where a resumed run continues the table."""
        self.flush()
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


class GradientRecorder:
    """Keeps the normalised gradient g_hat (before clipping) at the first recurrence (k = 0) of the
    first `steps` visited timesteps, for the paper's Fig. 2; saved as `gradients.pt`."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.t: list[int] = []
        self._batches: list[list[Tensor]] = []  # per batch, one (B, C, H, W) tensor per recorded step
        self.samples: list[str] = []

    def start_batch(self, samples: list[str]) -> None:
        self.samples += samples
        self._batches.append([])

    def __call__(self, ev: Evaluation) -> None:
        if ev.stats is None or ev.k != 0 or ev.step >= self.steps:
            return
        if len(self._batches) == 1:
            self.t.append(ev.t)
        self._batches[-1].append(ev.stats.normalised.detach().float().cpu())

    def save(self, path: Path, clip_c: float, clip_mode: str) -> None:
        if not self._batches or not self._batches[0]:
            return
        values = torch.cat([torch.stack(batch) for batch in self._batches], dim=1)  # (steps, B, C, H, W)
        record = {
            "step": list(range(len(self.t))),
            "t": self.t,
            "values": values,
            "samples": self.samples,
            "clip_c": clip_c,
            "clip_mode": clip_mode,
        }
        torch.save(record, path)


STEP = "iteration"  # every series' x axis: the guided iteration of its own sample
# Per-sample series and the summary each keeps: a distance's minimum and where it ended, a cosine's maximum.
SERIES_SUMMARY = {
    "distance": "min,last",  # pre-guidance check (the paper's Eq. 6 score of x_t)
    "post_distance": "min,last",  # post-guidance check of the same iteration, a separate series: no zig-zag
    "best_distance": "min",  # best so far over both checks: the best image's distance
    "cosine": "max,last",
    "post_cosine": "max,last",
    "grad_norm": "mean,last",
    "clipped_fraction": "mean",
}
RESULTS_COLUMNS = [
    "target",
    "sample",
    "seed",
    "target image",
    "best image",
    "best distance",
    "best at",
    "final image",
    "final distance",
    "target class",
    "best oracle class",
    "final oracle class",
    "oracle agrees (best / final)",
]


class EvaluationSeries:
    """The guide's W&B runs, one per variant (job type: the variant), on the job's tracker.

    Metric keys are the same in every variant's run, `<nnn>_<target>/sample<i>/<metric>`, each plotted
    against that sample's own guided iteration, so guided, unguided and printed-sign curves of one
    target and seed overlay in one chart, and so do a sweep's values of w_g."""

    def __init__(self, tracker: Tracker, variants: list[str]) -> None:
        self.tracker = tracker
        for variant in variants:
            tracker.open(variant, job_type=variant, label=variant, config={"variant": variant})
            tracker.define(variant, STEP, hidden=True)
        self._variant = variants[0]
        self._keys: list[str] = []
        self._defined: set[tuple[str, str]] = set()

    def start_batch(self, variant: str, keys: list[str]) -> None:
        """The batch's samples (`<nnn>_<target>/sample<i>`): their series are defined on first sight."""
        self._variant, self._keys = variant, keys
        for key in keys:
            for series, summary in SERIES_SUMMARY.items():
                name = f"{key}/{series}"
                if (variant, name) not in self._defined:
                    self.tracker.define(variant, name, step_metric=STEP, summary=summary)
                    self._defined.add((variant, name))

    def __call__(self, ev: Evaluation) -> None:
        post = "post_" if ev.phase == POST else ""
        row: dict[str, Any] = {STEP: ev.iteration, "t": ev.t}
        stats = ev.stats
        norms = stats.grad_norm.tolist() if stats is not None else None
        clipped = stats.clipped_fraction.tolist() if stats is not None else None
        values = zip(self._keys, ev.distance.tolist(), ev.cosine.tolist(), ev.best_distance.tolist(), strict=True)
        for i, (key, d, c, best) in enumerate(values):
            row[f"{key}/{post}distance"] = d
            row[f"{key}/{post}cosine"] = c
            row[f"{key}/best_distance"] = best
            if norms is not None and clipped is not None:
                row[f"{key}/grad_norm"] = norms[i]
                row[f"{key}/clipped_fraction"] = clipped[i]
        self.tracker.log(self._variant, row)

    def log_images(self, variant: str, records: list[SampleResult], folder: RunFolder) -> None:
        """The best and final image of each sample, and each target's actual image, as media."""
        image = self.tracker.image
        images: dict[str, Any] = {}
        for r in records:
            key = f"{target_folder_name(r.target_index, r.target)}/sample{r.sample}"
            best = f"best d={r.best_distance:.5g} (t={r.best_t}, k={r.best_k}, {r.best_phase}); "
            images[f"{key}/best_image"] = image(folder.path(r.best_image), best + f"PNG d={r.best_png_distance:.5g}")
            final = f"final d={r.final_distance:.5g}; PNG d={r.final_png_distance:.5g}"
            images[f"{key}/final_image"] = image(folder.path(r.final_image), final)
            target = folder.target_image(variant, r.target_index, r.target)
            if r.sample == 0 and target.exists():
                images[f"{target_folder_name(r.target_index, r.target)}/target_image"] = image(
                    target, f"target {r.target}"
                )
        self.tracker.log(variant, images)

    def results_table(self, variant: str, records: list[SampleResult], folder: RunFolder) -> None:
        """`results`: one row per sample with its target, best and final image and distances, and the
        oracle's verdicts where there is an oracle."""
        import pandas as pd

        image = self.tracker.image
        rows = []
        for r in sorted(records, key=lambda r: (r.target_index, r.sample)):
            target = folder.target_image(variant, r.target_index, r.target)
            verdicts = [getattr(r, f"{kind}_oracle_class") for kind in ("best", "final")]
            agrees = None
            if r.target_label is not None and None not in verdicts:
                agrees = " / ".join("yes" if v == r.target_label else "no" for v in verdicts)
            where = f"t={r.best_t}, k={r.best_k} ({r.best_phase})"
            target_image = image(target) if target.exists() else None
            best, final = image(folder.path(r.best_image)), image(folder.path(r.final_image))
            row = [r.target, r.sample, r.seed, target_image, best, r.best_distance, where, final, r.final_distance]
            rows.append([*row, r.target_label, *verdicts, agrees])
        table = pd.DataFrame(rows, columns=RESULTS_COLUMNS, dtype=object)
        self.tracker.log(variant, {"results": self.tracker.table(table)})
