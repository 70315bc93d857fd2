"""Phase 3 of the guide task: every batch of the plan decoded under one variant's guidance, with its
listeners, checkpoints and saved images; a stopped job continues from `GuideState` to the same end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fsa.data.targets import Target, target_latents
from fsa.extractors.base import FeatureExtractor, features_of
from fsa.guidance.decoder import DecodeResult, DecodeState, Evaluation, Targets
from fsa.guidance.feature_guidance import squared_distance
from fsa.job import Job
from fsa.pictures import read_image, save_png
from fsa.tasks.guide.listeners import EvaluationSeries, EvaluationTable, GradientRecorder
from fsa.tracking.progress import Progress
from fsa.tracking.run_folder import SampleResult, target_folder_name

if TYPE_CHECKING:
    from fsa.tasks.guide.run import Models


@dataclass
class GuideState:
    """Where a guide job stands between two guided iterations: the variant and batch under way, the
    decoder's state in it, the samples finished so far (per variant), the evaluation table's length,
    the gradient record (Fig. 2) and the progress count."""

    variant: int
    batch: int
    decode: DecodeState
    records: dict[str, list[SampleResult]]
    table: int
    gradients: dict[str, Any] | None
    progress: int


@dataclass(frozen=True)
class Sample:
    """One generated sample: which target, which of its samples, which seed."""

    target: Target
    target_index: int
    index: int
    seed: int

    @property
    def key(self) -> str:
        """Its name in W&B: `<nnn>_<target>/sample<i>`, as its image folder."""
        return f"{target_folder_name(self.target_index, self.target.name)}/sample{self.index}"


def batches(targets: list[Target], samples_per_target: int, targets_per_batch: int, seed: int) -> list[list[Sample]]:
    """Targets in groups of `targets_per_batch`, each with `samples_per_target` samples seeded seed + i."""
    groups = [list(enumerate(targets))[i : i + targets_per_batch] for i in range(0, len(targets), targets_per_batch)]
    return [[Sample(t, j, i, seed + i) for j, t in group for i in range(samples_per_target)] for group in groups]


def fan_out(listeners: list[Callable[[Evaluation], None]]) -> Callable[[Evaluation], None]:
    def callback(ev: Evaluation) -> None:
        for listener in listeners:
            listener(ev)

    return callback


class Decoding:
    """The models and listeners shared by every variant (guided and baselines) of one job."""

    def __init__(
        self, job: Job, models: Models, plan: list[list[Sample]], progress: Progress, series: EvaluationSeries | None
    ) -> None:
        self.job, self.models, self.plan, self.progress, self.series = job, models, plan, progress, series
        self.folder = job.folder

    def variant(
        self,
        number: int,
        variant: str,
        guidance: Any,
        finished: dict[str, list[SampleResult]],
        resume: GuideState | None,
        record_gradients: int,
    ) -> list[SampleResult]:
        """Every batch of the plan under one guidance, continuing from `resume` (a checkpoint) if given."""
        table = EvaluationTable(self.folder.evaluations_file(variant), resume_at=resume.table if resume else None)
        recorder = GradientRecorder(record_gradients) if record_gradients and guidance.enabled else None
        if recorder and resume and resume.gradients:
            vars(recorder).update(resume.gradients)
        self.progress.start(variant)
        listeners = [table, self.progress, *(x for x in (self.series, recorder) if x)]
        records = list(resume.records.get(variant, [])) if resume else []
        first = resume.batch if resume else 0

        def state(batch: int, snapshot: Callable[[], DecodeState]) -> GuideState:
            everything = {**finished, variant: records}
            gradients = vars(recorder) if recorder else None
            return GuideState(number, batch, snapshot(), everything, table.offset(), gradients, self.progress.done)

        try:
            for batch_number, batch in enumerate(self.plan[first:], start=first):
                resuming = resume is not None and batch_number == first
                table.start_batch([(s.target.name, s.index, s.seed) for s in batch])
                if recorder and not resuming:
                    recorder.start_batch([s.key for s in batch])
                if self.series:
                    self.series.start_batch(variant, [s.key for s in batch])
                self._save_targets(variant, batch)
                on_iteration = self._checkpointing(lambda snapshot, b=batch_number: state(b, snapshot))
                started = time.perf_counter()
                result = self._batch(
                    guidance, batch, fan_out(listeners), resume.decode if resuming else None, on_iteration
                )
                saved = self._save(variant, result, batch, time.perf_counter() - started)
                records.extend(saved)
                if self.series:
                    self.series.log_images(variant, saved, self.folder)
        finally:
            table.close()
        if recorder:
            recorder.save(self.folder.gradients_file, guidance.clip_c, guidance.clip_mode)
        return records

    def _checkpointing(self, state: Callable[[Callable[[], DecodeState]], Any]) -> Callable:
        """The decoder's `on_iteration`: count the iteration, checkpointing the job's state when due."""
        return lambda snapshot: self.job.checkpoints.after_iteration(lambda: state(snapshot))

    def _batch(
        self, guidance: Any, batch: list[Sample], callback: Callable, resume: DecodeState | None, on_iteration: Callable
    ) -> DecodeResult:
        """One batch through the guidance's decoder, each sample from its own seed."""
        models, device = self.models, self.job.device
        feature = torch.stack([s.target.feature for s in batch]).to(device)
        latent = None
        if guidance.needs_target_latent:  # Kadkhodaie et al.: the target images in the model's space
            latent = target_latents([s.target for s in batch], models.extractor.backbone, "guidance=self_guided")
        return guidance.decode(
            models.backbone,
            models.sampler,
            models.extractor,
            Targets(feature, latent),
            [torch.Generator().manual_seed(s.seed) for s in batch],
            dtype=models.dtype,
            callback=callback,
            resume=resume,
            on_iteration=on_iteration,
        )

    def _save_targets(self, variant: str, batch: list[Sample]) -> None:
        for s in batch:
            if s.index == 0 and s.target.image is not None:
                save_png(s.target.image * 2 - 1, self.folder.target_image(variant, s.target_index, s.target.name))

    def _save(self, variant: str, result: DecodeResult, batch: list[Sample], wall_time_s: float) -> list[SampleResult]:
        """The batch's best and final images as PNGs, and each sample's result."""
        records = []
        for i, s in enumerate(batch):
            files = {
                kind: save_png(image, self.folder.sample_image(variant, s.target_index, s.target.name, s.index, kind))
                for kind, image in (("best", result.best_image[i]), ("final", result.final_image[i]))
            }
            target = s.target.feature.to(self.job.device)
            records.append(
                SampleResult(
                    target=s.target.name,
                    target_index=s.target_index,
                    target_label=s.target.label,
                    sample=s.index,
                    seed=s.seed,
                    best_distance=float(result.best_distance[i]),
                    best_t=int(result.best_t[i]),
                    best_k=int(result.best_k[i]),
                    best_phase=result.best_phase[i],
                    final_distance=float(result.final_distance[i]),
                    final_cosine=float(result.final_cosine[i]),
                    best_png_distance=png_distance(self.models.extractor, files["best"], target),
                    final_png_distance=png_distance(self.models.extractor, files["final"], target),
                    guided_iterations=result.guided_iterations,
                    network_evaluations=result.unet_evaluations,
                    feature_evaluations=result.feature_evaluations,
                    wall_time_s=wall_time_s,
                    best_image=self.folder.relative(files["best"]),
                    final_image=self.folder.relative(files["final"]),
                )
            )
        return records


def png_distance(extractor: FeatureExtractor, path: Path, target: torch.Tensor) -> float:
    """Re-score a saved PNG as an actual image (the paper's footnote 5: it differs slightly)."""
    return float(squared_distance(features_of(extractor, [read_image(path)]), target[None].cpu())[0])
