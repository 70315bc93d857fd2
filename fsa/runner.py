"""Builds a run from its config, wires the listeners to the guided decoder, writes the outputs.

`run(cfg, output_dir)` is the whole job; `fsa.cli` only hands it Hydra's config and folder.
"""

import json
import logging
import os
import platform
import re
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import fsa
from fsa.config import DTYPES, resolved_container, validate
from fsa.data.targets import Target
from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.samplers import Sampler
from fsa.errors import FsaError
from fsa.evaluation import comparison_table, entropy, mean_pairwise_distance, proof_figures, variant_figures
from fsa.extractors.base import FeatureExtractor
from fsa.guidance.decoder import DecodeResult, DecodeState, Evaluation, guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance, squared_distance
from fsa.speed import SpeedOptions, apply_speed_options
from fsa.tracking.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fsa.tracking.local import EvaluationTable, GradientRecorder, save_png
from fsa.tracking.progress import Progress
from fsa.tracking.wandb_logger import WandbLogger

log = logging.getLogger("fsa")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def slug(text: str, limit: int = 48) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:limit] or "target"


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write then rename: a reader never sees a half-written file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def png_distance(extractor: FeatureExtractor, path: Path, target: torch.Tensor) -> float:
    """Re-score a saved PNG as an actual image (the paper's footnote 5: it differs slightly)."""
    device = target.device
    with torch.no_grad():
        x = extractor.preprocess_image(Image.open(path))[None].to(device)
        return float(squared_distance(extractor(x), target[None])[0])


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def environment() -> dict[str, Any]:
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(fsa.__file__).parent, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        revision = ""
    import diffusers

    return {
        "fsa": fsa.__version__,
        "git_revision": revision or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def build(node: DictConfig) -> Any:
    """`instantiate`, letting fsa's own errors through unwrapped (their messages are for the user)."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, FsaError):
            raise error.__cause__ from None
        raise


def _fan_out(listeners: list[Callable[[Evaluation], None]]) -> Callable[[Evaluation], None]:
    def callback(ev: Evaluation) -> None:
        for listener in listeners:
            listener(ev)

    return callback


BASELINES = {
    # The same sampler, recurrences, targets and seeds: only the guidance differs.
    "unguided": lambda g: replace(g, w_g=0.0),
    "printed_sign": lambda g: replace(g, direction="ascend"),  # eps - w_g g, as the paper prints Eq. 3
}


@dataclass(frozen=True)
class Sample:
    """One generated sample: which target, which of its samples, which seed, where its files go."""

    target: Target
    target_index: int
    index: int
    seed: int

    @property
    def key(self) -> str:
        return f"{self.target_index:03d}_{slug(self.target.name)}/sample{self.index}"


def batches(targets: list[Target], samples_per_target: int, targets_per_batch: int, seed: int) -> list[list[Sample]]:
    """Targets in groups of `targets_per_batch`, each with `samples_per_target` samples seeded seed + i."""
    groups = [list(enumerate(targets))[i : i + targets_per_batch] for i in range(0, len(targets), targets_per_batch)]
    return [[Sample(t, j, i, seed + i) for j, t in group for i in range(samples_per_target)] for group in groups]


def run(cfg: DictConfig, output_dir: Path, wandb_group: str | None = None, wandb_name: str | None = None) -> dict:
    """Run the guided decoder for every target of `cfg.dataset` (and each baseline); returns the summary.

    A failed run leaves `failure.json` (what went wrong) and no `summary.json`.
    """
    try:
        return _run(cfg, output_dir, wandb_group, wandb_name)
    except Interrupted:
        raise  # not a failure: the checkpoint is there to resume from
    except Exception as error:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(
            {"status": "failed", "error": type(error).__name__, "message": str(error)}, output_dir / "failure.json"
        )
        raise


def _run(cfg: DictConfig, output_dir: Path, wandb_group: str | None, wandb_name: str | None) -> dict:
    validate(cfg)  # every value and override key, before any model loads
    sampler = build(cfg.sampler)
    guidance = build(cfg.guidance)
    speed: SpeedOptions = build(cfg.speed)
    device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
    output_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_container(cfg)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    (output_dir / "failure.json").unlink(missing_ok=True)  # from an earlier attempt in this folder
    checkpoints = Checkpoints(output_dir / "checkpoint.pt", cfg.checkpoint_every, comparable(config))
    saved = checkpoints.saved()  # a bad checkpoint is refused before any model loads
    if saved:
        log.info("resuming from %s: run %d, batch %d", checkpoints.path, saved["variant"], saved["batch"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    extractor: FeatureExtractor = build(cfg.extractor).to(device)
    targets = build(cfg.dataset).load(extractor)  # bad targets fail before the big model loads
    oracle = build(cfg.oracle) if cfg.get("oracle") else None
    backbone = build(cfg.model).to(device)
    apply_speed_options(backbone, extractor, speed)
    steps = len(sampler.timesteps(backbone.schedule.num_train_timesteps))
    iterations = guidance.total_iterations(steps)
    plan = batches(targets, cfg.batch_size, cfg.targets_per_batch, cfg.seed)
    variants = {"guided": guidance} | {name: BASELINES[name](guidance) for name in cfg.baselines}
    log.info(
        "model %s, extractor %s (%d-d), %d target(s) x %d sample(s) in %d batch(es), %d timesteps, "
        "%d guided iterations each, runs: %s, on %s (%s%s)",
        backbone.name,
        extractor.name,
        extractor.feature_dim,
        len(targets),
        cfg.batch_size,
        len(plan),
        steps,
        iterations,
        ", ".join(variants),
        device,
        cfg.dtype,
        "".join(f", {option}" for option in speed.enabled()),
    )

    progress = Progress(
        iterations * len(plan) * len(variants), enabled=cfg.progress, done=saved["progress"] if saved else 0
    )
    wandb = None
    if cfg.logger.mode != "disabled":
        wandb = WandbLogger(
            cfg.logger.mode,
            output_dir,
            config,
            cfg.logger.project,
            cfg.logger.entity,
            cfg.logger.group or wandb_group,
            cfg.logger.name or wandb_name,
            list(cfg.logger.tags),
            run_id=saved["wandb_id"] if saved else None,
        )
    job = _Job(backbone, sampler, extractor, plan, device, dtype, progress, wandb, iterations, checkpoints)
    samples: dict[str, list[dict[str, Any]]] = dict(saved["records"]) if saved else {}
    start = time.perf_counter()
    completed = False
    try:
        with checkpoints:
            for number, (name, variant) in enumerate(variants.items()):
                if saved and number < saved["variant"]:
                    continue  # finished before the checkpoint: its records came with it
                folder = output_dir if name == "guided" else output_dir / "baselines" / name
                resume = saved if saved and number == saved["variant"] else None
                samples[name] = job.decode_variant(
                    number, name, variant, folder, samples, resume, cfg.record_gradients if name == "guided" else 0
                )
        completed = True
    finally:
        progress.close()
        if wandb and not completed:
            wandb.finish({"status": "interrupted"}, exit_code=1)

    reference = mean_pairwise_distance(torch.stack([t.feature for t in targets]))
    for records in samples.values():
        _judge(records, reference, oracle)
    figures = {name: variant_figures(records, reference) for name, records in samples.items()}
    summary = {
        "status": "complete",
        "model": backbone.name,
        "extractor": extractor.name,
        "feature_dim": extractor.feature_dim,
        "sampler": OmegaConf.to_container(cfg.sampler),
        "timesteps": steps,
        "guided_iterations_per_sample": iterations,
        "batch_size": cfg.batch_size,
        "targets": len(targets),
        "device": str(device),
        "dtype": cfg.dtype,
        "wall_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(device),
        "reference_distance": reference,  # mean pairwise squared distance among the targets
        **figures["guided"],
        "baselines": {name: figures[name] for name in cfg.baselines},
        "proof": proof_figures(figures),
        "samples": samples["guided"],
        "baseline_samples": {name: samples[name] for name in cfg.baselines},
        "environment": environment(),
    }
    write_json(summary, output_dir / "summary.json")  # only a completed run has one
    checkpoints.path.unlink(missing_ok=True)
    log.info("results over %d sample(s) per run:\n%s", len(samples["guided"]), comparison_table(figures))
    for key, value in summary["proof"].items():
        log.info("proof: %s = %s", key, value)
    if wandb:
        skip = ("samples", "baseline_samples", "environment", "sampler")
        wandb.finish({k: v for k, v in summary.items() if k not in skip})
    log.info("images: %s", output_dir / "images")
    log.info("table: %s; summary: %s", output_dir / "evaluations.csv", output_dir / "summary.json")
    if wandb:
        log.info("W&B run (%s): %s", wandb.mode, wandb.run.dir)
    return summary


class Interrupted(FsaError):
    """SIGTERM or SIGUSR1 arrived: a checkpoint was saved; rerunning the same command resumes."""

    exit_code = 3  # what a launcher or a Slurm script takes as "requeue me"


class Checkpoints:
    """When to checkpoint: every `every` guided iterations, and when SIGTERM, SIGUSR1 or SIGUSR2 arrives
    (Slurm preemption or time limit). The handler only notes the signal; the checkpoint is written
    at the next iteration boundary, so it is always a consistent state. Then a handler that was
    there before fsa's (submitit's SIGUSR2 handler, which requeues the job) gets the signal, and
    the run stops with `Interrupted`."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self, path: Path, every: int, config: dict[str, Any]) -> None:
        self.path, self.every, self.config = path, every, config
        self.count = 0
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "Checkpoints":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.warning("received %s: checkpointing after this iteration", signal.Signals(signum).name)
        self.signal = signum

    def saved(self) -> dict[str, Any] | None:
        """The last checkpoint in the run folder, if any, once checked to belong to this config."""
        if not self.path.exists():
            return None
        data = load_checkpoint(self.path)
        if data["config"] != self.config:
            raise CheckpointError(
                f"checkpoint '{self.path}' was written by a run with another config; rerun with the same "
                "overrides, or use a new run folder"
            )
        return data

    def after_iteration(self, state: Callable[[], dict[str, Any]]) -> None:
        self.count += 1
        if self.signal is None and not (self.every and self.count % self.every == 0):
            return
        save_checkpoint({"config": self.config, **state()}, self.path)
        if self.signal is None:
            return
        name = signal.Signals(self.signal).name
        previous = self._previous.get(self.signal)
        if callable(previous) and previous is not signal.default_int_handler:
            log.warning("checkpoint saved; passing %s on to the handler that was there before", name)
            previous(self.signal, None)  # submitit's: requeue the job (and exit)
        raise Interrupted(
            f"stopped by {name}; checkpoint saved in {self.path}: "
            "rerun the same command in the same folder (or pass resume=<folder>) to continue"
        )


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The part of the config a checkpoint must agree with to be resumed (not paths or logging)."""
    return {k: v for k, v in config.items() if k not in ("paths", "resume", "progress", "logger", "checkpoint_every")}


@dataclass
class _Job:
    """The models and listeners shared by every run variant (guided and baselines) of one job."""

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

    def decode_variant(
        self,
        number: int,
        name: str,
        guidance: FeatureGuidance,
        folder: Path,
        finished: dict[str, list[dict[str, Any]]],
        resume: dict[str, Any] | None,
        record_gradients: int,
    ) -> list[dict[str, Any]]:
        """Every batch of the plan under one guidance: outputs into `folder`, W&B metrics under
        `<name>/` (none for the guided run), continuing from `resume` (a checkpoint) if given."""
        prefix = "" if name == "guided" else f"{name}/"
        table = EvaluationTable(folder / "evaluations.csv", resume_at=resume["table"] if resume else None)
        recorder = GradientRecorder(record_gradients) if record_gradients and guidance.enabled else None
        if recorder and resume and resume.get("gradients"):
            vars(recorder).update(resume["gradients"])
        listeners: list[Callable[[Evaluation], None]] = [table, self.progress]
        listeners += [x for x in (self.wandb, recorder) if x]
        records: list[dict[str, Any]] = list(resume["records"].get(name, [])) if resume else []
        first = resume["batch"] if resume else 0
        try:
            for batch_number, batch in enumerate(self.plan):
                if batch_number < first:
                    continue
                table.start_batch([(s.target.name, s.index, s.seed) for s in batch])
                if recorder and not (resume and batch_number == first):
                    recorder.start_batch([s.key for s in batch])
                if self.wandb:
                    self.wandb.start_batch(
                        [prefix + s.key for s in batch], (number * len(self.plan) + batch_number) * self.iterations
                    )
                for s in batch:
                    if s.index == 0 and s.target.image is not None:
                        save_png(s.target.image * 2 - 1, folder / "images" / Path(s.key).parent / "target.png")

                def state(snapshot: Callable[[], DecodeState], batch_number: int = batch_number) -> dict[str, Any]:
                    return {
                        "variant": number,
                        "batch": batch_number,
                        "decode": vars(snapshot()),
                        "records": {**finished, name: records},
                        "table": table.offset(),
                        "gradients": vars(recorder) if recorder else None,
                        "progress": self.progress.done,
                        "wandb_id": self.wandb.run.id if self.wandb else None,
                    }

                started = time.perf_counter()
                decode_state = DecodeState(**resume["decode"]) if resume and batch_number == first else None
                result = guided_decode(
                    self.backbone,
                    self.sampler,
                    guidance,
                    self.extractor,
                    torch.stack([s.target.feature for s in batch]).to(self.device),
                    [torch.Generator().manual_seed(s.seed) for s in batch],
                    dtype=self.dtype,
                    callback=_fan_out(listeners),
                    resume=decode_state,
                    on_iteration=lambda snapshot, state=state: self.checkpoints.after_iteration(
                        lambda: state(snapshot)
                    ),
                )
                batch_records = _save_results(
                    result, batch, folder / "images", self.extractor, self.device, time.perf_counter() - started
                )
                records.extend(batch_records)
                if self.wandb:
                    self.wandb.log_images(_image_captions(batch_records, prefix))
        finally:
            table.close()
        if recorder:
            recorder.save(folder / "gradients.pt", guidance.clip_c, guidance.clip_mode)
        return records


def _save_results(
    result: DecodeResult,
    batch: list[Sample],
    folder: Path,
    extractor: FeatureExtractor,
    device: torch.device,
    wall_time_s: float,
) -> list[dict[str, Any]]:
    records = []
    for i, s in enumerate(batch):
        best_png = save_png(result.best_image[i], folder / f"{s.key}_best.png")
        final_png = save_png(result.final_image[i], folder / f"{s.key}_final.png")
        target = s.target.feature.to(device)
        records.append(
            {
                "target": s.target.name,
                "target_label": s.target.label,
                "sample": s.index,
                "seed": s.seed,
                "best_distance": float(result.best_distance[i]),
                "best_t": int(result.best_t[i]),
                "best_k": int(result.best_k[i]),
                "best_phase": result.best_phase[i],
                "final_distance": float(result.final_distance[i]),
                "final_cosine": float(result.final_cosine[i]),
                "best_png_distance": png_distance(extractor, best_png, target),
                "final_png_distance": png_distance(extractor, final_png, target),
                "guided_iterations": result.guided_iterations,
                "network_evaluations": result.unet_evaluations,
                "feature_evaluations": result.feature_evaluations,
                "wall_time_s": wall_time_s,  # of the whole batch this sample ran in
                "best_image": str(best_png),
                "final_image": str(final_png),
            }
        )
    return records


def _judge(records: list[dict[str, Any]], reference: float | None, oracle: Any) -> None:
    """Add the calibrated distance and, with an oracle, its verdict on each best and final image."""
    for r in records:
        r["calibrated_best_distance"] = r["best_distance"] / reference if reference else None
    if oracle is None or not records:
        return
    for kind in ("best", "final"):
        probabilities = oracle.judge_files([r[f"{kind}_image"] for r in records])
        for r, p, h in zip(records, probabilities, entropy(probabilities), strict=True):
            r[f"{kind}_oracle_class"], r[f"{kind}_oracle_confidence"] = int(p.argmax()), float(p.max())
            r[f"{kind}_oracle_entropy"] = float(h)


def _image_captions(records: list[dict[str, Any]], prefix: str) -> dict[str, tuple[Path, str]]:
    images = {}
    for r in records:
        key = prefix + f"{Path(r['best_image']).parent.name}/sample{r['sample']}"
        images[f"{key}/best_image"] = (
            Path(r["best_image"]),
            f"best d={r['best_distance']:.5g} (t={r['best_t']}, "
            f"k={r['best_k']}, {r['best_phase']}); PNG d={r['best_png_distance']:.5g}",
        )
        images[f"{key}/final_image"] = (
            Path(r["final_image"]),
            f"final d={r['final_distance']:.5g}; PNG d={r['final_png_distance']:.5g}",
        )
    return images
