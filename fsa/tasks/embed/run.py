"""The embed task's work: from images back to the seeds of the deterministic DDIM generator.

It writes into the run folder (`embedding/`: tables and figures; `overview.png`). Every analysis is
computed from the seeds it finds, nothing is written in advance:

1. reconstruction MSE per method, on dataset images and on images the generator made itself
   (the journal version's Tables 1 and 2), with seeds per second;
2. the cloud: gradient descent from `cloud` random starts for the first image; its PCA spectrum
   and the images along its major and minor components;
3. the cloud's mean against the network's seed ("canonical" seed), and against random seeds;
4. random convex combinations of the cloud's seeds: do they stay in emb(x)?
5. pixel against latent interpolation between the first two images;
6. model independence: the same seeds through a second DDPM of another architecture, trained on
   the same data with the same noise schedule: how far apart are the two models' images, against
   two models' images of different seeds?
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from fsa.data.targets import Target, target_latents
from fsa.diffusion.backbones import DiffusionBackbone, PixelDiffusion, load_pixel_diffusion
from fsa.diffusion.samplers import strided_timesteps
from fsa.embedding import analysis, ddim
from fsa.embedding.options import EmbedOptions
from fsa.errors import ConfigError
from fsa.findings import log_findings
from fsa.job import Job
from fsa.pictures import draw_grid, picture
from fsa.tasks.embed import FOLDER
from fsa.tasks.embed.analyses import cloud_analysis, independence_figure, interpolate_figure, mse01
from fsa.tasks.embed.findings import findings
from fsa.tasks.embed.units import STREAM, CloudLog, Embedder, Units

log = logging.getLogger("fsa")


@dataclass
class Reconstructions:
    """Phase 1's result: every image's MSE per method (the table) and, on the dataset's images, each
    method's seeds and reconstructions."""

    table: pd.DataFrame
    seeds: dict[str, Tensor]
    images: dict[str, Tensor]


def embed(job: Job) -> dict[str, Any]:
    """The whole embed task; returns its part of the summary."""
    options: EmbedOptions = job.options
    backbone = load_model(job)
    extractor = job.build("extractor").to(job.device)  # the dataset computes features as it loads; embed uses images
    targets = job.build("dataset").load(extractor)[: job.cfg.max_targets][: options.images]
    images = target_latents(targets, backbone, "task=embed")
    timesteps = strided_timesteps(backbone.schedule.num_train_timesteps, options.num_steps)
    embedder = Embedder(backbone, options, timesteps, job.cfg.seed, Units(job.checkpoints, job.saved), job.cfg.progress)
    out = job.folder.root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    if job.tracker is not None:
        job.tracker.open(STREAM, job_type=STREAM)
    log.info(
        "task=embed: %d image(s), %d generated, DDIM %d steps, methods: %s",
        len(images),
        options.generated,
        options.num_steps,
        ", ".join(name for name, _ in embedder.methods()),
    )
    found = reconstruct(embedder, images, options)  # 1
    per_method = method_table(found.table)
    per_method.to_csv(out / "methods.csv", index=False)
    found.table.to_csv(out / "reconstruction.csv", index=False)
    overview = draw_overview(images, targets, found, job.folder.overview_file)
    summary = analyse(job, embedder, images, found, out)  # 2-6
    summary = {"model": backbone.name, "num_steps": options.num_steps, "images": len(images)} | summary
    summary["methods"] = per_method.to_dict(orient="records")
    claims = findings(found.table, summary, images[0].numel())
    claims.to_csv(out / "findings.csv")
    summary["findings"] = claims.reset_index().to_dict(orient="records")
    log_findings(claims, log)
    for set_name in ("dataset", "generated"):
        mse = per_method[(per_method["set"] == set_name) & (per_method["method"] != "random seed")]["mse"]
        summary[f"best_{set_name}_mse"] = float(mse.min()) if len(mse) else None
    summary["overview"] = job.folder.relative(overview)
    if job.tracker is not None:
        tell_tracker(job, summary, per_method)
    log.info("overview: %s (tables and figures: %s)", overview, out)
    return summary


def load_model(job: Job) -> DiffusionBackbone:
    backbone = job.build("model")
    if not isinstance(backbone, PixelDiffusion):
        raise ConfigError("task=embed works on pixel-space models (model=digits); a latent model would need its VAE")
    return backbone.to(job.device)


def reconstruct(embedder: Embedder, images: Tensor, options: EmbedOptions) -> Reconstructions:
    """1. Every method on the dataset's images and on generated ones (Tables 1 and 2); random seeds
    are the floor to beat."""
    sets = {"dataset": images}
    if options.generated:
        made_seeds = embedder.random_seeds(torch.Size((options.generated, *images.shape[1:])), 2)
        with torch.no_grad():
            sets["generated"] = ddim.generate(embedder.backbone, made_seeds, embedder.timesteps)
    random = ("random seed", lambda x: embedder.random_seeds(x.shape, 3))
    rows, seeds_by_method, reconstructions = [], {}, {}
    for set_name, batch in sets.items():
        for name, method in [random, *embedder.methods()]:
            seeds, seconds = embedder.units.seeds(
                f"{set_name}/{name}", lambda method=method, batch=batch: method(batch)
            )
            seeds = seeds.to(embedder.device)
            result = ddim.reconstruct(embedder.backbone, seeds, batch, embedder.timesteps)
            errors = mse01(result.reconstruction, batch)
            if set_name == "dataset":
                seeds_by_method[name], reconstructions[name] = seeds, result.reconstruction
            for i, error in enumerate(errors.tolist()):
                rows.append({"set": set_name, "method": name, "image": i, "mse": error, "seconds": seconds})
            log.info("%s, %s: reconstruction MSE %.5f ([0, 1] units), %.2f s", set_name, name, errors.mean(), seconds)
    return Reconstructions(pd.DataFrame(rows), seeds_by_method, reconstructions)


def method_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per set and method: mean and spread of the MSE, images, seconds and seeds per second."""
    per_method = table.groupby(["set", "method"], sort=False).agg(
        mse=("mse", "mean"), mse_std=("mse", "std"), images=("image", "count"), seconds=("seconds", "first")
    )
    per_method["seeds_per_second"] = per_method["images"] / per_method["seconds"]
    return per_method.reset_index()


def draw_overview(images: Tensor, targets: list[Target], found: Reconstructions, path: Any) -> Any:
    """Each dataset image, then its reconstruction by every method with the MSE under it."""
    table = found.table[found.table["set"] == "dataset"].set_index(["method", "image"])["mse"]
    rows = [
        [(picture(images[i]), f"{targets[i].name[:14]}")]
        + [(picture(made[i]), f"{table[(name, i)]:.2g}") for name, made in found.images.items()]
        for i in range(len(images))
    ]
    return draw_grid([("image", "")] + [("reconstruction", name) for name in found.images], rows, path)


def analyse(job: Job, embedder: Embedder, images: Tensor, found: Reconstructions, out: Any) -> dict[str, Any]:
    """2-6. The first image's cloud (PCA, moves along components, mean against network, convex
    combinations), interpolation between the first two images, and the same seeds through a second model."""
    options, backbone, timesteps = embedder.options, embedder.backbone, embedder.timesteps
    first = images[:1].expand(options.cloud, -1, -1, -1)
    cloud_log = CloudLog(job.tracker) if job.tracker is not None else None
    start = embedder.random_seeds(first.shape, 4)
    seeds, _ = embedder.units.seeds(
        "cloud", lambda: embedder.descend(first, start, options.iterations, options.lr, callback=cloud_log)
    )
    cloud = ddim.reconstruct(backbone, seeds.to(embedder.device), first, timesteps)
    principal = analysis.principal_components(cloud.seed.cpu())
    summary: dict[str, Any] = {"generated": options.generated}
    summary["cloud"] = cloud_analysis(backbone, timesteps, images[:1], cloud, principal, embedder, out)
    summary["interpolation"] = {}
    if len(images) >= 2:  # the seeds of the best-refined method: the last network method, else the last method
        source = ([n for n in found.seeds if n.startswith("network")] or list(found.seeds))[-1]
        summary["interpolation"] = interpolate_figure(
            backbone, timesteps, images, found.seeds[source], source, options, out
        )
    summary["independence"] = {}
    if options.second_model and options.independence:
        second = load_pixel_diffusion(options.second_model, "unet").to(job.device)
        summary["independence"] = independence_figure(backbone, second, timesteps, embedder, out)
    return summary


def tell_tracker(job: Job, summary: dict[str, Any], per_method: pd.DataFrame) -> None:
    """The methods table, the figures, the overview and the headline numbers, to the job's W&B run."""
    assert job.tracker is not None
    out = job.folder.root / FOLDER
    figures = {f"figures/{png.stem}": png for png in sorted(out.glob("*.png"))}
    tables = {"methods": per_method, "findings": pd.DataFrame(summary["findings"])}
    job.tracker.log_outputs(STREAM, tables, figures | {"overview": job.folder.overview_file})
    values = {f"mse/{row['set']}/{row['method']}": row["mse"] for row in summary["methods"]}
    job.tracker.summarise(STREAM, values | {"cloud": {k: v for k, v in summary["cloud"].items() if k != "variances"}})
