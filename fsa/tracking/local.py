"""Local outputs of a run: the per-evaluation table and the images, in the run folder."""

import csv
import time
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from fsa.guidance.decoder import Evaluation

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


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in about [-1, 1] -> (H, W, 3) uint8, as saving a PNG does (round, then clamp)."""
    pixels = ((image.detach().float().cpu() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()


def save_png(image: Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path


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
