"""One fsa run, from its config to its outputs, in numbered phases.

`run(cfg, output_dir)` is the whole job; `fsa.cli` hands it Hydra's config and folder. The folder's
files and states belong to `fsa.tracking.run_folder`, checkpoints to `fsa.tracking.checkpoint`, the
algorithm to `fsa.guidance.decoder.guided_decode`; this module only puts them in order.
"""

import importlib
import logging
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import fsa
from fsa.attributes.measures import load_measures
from fsa.attributes.options import AttributesOptions
from fsa.config import attributes_options, resolved_container, validate
from fsa.data.targets import Target, resize_images, target_latents
from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.samplers import Sampler
from fsa.errors import FsaError, Interrupted
from fsa.evaluation import (
    attribute_distances,
    comparison_table,
    entropy,
    mean_pairwise_distance,
    proof_figures,
    retention_figures,
    retention_table,
    variant_figures,
)
from fsa.extractors.base import FeatureExtractor
from fsa.guidance.decoder import DecodeResult, DecodeState, Evaluation, guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance, squared_distance
from fsa.guidance.self_guided import SelfGuidance, self_guided_decode
from fsa.speed import apply_speed_options, torch_dtype
from fsa.tracking.checkpoint import Checkpoints
from fsa.tracking.local import EvaluationTable, GradientRecorder, save_png
from fsa.tracking.overview import write_overview
from fsa.tracking.progress import Progress
from fsa.tracking.run_folder import GUIDED, RunFolder, SampleResult, comparable, target_folder_name
from fsa.tracking.wandb_logger import WandbLogger

__all__ = ["Interrupted", "build", "run"]

log = logging.getLogger("fsa")

BASELINES = {
    # The same sampler, recurrences, targets and seeds: only the guidance differs.
    "unguided": lambda g: g.unguided(),
    "printed_sign": lambda g: replace(g, direction="ascend"),  # eps - w_g g, as the paper prints Eq. 3
}
# The tasks other than the paper's guidance: each a function (cfg, folder, build, device, config,
# W&B group, W&B name) -> summary, imported when run.
TASK_JOBS = {
    "embed": "fsa.embed_job:embed",  # from images back to the DDIM generator's seeds (Asperti et al.)
    "represent": "fsa.represent_job:represent_task",  # what the UNet's own block representations keep
}
LIBRARIES = ("torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "timm", "numpy", "hydra-core")


def run(
    cfg: DictConfig,
    output_dir: Path,
    overrides: Sequence[str] = (),
    wandb_group: str | None = None,
    wandb_name: str | None = None,
) -> dict[str, Any]:
    """Run the guided decoder for every target of `cfg.dataset` (and each baseline); returns the summary.

    The run holds its folder's lock throughout. A refused run (folder in use, complete, or made with
    another config) changes nothing; a failed one leaves `failure.json` and no `summary.json`.
    """
    folder = RunFolder(Path(cfg.resume) if cfg.resume else output_dir)
    with folder.lock():
        try:
            return _run(cfg, folder, list(overrides), wandb_group, wandb_name)
        except (Interrupted, KeyboardInterrupt) as stop:
            folder.interrupted(type(stop).__name__)  # the checkpoint, if any, is there to resume from
            raise
        except Exception as error:
            folder.fail(error)
            raise


def _run(cfg: DictConfig, folder: RunFolder, overrides: list[str], group: str | None, name: str | None) -> dict:
    # 1. The folder takes the run (new), continues it (same config) or refuses it; nothing written before.
    config = resolved_container(cfg)
    folder.admit(config, overrides, fresh=cfg.fresh)
    with folder.log_file():
        # 2. Every value and the checkpoint checked, before any model loads.
        validate(cfg)
        attributes = attributes_options(cfg) if cfg.get("attributes") is not None else None
        if cfg.task.name in TASK_JOBS:  # a companion analysis: its own job, in the same folder
            module, function = TASK_JOBS[cfg.task.name].split(":")
            job = getattr(importlib.import_module(module), function)
            summary = job(cfg, folder, build, resolve_device(cfg.device), config, group, name)
            folder.complete(summary)
            return summary
        measures = load_measures(attributes.measures) if attributes else {}
        sampler: Sampler = build(cfg.sampler)
        guidance: FeatureGuidance | SelfGuidance = build(cfg.guidance)
        speed = build(cfg.speed)
        device, dtype = resolve_device(cfg.device), torch_dtype(cfg.dtype)
        checkpoints = Checkpoints(folder.checkpoint_file, cfg.checkpoint_every, comparable(config))
        saved = checkpoints.saved()
        if saved:
            log.info("resuming from %s: run %d, batch %d", checkpoints.path, saved["variant"], saved["batch"])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        # 3. Models and targets; the targets first, so that a bad one fails before the big model loads.
        extractor: FeatureExtractor = build(cfg.extractor).to(device)
        targets: list[Target] = build(cfg.dataset).load(extractor)[: cfg.max_targets]
        oracle = build(cfg.oracle) if cfg.get("oracle") else None
        backbone: DiffusionBackbone = build(cfg.model).to(device)
        apply_speed_options(backbone, extractor, speed)

        # 4. The plan: batches of samples, decoded once per variant (guided, then each baseline).
        steps = len(sampler.timesteps(backbone.schedule.num_train_timesteps))
        iterations = guidance.total_iterations(steps)
        samples_per_target = min(cfg.batch_size, cfg.max_samples or cfg.batch_size)
        plan = batches(targets, samples_per_target, cfg.targets_per_batch, cfg.seed)
        baselines = list(cfg.baselines)
        if isinstance(guidance, SelfGuidance) and "printed_sign" in baselines:
            log.warning("baseline printed_sign flips the paper's Eq. 3, which guidance=self_guided has not: skipped")
            baselines.remove("printed_sign")
        variants = {GUIDED: guidance} | {b: BASELINES[b](guidance) for b in baselines}
        log.info(
            "model %s, extractor %s (%d-d), %d target(s) x %d sample(s) in %d batch(es), %d timesteps, "
            "%d guided iterations each, runs: %s, on %s (%s%s)",
            backbone.name,
            extractor.name,
            extractor.feature_dim,
            len(targets),
            samples_per_target,
            len(plan),
            steps,
            iterations,
            ", ".join(variants),
            device,
            cfg.dtype,
            "".join(f", {option}" for option in speed.enabled()),
        )

        # 5. Listeners: the progress bar and W&B (which sends what each checkpoint covers).
        done = saved["progress"] if saved else 0
        progress = Progress(iterations * len(plan) * len(variants), enabled=cfg.progress, done=done)
        wandb = None
        if cfg.logger is not None and cfg.logger.mode != "disabled":
            run_ids = saved.get("wandb_ids") if saved else None
            wandb = WandbLogger(cfg.logger, folder.root, config, group, name, list(variants), run_ids)
            checkpoints.on_save.append(wandb.send)

        # 6. Decode every variant, batch by batch, resuming where the checkpoint left off.
        job = _Job(backbone, sampler, extractor, plan, device, dtype, progress, wandb, iterations, checkpoints, folder)
        samples: dict[str, list[SampleResult]] = {}
        if saved:
            samples = {v: [SampleResult.from_dict(r) for r in rs] for v, rs in saved["records"].items()}
        completed = False
        start = time.perf_counter()
        try:
            with checkpoints:
                for number, (variant, variant_guidance) in enumerate(variants.items()):
                    if saved and number < saved["variant"]:
                        continue  # finished before the checkpoint: its records came with it
                    resume = saved if saved and number == saved["variant"] else None
                    gradients = cfg.record_gradients if variant == GUIDED else 0
                    samples[variant] = job.decode_variant(number, variant, variant_guidance, samples, resume, gradients)
            completed = True
        finally:
            progress.close()
            if wandb and not completed:
                wandb.finish({v: {"status": "interrupted"} for v in variants}, exit_code=1)

        # 7. Judge and summarise: calibrated distances, the oracle's verdicts, the proof figures.
        reference = mean_pairwise_distance(torch.stack([t.feature for t in targets]))
        for records in samples.values():
            _judge(records, reference, oracle, folder)
        figures = {v: variant_figures([r.to_dict() for r in records], reference) for v, records in samples.items()}
        retained = None
        if attributes is not None and "unguided" in samples:  # which attributes the feature space keeps
            retained = _retention(attributes, measures, samples, targets, folder)
        summary = {
            "status": "complete",
            "model": backbone.name,
            "extractor": extractor.name,
            "feature_dim": extractor.feature_dim,
            "sampler": OmegaConf.to_container(cfg.sampler),
            "timesteps": steps,
            "guided_iterations_per_sample": iterations,
            "batch_size": samples_per_target,
            "targets": len(targets),
            "device": str(device),
            "dtype": cfg.dtype,
            "wall_time_s": time.perf_counter() - start,
            "peak_memory_mb": peak_memory_mb(device),
            "reference_distance": reference,  # mean pairwise squared distance among the targets
            **figures[GUIDED],
            "baselines": {b: figures[b] for b in baselines},
            "proof": proof_figures(figures),
            "retention": retained,
            "samples": [r.to_dict() for r in samples[GUIDED]],
            "baseline_samples": {b: [r.to_dict() for r in samples[b]] for b in baselines},
            "environment": environment(),
        }
        overview = write_overview(folder, samples, folder.overview_file)
        folder.complete(summary)

        # 8. Tell the user what came out and where.
        log.info("results over %d sample(s) per run:\n%s", len(samples[GUIDED]), comparison_table(figures))
        for key, value in summary["proof"].items():
            log.info("proof: %s = %s", key, value)
        if retained:
            log.info("retention per attribute, final images (1: kept, 0: as unguided):\n%s", retention_table(retained))
        if wandb:
            for variant, records in samples.items():
                wandb.results_table(variant, records, folder)
            wandb.finish(wandb_summaries(summary, figures))
            log.info("W&B runs (%s): %s", wandb.mode, ", ".join(wandb.directories))
        log.info("images: %s", folder.variant_dir(GUIDED) / "images")
        log.info("table: %s; summary: %s", folder.evaluations_file(), folder.root / "summary.json")
        log.info("overview: %s (tables and figures: fsa-report %s)", overview, folder.root)
        return summary


def wandb_summaries(summary: dict[str, Any], figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each variant's W&B summary: the guided run gets summary.json less its long lists (the proof
    included); a baseline's run gets the run's facts and its own figures."""
    guided = {k: v for k, v in summary.items() if k not in ("samples", "baseline_samples", "environment", "sampler")}
    facts = {k: v for k, v in guided.items() if k not in (*figures[GUIDED], "baselines", "proof")}
    return {variant: guided if variant == GUIDED else {**facts, **figures[variant]} for variant in figures}


def build(node: DictConfig) -> Any:
    """`instantiate`, letting fsa's own errors through unwrapped (their messages are for the user)."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, FsaError):
            raise error.__cause__ from None
        raise


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def environment() -> dict[str, Any]:
    """What a run's figures depend on beyond its config: versions, device, CPU threads."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "fsa": fsa.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "torch_threads": torch.get_num_threads(),  # CPU results differ in the last digits with it
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


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


def _fan_out(listeners: list[Callable[[Evaluation], None]]) -> Callable[[Evaluation], None]:
    def callback(ev: Evaluation) -> None:
        for listener in listeners:
            listener(ev)

    return callback


@dataclass
class _Job:
    """The models and listeners shared by every run variant (guided and baselines) of one run."""

    backbone: DiffusionBackbone
    sampler: Sampler
    extractor: FeatureExtractor
    plan: list[list[Sample]]
    device: torch.device
    dtype: torch.dtype
    progress: Progress
    wandb: WandbLogger | None
    iterations: int
    checkpoints: Checkpoints
    folder: RunFolder

    def decode_variant(
        self,
        number: int,
        variant: str,
        guidance: FeatureGuidance | SelfGuidance,
        finished: dict[str, list[SampleResult]],
        resume: dict[str, Any] | None,
        record_gradients: int,
    ) -> list[SampleResult]:
        """Every batch of the plan under one guidance, continuing from `resume` (a checkpoint) if given."""
        table = EvaluationTable(self.folder.evaluations_file(variant), resume_at=resume["table"] if resume else None)
        paper = isinstance(guidance, FeatureGuidance)  # gradients of Eq. 3 (self-guided matching has none)
        recorder = GradientRecorder(record_gradients) if record_gradients and paper and guidance.enabled else None
        if recorder and resume and resume.get("gradients"):
            vars(recorder).update(resume["gradients"])
        listeners = [table, self.progress, *(x for x in (self.wandb, recorder) if x)]
        records = [SampleResult.from_dict(r) for r in resume["records"].get(variant, [])] if resume else []
        first = resume["batch"] if resume else 0
        try:
            for batch_number, batch in enumerate(self.plan):
                if batch_number < first:
                    continue
                resuming = resume is not None and batch_number == first
                table.start_batch([(s.target.name, s.index, s.seed) for s in batch])
                if recorder and not resuming:
                    recorder.start_batch([s.key for s in batch])
                if self.wandb:
                    self.wandb.start_batch(variant, [s.key for s in batch])
                for s in batch:
                    if s.index == 0 and s.target.image is not None:
                        target_png = self.folder.target_image(variant, s.target_index, s.target.name)
                        save_png(s.target.image * 2 - 1, target_png)

                def state(snapshot: Callable[[], DecodeState], batch_number: int = batch_number) -> dict[str, Any]:
                    everything = {**finished, variant: records}
                    return {
                        "variant": number,
                        "batch": batch_number,
                        "decode": vars(snapshot()),
                        "records": {v: [r.to_dict() for r in rs] for v, rs in everything.items()},
                        "table": table.offset(),
                        "gradients": vars(recorder) if recorder else None,
                        "progress": self.progress.done,
                        "wandb_ids": self.wandb.run_ids() if self.wandb else None,
                    }

                started = time.perf_counter()
                common = {
                    "target": torch.stack([s.target.feature for s in batch]).to(self.device),
                    "generators": [torch.Generator().manual_seed(s.seed) for s in batch],
                    "dtype": self.dtype,
                    "callback": _fan_out(listeners),
                    "resume": DecodeState(**resume["decode"]) if resuming and resume else None,
                    "on_iteration": lambda snapshot, state=state: self.checkpoints.after_iteration(
                        lambda: state(snapshot)
                    ),
                }
                if isinstance(guidance, SelfGuidance):  # Kadkhodaie et al.: matches the targets' own images
                    latent = target_latents([s.target for s in batch], self.extractor.backbone, "guidance=self_guided")
                    result = self_guided_decode(
                        self.backbone, self.sampler, guidance, self.extractor, target_latent=latent, **common
                    )
                else:
                    result = guided_decode(self.backbone, self.sampler, guidance, self.extractor, **common)
                saved = self._save(variant, result, batch, time.perf_counter() - started)
                records.extend(saved)
                if self.wandb:
                    self.wandb.log_images(variant, saved, self.folder)
        finally:
            table.close()
        if recorder:
            recorder.save(self.folder.gradients_file, guidance.clip_c, guidance.clip_mode)
        return records

    def _save(self, variant: str, result: DecodeResult, batch: list[Sample], wall_time_s: float) -> list[SampleResult]:
        """The batch's best and final images as PNGs, and each sample's result."""
        records = []
        for i, s in enumerate(batch):
            files = {}
            for kind, image in (("best", result.best_image[i]), ("final", result.final_image[i])):
                files[kind] = save_png(
                    image, self.folder.sample_image(variant, s.target_index, s.target.name, s.index, kind)
                )
            target = s.target.feature.to(self.device)
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
                    best_png_distance=png_distance(self.extractor, files["best"], target),
                    final_png_distance=png_distance(self.extractor, files["final"], target),
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
    with torch.no_grad(), Image.open(path) as image:
        x = extractor.preprocess_image(image)[None].to(target.device)
        return float(squared_distance(extractor(x), target[None])[0])


def _retention(
    options: AttributesOptions,
    measures: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    samples: dict[str, list[SampleResult]],
    targets: list[Target],
    folder: RunFolder,
) -> dict[str, Any] | None:
    """Each attribute's retention (guided against unguided, the same targets and seeds), over the
    targets that have an image; each sample's distances go to attributes.csv."""
    images = {
        i: resize_images(t.image[None], options.image_size)[0] for i, t in enumerate(targets) if t.image is not None
    }
    unguided = {(r.target_index, r.sample): r for r in samples["unguided"]}
    pairs = [(r, unguided[(r.target_index, r.sample)]) for r in samples[GUIDED] if r.target_index in images]
    if not pairs:
        log.info("retention not measured: no target has an image")
        return None
    found = {
        variant: attribute_distances([pair[side] for pair in pairs], images, measures, options, folder)
        for side, variant in enumerate((GUIDED, "unguided"))
    }
    rows = [
        {
            "variant": variant,
            "kind": kind,
            "target": r.target,
            "sample": r.sample,
            "seed": r.seed,
            "attribute": name,
            "distance": float(distance[i]),
        }
        for side, variant in enumerate((GUIDED, "unguided"))
        for kind, by_name in found[variant].items()
        for name, distance in by_name.items()
        for i, r in enumerate(pair[side] for pair in pairs)
    ]
    pd.DataFrame(rows).to_csv(folder.attributes_file, index=False)
    return retention_figures(found[GUIDED], found["unguided"], options.resamples)


def _judge(records: list[SampleResult], reference: float | None, oracle: Any, folder: RunFolder) -> None:
    """Add the calibrated distance and, with an oracle, its verdict on each best and final image."""
    for r in records:
        r.calibrated_best_distance = r.best_distance / reference if reference else None
    if oracle is None or not records:
        return
    for kind in ("best", "final"):
        probabilities = oracle.judge_files([folder.path(getattr(r, f"{kind}_image")) for r in records])
        for r, p, h in zip(records, probabilities, entropy(probabilities), strict=True):
            setattr(r, f"{kind}_oracle_class", int(p.argmax()))
            setattr(r, f"{kind}_oracle_confidence", float(p.max()))
            setattr(r, f"{kind}_oracle_entropy", float(h))
