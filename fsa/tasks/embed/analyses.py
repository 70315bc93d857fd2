"""The embed task's analyses of the seeds it found (phases 2-6), each with its figure in `embedding/`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.embedding import analysis, ddim
from fsa.embedding.options import EmbedOptions
from fsa.errors import ConfigError
from fsa.intervals import mean_interval, percentile_interval, row_bootstrap
from fsa.pictures import draw_grid, picture, plot_lines
from fsa.tasks.embed.units import Embedder

log = logging.getLogger("fsa")

FACTORS = [-8.0, -4.0, 0.0, 4.0, 8.0]  # moves along a unit principal component, in seed units (|x_T| ~ 16)


def mse01(made: Tensor, images: Tensor) -> Tensor:
    """Per-image mean squared error in [0, 1] pixel units (the models work in [-1, 1])."""
    return ((made - images) / 2).pow(2).flatten(1).mean(1)


def cloud_analysis(
    backbone: DiffusionBackbone,
    timesteps: list[int],
    image: Tensor,
    cloud: ddim.Embedding,
    principal: analysis.Principal,
    embedder: Embedder,
    out: Path,
) -> dict[str, Any]:
    """2-4. The cloud's spectrum, images along its components, its mean against the network's seed and
    random seeds, and convex combinations of its seeds; figures into `out`, figures returned."""
    seeds = cloud.seed.flatten(1).cpu()
    random = torch.randn(seeds.shape, generator=torch.Generator().manual_seed(embedder.seed + 5))
    figures: dict[str, Any] = {
        "size": len(seeds),
        "member_mse": float(mse01(cloud.reconstruction, image).mean()),
        "spread": float((seeds - principal.mean).norm(dim=1).mean()),  # mean distance of a seed to the mean
        "random_pair_distance": float((random[1:] - random[:-1]).norm(dim=1).mean()),
        "variances": principal.variances.tolist(),
    }
    mean_seed = principal.mean.reshape(1, *image.shape[1:]).to(image.device)
    figures["mean_seed_mse"] = float(
        mse01(ddim.reconstruct(backbone, mean_seed, image, timesteps).reconstruction, image)[0]
    )
    if embedder.networks:
        kind, (net, _) = list(embedder.networks.items())[-1]
        with torch.no_grad():
            canonical = net(image).flatten().cpu()
        figures["network"] = kind
        figures["mean_to_network"] = float((principal.mean - canonical).norm())
        figures["seeds_to_network"] = float((seeds - canonical).norm(dim=1).mean())
        figures["centre_ratio"], figures["centre_ratio_interval"] = centre_ratio(seeds.double(), canonical.double())
    if embedder.options.combinations:
        generator = torch.Generator().manual_seed(embedder.seed + 6)
        mixed = analysis.convex_combinations(seeds, embedder.options.combinations, generator)
        made = ddim.reconstruct(backbone, mixed.reshape(-1, *image.shape[1:]).to(image.device), image, timesteps)
        errors = mse01(made.reconstruction, image).cpu().double().numpy()
        figures["combination_mse"], figures["combination_mse_max"] = float(errors.mean()), float(errors.max())
        figures["combination_mse_interval"] = mean_interval(errors)
    count = len(principal.variances)
    plot_lines(
        range(1, count + 1),
        {"variance": principal.variances.tolist()},
        ("principal component of the cloud", "variance", f"PCA of {len(seeds)} seeds of one image (at most {count})"),
        out / "cloud_spectrum.png",
        log_y=True,
    )
    figures["component_change"] = components_figure(backbone, timesteps, image, principal, out)
    return figures


def centre_ratio(seeds: Tensor, canonical: Tensor) -> tuple[float, list[float]]:
    """How far the network's seed is from the cloud's mean, over how far the cloud's seeds are from it
    on average (below 1: nearer the centre than a member is), with its interval over the seeds."""
    points = seeds.numpy()

    def ratio(rows: np.ndarray) -> float:
        mean = points[rows].mean(0)
        spread = np.linalg.norm(points[rows] - mean, axis=1).mean()
        return float(np.linalg.norm(mean - canonical.numpy()) / spread) if spread > 0 else float("nan")

    return ratio(np.arange(len(points))), percentile_interval(row_bootstrap(len(points), ratio))


def components_figure(
    backbone: DiffusionBackbone, timesteps: list[int], image: Tensor, principal: analysis.Principal, out: Path
) -> dict[str, float]:
    """The images along the two major and two minor components; the largest image change (MSE) moving
    along each component."""
    count, shape = len(principal.variances), image.shape[1:]
    which = sorted({0, min(1, count - 1), max(count - 2, 0), count - 1})
    moved = analysis.along_components(principal, which, FACTORS).reshape(-1, *shape).to(image.device)
    made = ddim.reconstruct(backbone, moved, image.expand(len(moved), -1, -1, -1), timesteps).reconstruction
    made = made.reshape(len(which), len(FACTORS), *shape)
    rows, change = [], {}
    for r, component in enumerate(which):
        moves = mse01(made[r], made[r, FACTORS.index(0.0)].expand_as(made[r]))
        change[str(component + 1)] = float(moves.max())
        rows.append([(picture(made[r, c]), f"{f:+g}: {float(moves[c]):.2g}") for c, f in enumerate(FACTORS)])
    columns = [(f"component {which[0] + 1}..{which[-1] + 1}", f"move {f:+g}") for f in FACTORS]
    draw_grid(columns, rows, out / "cloud_components.png")
    return change


def interpolate_figure(
    backbone: DiffusionBackbone,
    timesteps: list[int],
    images: Tensor,
    seeds: Tensor,
    source: str,
    options: EmbedOptions,
    out: Path,
) -> dict[str, Any]:
    """5. Row 1: pixel interpolation between the first two images; row 2: the generator's images along
    the line between their seeds (from `source`)."""
    steps = options.interpolation_steps + 2
    pixels = analysis.interpolate(images[0], images[1], steps)
    made = ddim.reconstruct(backbone, analysis.interpolate(seeds[0], seeds[1], steps), pixels, timesteps).reconstruction
    draw_grid(
        [(f"fraction; row 2: seeds by {source}", f"{i / (steps - 1):.2f}") for i in range(steps)],
        [[(picture(p), "pixels") for p in pixels], [(picture(m), "seeds") for m in made]],
        out / "interpolation.png",
    )
    return {"seeds": source, "steps": steps}


def independence_figure(
    first: DiffusionBackbone, second: DiffusionBackbone, timesteps: list[int], embedder: Embedder, out: Path
) -> dict[str, Any]:
    """6. MSE between the two models' images of the same seed, against that of different seeds (a
    random pairing) and of two different seeds through the first model alone."""
    same_schedule = torch.equal(second.schedule.alphas_cumprod, first.schedule.alphas_cumprod)
    if second.latent_shape != first.latent_shape or not same_schedule:
        raise ConfigError("task.second_model must have the model's image shape and noise schedule")
    seeds = embedder.random_seeds(torch.Size((embedder.options.independence, *first.latent_shape)), 7)
    with torch.no_grad():
        ours, theirs = ddim.generate(first, seeds, timesteps), ddim.generate(second, seeds, timesteps)
    shifted = torch.roll(torch.arange(len(seeds)), 1)  # every image paired with another seed's
    same, other = (mse01(ours, b).cpu().double().numpy() for b in (theirs, theirs[shifted]))
    found = {
        "seeds": len(seeds),
        "same_seed_mse": float(same.mean()),
        "other_seed_mse": float(other.mean()),
        "same_model_other_seed_mse": float(mse01(ours, ours[shifted]).mean()),
        "same_over_other": float(same.mean() / other.mean()),
        "same_over_other_interval": percentile_interval(
            row_bootstrap(len(same), lambda rows: same[rows].mean() / other[rows].mean())
        ),
    }
    log.info(
        "same seeds, two models: image MSE %.4f; different seeds: %.4f", found["same_seed_mse"], found["other_seed_mse"]
    )
    shown = range(min(10, len(seeds)))
    pairs = mse01(ours, theirs)
    draw_grid(
        [("seed", str(i)) for i in shown],
        [[(picture(ours[i]), "model") for i in shown], [(picture(theirs[i]), f"second {pairs[i]:.2g}") for i in shown]],
        out / "independence.png",
    )
    return found
