"""`task=embed`: from images back to the seeds of the deterministic DDIM generator (Asperti et al.).

Run by `fsa.runner.run` once the run folder has admitted the run and the config is valid; it
writes into the same folder (`embedding/`: tables and figures; `overview.png`; `summary.json`).
Every analysis is computed from the seeds it finds, nothing is written in advance:

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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from fsa.config import embed_options
from fsa.data.targets import target_latents
from fsa.diffusion.backbones import DiffusionBackbone, PixelDiffusion, load_pixel_diffusion
from fsa.diffusion.samplers import strided_timesteps
from fsa.embedding import analysis, ddim, networks
from fsa.embedding.options import EmbedOptions
from fsa.errors import ConfigError
from fsa.tracking.checkpoint import Checkpoints
from fsa.tracking.local import to_uint8
from fsa.tracking.overview import OKABE_ITO, draw_grid
from fsa.tracking.run_folder import RunFolder, comparable
from fsa.tracking.wandb_logger import resolve_mode, start_run

log = logging.getLogger("fsa")
FACTORS = [-8.0, -4.0, 0.0, 4.0, 8.0]  # moves along a unit principal component, in seed units (|x_T| ~ 16)


def picture(image: Tensor) -> Image.Image:
    """(C, H, W) in about [-1, 1] -> an RGB picture, as a PNG of it would be."""
    return Image.fromarray(to_uint8(image.expand(3, -1, -1) if image.shape[0] == 1 else image))


def mse01(made: Tensor, images: Tensor) -> Tensor:
    """Per-image mean squared error in [0, 1] pixel units (the models work in [-1, 1])."""
    return ((made - images) / 2).pow(2).flatten(1).mean(1)


class Units:
    """The job's units of work (one method on one set of images; the cloud), each kept in the run's
    checkpoint once done, and the descent under way, kept every `checkpoint_every` iterations and
    when SIGTERM/SIGUSR1/SIGUSR2 arrives: a stopped run continues where it was, to the same seeds."""

    def __init__(self, checkpoints: Checkpoints, saved: dict[str, Any] | None, wandb_id: str | None) -> None:
        self.checkpoints, self.wandb_id = checkpoints, wandb_id
        self.done: dict[str, dict[str, Any]] = saved["units"] if saved else {}
        self.under_way: dict[str, Any] | None = saved["descent"] if saved else None
        self.key: str | None = None
        self.started = self.carried = 0.0

    def seeds(self, key: str, find: Callable[[], Tensor]) -> tuple[Tensor, float]:
        """The seeds `find()` returns and the seconds it took, found once per run (kept in the checkpoint)."""
        if key not in self.done:
            resumed = self.under_way if self.under_way and self.under_way["unit"] == key else None
            self.key, self.carried, self.started = key, resumed["seconds"] if resumed else 0.0, time.perf_counter()
            seeds = find()
            self.done[key] = {"seeds": seeds.detach().cpu(), "seconds": self.elapsed()}
            self.under_way = None
            self.checkpoints.save(self.state)
        return self.done[key]["seeds"], self.done[key]["seconds"]

    def elapsed(self) -> float:
        return self.carried + time.perf_counter() - self.started

    def descent(self) -> dict[str, Any]:
        """`ddim.descend`'s `resume` and `on_iteration` for the (one) descent of the unit under way."""
        resume = None
        if self.under_way and self.under_way["unit"] == self.key:
            resume = ddim.DescentState(**self.under_way["state"])

        def on_iteration(snapshot: Callable[[], ddim.DescentState]) -> None:
            self.checkpoints.after_iteration(
                lambda: self.state({"unit": self.key, "state": vars(snapshot()), "seconds": self.elapsed()})
            )

        return {"resume": resume, "on_iteration": on_iteration}

    def state(self, descent: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"units": self.done, "descent": descent, "wandb_id": self.wandb_id}


class CloudLog:
    """The cloud's descent for W&B, per iteration; rows are held until a checkpoint covers them, so a
    run stopped and resumed logs every iteration once."""

    def __init__(self, run: Any) -> None:
        self.run, self.rows = run, []

    def __call__(self, step: ddim.DescentStep) -> None:
        mse = step.mse / 4  # [0, 1] pixel units
        self.rows.append(
            {"iteration": step.iteration, "cloud/mean_mse": float(mse.mean()), "cloud/min_mse": float(mse.min())}
        )

    def send(self) -> None:
        for row in self.rows:
            self.run.log(row)
        self.rows.clear()


class Embedder:
    """Every method of the options on one set of images; the seeds it found, per method."""

    def __init__(
        self, backbone: DiffusionBackbone, options: EmbedOptions, timesteps: list[int], seed: int, units: Units
    ) -> None:
        self.backbone, self.options, self.timesteps, self.seed, self.units = backbone, options, timesteps, seed, units
        self.networks = {kind: networks.load(options.network_dir, kind) for kind in self._network_kinds()}
        for kind, (net, info) in self.networks.items():
            if int(info["num_steps"]) != options.num_steps:
                raise ConfigError(
                    f"embedding network '{kind}' was trained for {info['num_steps']} DDIM steps; "
                    f"task.num_steps is {options.num_steps}"
                )
            net.to(self._device)  # in place

    @property
    def _device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _network_kinds(self) -> list[str]:
        return list(self.options.networks) if {"network", "network+gd"} & set(self.options.methods) else []

    def random_seeds(self, shape: torch.Size, offset: int) -> Tensor:
        """Seeds N(0, I) from the run's seed + `offset` (one offset per use, so uses do not share seeds)."""
        generator = torch.Generator().manual_seed(self.seed + offset)
        return torch.randn(shape, generator=generator).to(self._device)

    def methods(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """(name, images -> seeds) in the options' order; `network` is one entry per network kind."""
        found: list[tuple[str, Callable[[Tensor], Tensor]]] = []
        descend = self._descend
        for method in self.options.methods:
            if method == "inversion":
                found.append((method, lambda x: ddim.invert(self.backbone, x, self.timesteps)))
            elif method == "gradient_descent":
                steps, lr = self.options.iterations, self.options.lr
                found.append((method, lambda x, n=steps, lr=lr: descend(x, self.random_seeds(x.shape, 1), n, lr)))
            elif method == "inversion+gd":
                refine, lr = self.options.refine_iterations, self.options.refine_lr
                found.append(
                    (
                        method,
                        lambda x, n=refine, lr=lr: descend(x, ddim.invert(self.backbone, x, self.timesteps), n, lr),
                    )
                )
            elif method == "network":
                for kind, (net, _) in self.networks.items():
                    found.append((f"network {kind}", lambda x, net=net: net(x)))
            elif method == "network+gd":
                kind, (last, _) = list(self.networks.items())[-1]
                refine, lr = self.options.refine_iterations, self.options.refine_lr
                found.append((f"network {kind} + gd", lambda x, net=last, n=refine, lr=lr: descend(x, net(x), n, lr)))
        return found

    def _descend(self, images: Tensor, start: Tensor, iterations: int, lr: float) -> Tensor:
        if iterations == 0:
            return start
        return ddim.descend(
            self.backbone,
            images,
            start,
            self.timesteps,
            iterations,
            lr,
            self.options.checkpoint,
            **self.units.descent(),
        ).seed


def embed(
    cfg: DictConfig,
    folder: RunFolder,
    build: Callable[[Any], Any],
    device: torch.device,
    config: dict[str, Any],
    group: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The whole task=embed job, `build` making each config group's object; returns the summary.
    With a logger, one W&B run (job type "embed") gets the cloud's descent, the tables and figures.
    A stopped run (a signal, a kill) continues from its checkpoint: see `Units`."""
    options = embed_options(cfg)
    checkpoints = Checkpoints(folder.checkpoint_file, cfg.checkpoint_every, comparable(config))
    saved = checkpoints.saved()
    if saved:
        log.info("resuming from %s: %d unit(s) done", checkpoints.path, len(saved["units"]))
    run = None
    if cfg.logger is not None and cfg.logger.mode != "disabled":
        run_id = saved["wandb_id"] if saved else None
        run = start_run(cfg.logger, folder.root, config, group, name, job_type="embed", run_id=run_id)
        run.define_metric("iteration", hidden=True)
        run.define_metric("cloud/*", step_metric="iteration")
        log.info("W&B run %s (%s mode) in %s", run.id, resolve_mode(cfg.logger.mode), run.dir)
    units = Units(checkpoints, saved, run.id if run else None)
    try:
        with checkpoints:
            summary = _embed(cfg, options, folder, build, device, run, units)
    except BaseException:
        if run is not None:
            run.finish(exit_code=1)
        raise
    if run is not None:
        import wandb

        methods = pd.DataFrame(summary["methods"])
        run.log({"methods": wandb.Table(dataframe=methods)})
        run.log({f"figures/{png.stem}": wandb.Image(str(png)) for png in sorted(folder.embedding_dir.glob("*.png"))})
        run.log({"overview": wandb.Image(str(folder.overview_file))})
        for row in summary["methods"]:
            run.summary[f"mse/{row['set']}/{row['method']}"] = row["mse"]
        run.summary["cloud"] = {k: v for k, v in summary["cloud"].items() if k != "variances"}
        run.finish()
    return summary


def _embed(
    cfg: DictConfig,
    options: EmbedOptions,
    folder: RunFolder,
    build: Callable[[Any], Any],
    device: torch.device,
    run: Any,
    units: Units,
) -> dict[str, Any]:
    backbone: DiffusionBackbone = build(cfg.model)
    if not isinstance(backbone, PixelDiffusion):
        raise ConfigError("task=embed works on pixel-space models (model=digits); a latent model would need its VAE")
    backbone = backbone.to(device)
    extractor = build(cfg.extractor).to(device)  # the dataset computes features as it loads; embed uses images
    targets = build(cfg.dataset).load(extractor)[: cfg.max_targets][: options.images]
    images = target_latents(targets, backbone, "task=embed")
    timesteps = strided_timesteps(backbone.schedule.num_train_timesteps, options.num_steps)
    embedder = Embedder(backbone, options, timesteps, cfg.seed, units)
    out = folder.embedding_dir
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "task=embed: %d image(s), %d generated, DDIM %d steps, methods: %s",
        len(images),
        options.generated,
        options.num_steps,
        ", ".join(name for name, _ in embedder.methods()),
    )

    # 1. Reconstruction per method (Tables 1 and 2); random seeds are the floor to beat.
    sets = {"dataset": images}
    if options.generated:
        made_seeds = embedder.random_seeds(torch.Size((options.generated, *backbone.latent_shape)), 2)
        with torch.no_grad():
            sets["generated"] = ddim.generate(backbone, made_seeds, timesteps)
    rows, seeds_by_method, reconstructions = [], {}, {}
    for set_name, batch in sets.items():
        for name, method in [("random seed", lambda x: embedder.random_seeds(x.shape, 3)), *embedder.methods()]:
            seeds, seconds = units.seeds(f"{set_name}/{name}", lambda method=method, batch=batch: method(batch))
            seeds = seeds.to(device)
            result = ddim.reconstruct(backbone, seeds, batch, timesteps)
            errors = mse01(result.reconstruction, batch)
            if set_name == "dataset":
                seeds_by_method[name], reconstructions[name] = seeds, result.reconstruction
            for i, error in enumerate(errors.tolist()):
                rows.append({"set": set_name, "method": name, "image": i, "mse": error, "seconds": seconds})
            log.info("%s, %s: reconstruction MSE %.5f ([0, 1] units), %.2f s", set_name, name, errors.mean(), seconds)
    table = pd.DataFrame(rows)
    table.to_csv(out / "reconstruction.csv", index=False)
    per_method = table.groupby(["set", "method"], sort=False).agg(
        mse=("mse", "mean"), mse_std=("mse", "std"), images=("image", "count"), seconds=("seconds", "first")
    )
    per_method["seeds_per_second"] = per_method["images"] / per_method["seconds"]
    per_method.reset_index().to_csv(out / "methods.csv", index=False)
    overview = draw_grid(
        [("image", "")] + [("reconstruction", name) for name in reconstructions],
        [
            [(picture(images[i]), f"{targets[i].name[:14]}")]
            + [(picture(made[i]), f"{table_mse(table, name, i):.2g}") for name, made in reconstructions.items()]
            for i in range(len(images))
        ],
        folder.overview_file,
    )

    # 2-4. The cloud of the first image: PCA, moves along components, mean vs network, convex combinations.
    first = images[:1]
    cloud_log = CloudLog(run) if run is not None else None
    if cloud_log:
        units.checkpoints.on_save.append(cloud_log.send)
    seeds, _ = units.seeds(
        "cloud",
        lambda: (
            ddim.descend(
                backbone,
                first.expand(options.cloud, -1, -1, -1),
                embedder.random_seeds(torch.Size((options.cloud, *first.shape[1:])), 4),
                timesteps,
                options.iterations,
                options.lr,
                options.checkpoint,
                callback=cloud_log,
                **units.descent(),
            ).seed
        ),
    )
    cloud = ddim.reconstruct(backbone, seeds.to(device), first.expand(options.cloud, -1, -1, -1), timesteps)
    principal = analysis.principal_components(cloud.seed.cpu())
    cloud_figures = cloud_analysis(backbone, timesteps, first, cloud, principal, embedder, options, out)

    # 5. Interpolation between the first two images: in pixels, and between their seeds.
    interpolation = {}
    if len(images) >= 2:
        # The seeds of the best-refined method there is: the last network method, else the last method.
        source = [n for n in seeds_by_method if n.startswith("network")][-1:] or list(seeds_by_method)[-1:]
        source = source[0]
        interpolation = interpolate_figure(backbone, timesteps, images, seeds_by_method[source], source, options, out)

    # 6. The same seeds through a second model.
    independence = {}
    if options.second_model and options.independence:
        second = load_pixel_diffusion(options.second_model, "unet").to(device)
        independence = independence_figure(backbone, second, timesteps, embedder, options, out)

    summary = {
        "status": "complete",
        "task": "embed",
        "model": backbone.name,
        "num_steps": options.num_steps,
        "images": len(images),
        "generated": options.generated,
        "methods": per_method.reset_index().to_dict(orient="records"),
        "cloud": cloud_figures,
        "interpolation": interpolation,
        "independence": independence,
        "overview": folder.relative(overview),
    }
    log.info("overview: %s (tables and figures: %s)", overview, out)
    return summary


def table_mse(table: pd.DataFrame, method: str, image: int) -> float:
    row = table[(table["set"] == "dataset") & (table["method"] == method) & (table["image"] == image)]
    return float(row["mse"].iloc[0])


def cloud_analysis(
    backbone: DiffusionBackbone,
    timesteps: list[int],
    image: Tensor,
    cloud: ddim.Embedding,
    principal: analysis.Principal,
    embedder: Embedder,
    options: EmbedOptions,
    out: Path,
) -> dict[str, Any]:
    """The cloud's spectrum, images along its components, its mean against the network's seed and
    random seeds, and convex combinations of its seeds; figures into `out`, figures returned."""
    device = image.device
    shape = image.shape[1:]
    seeds = cloud.seed.flatten(1).cpu()
    spread = float((seeds - principal.mean).norm(dim=1).mean())
    random = torch.randn(seeds.shape, generator=torch.Generator().manual_seed(embedder.seed + 5))
    figures: dict[str, Any] = {
        "size": len(seeds),
        "member_mse": float(mse01(cloud.reconstruction, image).mean()),
        "spread": spread,  # mean distance of a seed to the cloud's mean
        "random_pair_distance": float((random[1:] - random[:-1]).norm(dim=1).mean()),
        "variances": principal.variances.tolist(),
    }
    mean_result = ddim.reconstruct(backbone, principal.mean.reshape(1, *shape).to(device), image, timesteps)
    figures["mean_seed_mse"] = float(mse01(mean_result.reconstruction, image)[0])
    if embedder.networks:
        kind, (net, _) = list(embedder.networks.items())[-1]
        with torch.no_grad():
            canonical = net(image).flatten().cpu()
        figures["network"] = kind
        figures["mean_to_network"] = float((principal.mean - canonical).norm())
        figures["seeds_to_network"] = float((seeds - canonical).norm(dim=1).mean())
    if options.combinations:
        mixed = analysis.convex_combinations(
            seeds, options.combinations, torch.Generator().manual_seed(embedder.seed + 6)
        )
        made = ddim.reconstruct(backbone, mixed.reshape(-1, *shape).to(device), image, timesteps)
        figures["combination_mse"] = float(mse01(made.reconstruction, image).mean())
        figures["combination_mse_max"] = float(mse01(made.reconstruction, image).max())

    # The spectrum, and the images along the two major and two minor components.
    plot, axes = plt.subplots(figsize=(5, 3.4))
    axes.semilogy(range(1, len(principal.variances) + 1), principal.variances.numpy(), "o-", color=OKABE_ITO[0], ms=3)
    axes.set_xlabel("principal component of the cloud")
    axes.set_ylabel("variance")
    axes.set_title(f"PCA of {len(seeds)} seeds of one image (at most {len(seeds) - 1} components)")
    axes.grid(alpha=0.3, which="both")
    plot.tight_layout()
    plot.savefig(out / "cloud_spectrum.png", dpi=100)
    plt.close(plot)
    count = len(principal.variances)
    which = sorted({0, min(1, count - 1), max(count - 2, 0), count - 1})
    moved = analysis.along_components(principal, which, FACTORS).reshape(-1, *shape).to(device)
    made = ddim.reconstruct(backbone, moved, image.expand(len(moved), -1, -1, -1), timesteps).reconstruction
    centre = made.reshape(len(which), len(FACTORS), *shape)[:, FACTORS.index(0.0)]
    rows, change = [], {}
    for r, component in enumerate(which):
        group = made.reshape(len(which), len(FACTORS), *shape)[r]
        moves = mse01(group, centre[r].expand_as(group))
        change[str(component + 1)] = float(moves.max())
        rows.append([(picture(group[c]), f"{f:+g}: {float(moves[c]):.2g}") for c, f in enumerate(FACTORS)])
    figures["component_change"] = change  # largest image change (MSE) moving along each component
    draw_grid(
        [(f"component {which[0] + 1}..{which[-1] + 1}", f"move {f:+g}") for f in FACTORS],
        rows,
        out / "cloud_components.png",
    )
    return figures


def interpolate_figure(
    backbone: DiffusionBackbone,
    timesteps: list[int],
    images: Tensor,
    seeds: Tensor,
    source: str,
    options: EmbedOptions,
    out: Path,
) -> dict[str, Any]:
    """Row 1: pixel interpolation between the first two images; row 2: the generator's images along
    the line between their seeds (from `source`)."""
    steps = options.interpolation_steps + 2
    pixels = analysis.interpolate(images[0], images[1], steps)
    latent = analysis.interpolate(seeds[0], seeds[1], steps)
    made = ddim.reconstruct(backbone, latent, pixels, timesteps).reconstruction
    draw_grid(
        [(f"fraction; row 2: seeds by {source}", f"{i / (steps - 1):.2f}") for i in range(steps)],
        [
            [(picture(p), "pixels") for p in pixels],
            [(picture(m), "seeds") for m in made],
        ],
        out / "interpolation.png",
    )
    return {"seeds": source, "steps": steps}


def independence_figure(
    first: DiffusionBackbone,
    second: DiffusionBackbone,
    timesteps: list[int],
    embedder: Embedder,
    options: EmbedOptions,
    out: Path,
) -> dict[str, Any]:
    """MSE between the two models' images of the same seed, against that of different seeds (a
    random pairing) and of two different seeds through the first model alone."""
    if second.latent_shape != first.latent_shape or not torch.equal(
        second.schedule.alphas_cumprod, first.schedule.alphas_cumprod
    ):
        raise ConfigError("task.second_model must have the model's image shape and noise schedule")
    seeds = embedder.random_seeds(torch.Size((options.independence, *first.latent_shape)), 7)
    with torch.no_grad():
        ours, theirs = ddim.generate(first, seeds, timesteps), ddim.generate(second, seeds, timesteps)
    shifted = torch.roll(torch.arange(len(seeds)), 1)  # every image paired with another seed's
    found = {
        "seeds": len(seeds),
        "same_seed_mse": float(mse01(ours, theirs).mean()),
        "other_seed_mse": float(mse01(ours, theirs[shifted]).mean()),
        "same_model_other_seed_mse": float(mse01(ours, ours[shifted]).mean()),
    }
    shown = min(10, len(seeds))
    draw_grid(
        [("seed", str(i)) for i in range(shown)],
        [
            [(picture(ours[i]), "model") for i in range(shown)],
            [
                (picture(theirs[i]), f"second {float(mse01(ours[i : i + 1], theirs[i : i + 1])[0]):.2g}")
                for i in range(shown)
            ],
        ],
        out / "independence.png",
    )
    log.info(
        "same seeds, two models: image MSE %.4f; different seeds: %.4f",
        found["same_seed_mse"],
        found["other_seed_mse"],
    )
    return found
