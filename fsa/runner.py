"""Builds a run from its config, wires the listeners to the guided decoder, writes the outputs.

`run(cfg, output_dir)` is the whole job; `fsa.cli` only hands it Hydra's config and folder.
"""

import json
import logging
import os
import platform
import re
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

import fsa
from fsa.config import resolved_container, validate
from fsa.errors import FsaError
from fsa.extractors.base import FeatureExtractor
from fsa.guidance.decoder import DecodeResult, Evaluation, guided_decode
from fsa.guidance.feature_guidance import squared_distance
from fsa.tracking.local import EvaluationTable, save_png
from fsa.tracking.progress import Progress
from fsa.tracking.wandb_logger import WandbLogger

log = logging.getLogger("fsa")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def run(cfg: DictConfig, output_dir: Path, wandb_group: str | None = None, wandb_name: str | None = None) -> dict:
    """Run the guided decoder for every target of `cfg.dataset`; returns the summary it writes."""
    validate(cfg)  # every value and override key, before any model loads
    sampler = build(cfg.sampler)
    guidance = build(cfg.guidance)
    device, dtype = resolve_device(cfg.device), DTYPES[cfg.dtype]
    output_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_container(cfg)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    extractor: FeatureExtractor = build(cfg.extractor).to(device)
    targets = build(cfg.dataset).load(extractor)  # bad targets fail before the big model loads
    backbone = build(cfg.model).to(device)
    steps = len(sampler.timesteps(backbone.schedule.num_train_timesteps))
    iterations = guidance.total_iterations(steps)
    log.info(
        "model %s, extractor %s (%d-d), %d target(s) x %d sample(s), %d timesteps, %d guided iterations each, "
        "on %s (%s)",
        backbone.name,
        extractor.name,
        extractor.feature_dim,
        len(targets),
        cfg.batch_size,
        steps,
        iterations,
        device,
        cfg.dtype,
    )

    table = EvaluationTable(output_dir / "evaluations.csv")
    progress = Progress(iterations * len(targets), enabled=cfg.progress)
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
        )
    listeners: list[Callable[[Evaluation], None]] = [table, progress] + ([wandb] if wandb else [])
    seeds = [cfg.seed + i for i in range(cfg.batch_size)]
    samples: list[dict[str, Any]] = []
    start = time.perf_counter()
    completed = False
    try:
        for index, target in enumerate(targets):
            folder = output_dir / "images" / f"{index:03d}_{slug(target.name)}"
            table.start_target(target.name, seeds)
            if wandb:
                wandb.start_target(folder.name, len(seeds), index * iterations)
            if target.image is not None:
                save_png(target.image * 2 - 1, folder / "target.png")
            target_start = time.perf_counter()
            result = guided_decode(
                backbone,
                sampler,
                guidance,
                extractor,
                target.feature[None].to(device),
                [torch.Generator().manual_seed(seed) for seed in seeds],
                dtype=dtype,
                callback=_fan_out(listeners),
            )
            wall = time.perf_counter() - target_start
            records = _save_results(result, folder, target.name, seeds, extractor, target.feature.to(device), wall)
            samples += records
            if wandb:
                wandb.log_images(_image_captions(records))
        completed = True
    finally:
        table.close()
        progress.close()
        if wandb and not completed:
            wandb.finish({"status": "failed"}, exit_code=1)

    summary = {
        "status": "complete",
        "model": backbone.name,
        "extractor": extractor.name,
        "feature_dim": extractor.feature_dim,
        "sampler": OmegaConf.to_container(cfg.sampler),
        "timesteps": steps,
        "guided_iterations_per_sample": iterations,
        "batch_size": cfg.batch_size,
        "device": str(device),
        "dtype": cfg.dtype,
        "wall_time_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(device),
        "mean_best_distance": sum(s["best_distance"] for s in samples) / len(samples),
        "mean_final_distance": sum(s["final_distance"] for s in samples) / len(samples),
        "samples": samples,
        "environment": environment(),
    }
    write_json(summary, output_dir / "summary.json")  # only a completed run has one
    if wandb:
        wandb.finish({k: v for k, v in summary.items() if k not in ("samples", "environment", "sampler")})
    log.info(
        "mean best distance %.6g, mean final distance %.6g over %d sample(s)",
        summary["mean_best_distance"],
        summary["mean_final_distance"],
        len(samples),
    )
    log.info("images: %s", output_dir / "images")
    log.info("table: %s; summary: %s", output_dir / "evaluations.csv", output_dir / "summary.json")
    if wandb:
        log.info("W&B run (%s): %s", wandb.mode, wandb.run.dir)
    return summary


def _save_results(
    result: DecodeResult,
    folder: Path,
    target_name: str,
    seeds: list[int],
    extractor: FeatureExtractor,
    target: torch.Tensor,
    wall_time_s: float,
) -> list[dict[str, Any]]:
    records = []
    for i, seed in enumerate(seeds):
        best_png = save_png(result.best_image[i], folder / f"sample{i}_best.png")
        final_png = save_png(result.final_image[i], folder / f"sample{i}_final.png")
        records.append(
            {
                "target": target_name,
                "sample": i,
                "seed": seed,
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
                "wall_time_s": wall_time_s,
                "best_image": str(best_png),
                "final_image": str(final_png),
            }
        )
    return records


def _image_captions(records: list[dict[str, Any]]) -> dict[str, tuple[Path, str]]:
    images = {}
    for r in records:
        key = f"{Path(r['best_image']).parent.name}/sample{r['sample']}"
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
