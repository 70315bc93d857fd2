"""The represent task's work: what a diffusion UNet's own block representations phi_t keep.

It writes `representation/` (tables and figures) and `overview.png`. On held-out labelled images, for
every block of the UNet (encoder, middle, decoder) and every noise level t of `task.timesteps`:

1. sparsity: the participation ratio of phi_t(x) over its channels, as a fraction of them (the
   paper's Fig. 1 asks the same of its ReLU network's channels);
2. stability: the cosine between phi_t(x) and phi at the reference level (the paper's Fig. 2);
3. semantic distance: leave-one-out nearest-neighbour class agreement of phi_t, against raw pixels
   and against the run's extractor's features (the digits CNN by default).
phi_t(x) = E_z[a(sqrt(abar_t) z_0 + sqrt(1 - abar_t) z, t)] as `extractor=unet_block` computes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from fsa.data.targets import target_latents
from fsa.diffusion.backbones import DiffusionBackbone
from fsa.errors import ConfigError
from fsa.extractors.unet_block import block_names, check_blocks
from fsa.extractors.unet_block import represent as block_means
from fsa.job import Job
from fsa.pictures import draw_grid, picture, plot_lines
from fsa.representation.measures import neighbour_agreement, participation_fraction, row_cosine
from fsa.representation.options import RepresentOptions
from fsa.tasks.represent import FOLDER

log = logging.getLogger("fsa")
CHUNK = 64  # images per forward pass (times the noise draws)
SHOWN = 6  # query images in the overview's nearest-neighbour grid
STREAM = "represent"  # the job's one W&B run


@dataclass
class Images:
    """The labelled images, as clean latents z0 and as flat pixels, and their features under the extractor."""

    z0: Tensor
    labels: Tensor
    pixels: Tensor
    features: Tensor
    extractor: str


def represent(job: Job) -> dict[str, Any]:
    """The whole represent task; returns its part of the summary."""
    options: RepresentOptions = job.options
    backbone: DiffusionBackbone = job.build("model").to(job.device)
    blocks, levels = blocks_and_levels(backbone, options)
    images = load_images(job, backbone, options)
    noise = torch.randn(
        (options.noise_samples, *backbone.latent_shape), generator=torch.Generator().manual_seed(options.noise_seed)
    )
    log.info(
        "task=represent: %d images (%d classes), blocks %s, %d noise levels, %d noise draws",
        len(images.labels),
        len(set(images.labels.tolist())),
        ", ".join(blocks),
        len(levels),
        options.noise_samples,
    )
    phi = phi_by_level(backbone, images.z0, levels, noise.to(job.device), blocks)
    tables = measure(phi, images, blocks, levels, options.reference)
    out = job.folder.root / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv")
    baselines = {"pixels": float(tables["neighbours"].loc["pixels", "clean image"])}
    baselines[images.extractor] = float(tables["neighbours"].loc[images.extractor, "clean image"])
    chance = float(images.labels.bincount().max()) / len(images.labels)
    draw_figures(tables, blocks, baselines, chance, options.reference, out)
    overview = nearest_grid(images, phi[options.reference], blocks, backbone, job.folder.overview_file)
    at = levels.index(options.reference)
    summary = {
        "model": backbone.name,
        "extractor": images.extractor,
        "blocks": blocks,
        "timesteps": levels,
        "reference": options.reference,
        "images": len(images.labels),
        "chance": chance,
        "neighbours": {**{b: float(tables["neighbours"].loc[b].iloc[1 + at]) for b in blocks}, **baselines},
        "sparsity": {b: float(tables["sparsity"].loc[b].iloc[at]) for b in blocks},
        "stability_min": {b: float(tables["stability"].loc[b].min()) for b in blocks},
        "overview": job.folder.relative(overview),
    }
    for name, agreement in summary["neighbours"].items():
        log.info("nearest-neighbour class agreement, %s: %.3f (chance %.2f)", name, agreement, chance)
    if job.tracker is not None:
        tell_tracker(job, summary, out)
    return summary


def blocks_and_levels(backbone: DiffusionBackbone, options: RepresentOptions) -> tuple[list[str], list[int]]:
    """The blocks measured (every block of the UNet by default) and the noise levels, checked."""
    unet = getattr(backbone, "unet", None)
    blocks = list(options.blocks) or (block_names(unet) if unet is not None else [])
    check_blocks(backbone, blocks)
    levels = sorted(set(options.timesteps) | {options.reference})
    last = backbone.schedule.num_train_timesteps - 1
    if levels[-1] > last:
        raise ConfigError(f"task.timesteps and task.reference must be <= {last} for model '{backbone.name}'")
    return blocks, levels


def load_images(job: Job, backbone: DiffusionBackbone, options: RepresentOptions) -> Images:
    """The dataset's labelled images (`task.per_class` per class where the dataset takes it)."""
    extractor = job.build("extractor").to(job.device)  # the features phi is compared with (digits CNN by default)
    per_class = {"per_class": options.per_class} if "per_class" in job.cfg.dataset else {}
    targets = job.build("dataset", **per_class).load(extractor)
    if any(t.label is None for t in targets):
        raise ConfigError("task=represent needs labelled images (dataset=digits) for its neighbour agreement")
    z0 = torch.cat(
        [target_latents(targets[i : i + CHUNK], backbone, "task=represent") for i in range(0, len(targets), CHUNK)]
    )
    labels = torch.tensor([t.label for t in targets])
    return Images(z0, labels, z0.flatten(1).cpu(), torch.stack([t.feature for t in targets]), extractor.name)


@torch.no_grad()
def phi_by_level(
    backbone: DiffusionBackbone, z0: Tensor, levels: list[int], noise: Tensor, blocks: list[str]
) -> dict[int, list[Tensor]]:
    """phi_t of every image for each level t and block: {t: [(N, C_block) per block]}, on the CPU."""
    phi = {}
    for t in levels:
        chunks = [block_means(backbone, z0[i : i + CHUNK], t, noise, blocks) for i in range(0, len(z0), CHUNK)]
        phi[t] = [torch.cat([chunk[b] for chunk in chunks]).cpu() for b in range(len(blocks))]
    return phi


def measure(
    phi: dict[int, list[Tensor]], images: Images, blocks: list[str], levels: list[int], reference: int
) -> dict[str, pd.DataFrame]:
    """1-3. Sparsity and stability per block and level; neighbour agreement per block and level, with
    the pixels' and the extractor's (of the clean image) below."""
    index, columns = pd.Index(blocks, name="block"), [f"t={t}" for t in levels]

    def table(cell: Any) -> pd.DataFrame:
        return pd.DataFrame([[cell(t, b) for t in levels] for b in range(len(blocks))], index=index, columns=columns)

    sparsity = table(lambda t, b: float(participation_fraction(phi[t][b]).mean()))
    stability = table(lambda t, b: float(row_cosine(phi[t][b], phi[reference][b]).mean()))
    neighbours = table(lambda t, b: neighbour_agreement(phi[t][b], images.labels)).rename_axis("representation")
    neighbours.insert(0, "clean image", float("nan"))
    for name, space in (("pixels", images.pixels), (images.extractor, images.features)):
        neighbours.loc[name] = [neighbour_agreement(space, images.labels)] + [float("nan")] * len(levels)
    return {"sparsity": sparsity, "stability": stability, "neighbours": neighbours}


def draw_figures(
    tables: dict[str, pd.DataFrame],
    blocks: list[str],
    baselines: dict[str, float],
    chance: float,
    reference: int,
    out: Path,
) -> None:
    """One line per block against the noise level t, for each table."""
    levels = [int(c.removeprefix("t=")) for c in tables["sparsity"].columns]
    rows = lambda table: {str(name): row.to_numpy() for name, row in table.loc[blocks].iterrows()}  # noqa: E731
    plot_lines(
        levels,
        rows(tables["sparsity"]),
        ("noise level t", "participation ratio / channels", "channel sparsity of phi_t (lower: sparser)"),
        out / "sparsity.png",
    )
    plot_lines(
        levels,
        rows(tables["stability"]),
        ("noise level t", f"cosine to phi at t={reference}", "stability of phi_t across noise levels"),
        out / "stability.png",
    )
    plot_lines(
        levels,
        rows(tables["neighbours"].drop(columns="clean image")),
        (
            "noise level t",
            "nearest-neighbour class agreement",
            "semantic distance: is the nearest image of the same class?",
        ),
        out / "neighbours.png",
        references={**baselines, "chance": chance},
    )


def nearest_grid(images: Images, phi: list[Tensor], blocks: list[str], backbone: DiffusionBackbone, path: Path) -> Path:
    """The first images of different classes (rows) and their nearest other image under pixels, the
    extractor and each block's phi (columns), its class under each."""
    labels = images.labels
    queries = [int((labels == c).nonzero()[0]) for c in labels.unique()[:SHOWN]]
    spaces = [("pixels", images.pixels), (images.extractor, images.features), *zip(blocks, phi, strict=True)]
    device = next(backbone.parameters()).device
    shown = backbone.decode(images.z0.to(device)).cpu() if backbone.latent_shape[0] != 1 else images.z0.cpu()
    rows = []
    for q in queries:
        row = [(picture(shown[q]), f"class {int(labels[q])}")]
        for _, space in spaces:
            distances = (space - space[q]).pow(2).sum(1)
            distances[q] = float("inf")
            n = int(distances.argmin())
            row.append((picture(shown[n]), f"class {int(labels[n])}"))
        rows.append(row)
    return draw_grid([("image", "")] + [("nearest by", name[:14]) for name, _ in spaces], rows, path)


def tell_tracker(job: Job, summary: dict[str, Any], out: Path) -> None:
    """The tables, the figures, the overview and the neighbour agreements, to the job's W&B run."""
    assert job.tracker is not None
    job.tracker.open(STREAM, job_type=STREAM)
    tables = {f"tables/{csv.stem}": pd.read_csv(csv) for csv in sorted(out.glob("*.csv"))}
    figures = {f"figures/{png.stem}": png for png in sorted(out.glob("*.png"))} | {"overview": job.folder.overview_file}
    job.tracker.log_outputs(STREAM, tables, figures)
    job.tracker.summarise(STREAM, {f"neighbours/{name}": value for name, value in summary["neighbours"].items()})
