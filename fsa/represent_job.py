"""`task=represent`: what a diffusion UNet's own block representations phi_t keep (Kadkhodaie et al.).

Run by `fsa.runner.run` in the run folder; writes `representation/` (tables and figures),
`overview.png` and `summary.json`. On held-out labelled images, for every block of the UNet
(encoder, middle, decoder) and every noise level t of `task.timesteps`:

1. sparsity: the participation ratio of phi_t(x) over its channels, as a fraction of them (the
   paper's Fig. 1 asks the same of its ReLU network's channels);
2. stability: the cosine between phi_t(x) and phi at the reference level (the paper's Fig. 2);
3. semantic distance: leave-one-out nearest-neighbour class agreement of phi_t, against raw pixels
   and against the run's extractor's features (the digits CNN by default).
phi_t(x) = E_z[a(sqrt(abar_t) z_0 + sqrt(1 - abar_t) z, t)] as `extractor=unet_block` computes it.
The job takes seconds on the digits and is not checkpointed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor

from fsa.config import represent_options
from fsa.data.targets import target_latents
from fsa.diffusion.backbones import DiffusionBackbone
from fsa.embed_job import picture
from fsa.errors import ConfigError
from fsa.extractors.unet_block import block_names, check_blocks, represent
from fsa.representation.measures import neighbour_agreement, participation_fraction, row_cosine
from fsa.representation.options import RepresentOptions
from fsa.tracking.overview import OKABE_ITO, draw_grid
from fsa.tracking.run_folder import RunFolder
from fsa.tracking.wandb_logger import resolve_mode, start_run

log = logging.getLogger("fsa")
CHUNK = 64  # images per forward pass (times the noise draws)
SHOWN = 6  # query images in the overview's nearest-neighbour grid


def represent_task(
    cfg: DictConfig,
    folder: RunFolder,
    build: Callable[[Any], Any],
    device: torch.device,
    config: dict[str, Any],
    group: str | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The whole task=represent job; with a logger, one W&B run (job type "represent") gets its
    tables, figures and the neighbour agreements as summaries."""
    options = represent_options(cfg)
    summary = _represent(cfg, options, folder, build, device)
    if cfg.logger is not None and cfg.logger.mode != "disabled":
        import wandb

        run = start_run(cfg.logger, folder.root, config, group, name, job_type="represent")
        log.info("W&B run %s (%s mode) in %s", run.id, resolve_mode(cfg.logger.mode), run.dir)
        out = folder.representation_dir
        run.log({f"tables/{csv.stem}": wandb.Table(dataframe=pd.read_csv(csv)) for csv in sorted(out.glob("*.csv"))})
        run.log({f"figures/{png.stem}": wandb.Image(str(png)) for png in sorted(out.glob("*.png"))})
        run.log({"overview": wandb.Image(str(folder.overview_file))})
        for representation, agreement in summary["neighbours"].items():
            run.summary[f"neighbours/{representation}"] = agreement
        run.finish()
    return summary


def _represent(
    cfg: DictConfig, options: RepresentOptions, folder: RunFolder, build: Callable[[Any], Any], device: torch.device
) -> dict[str, Any]:
    backbone: DiffusionBackbone = build(cfg.model).to(device)
    unet = getattr(backbone, "unet", None)
    blocks = list(options.blocks) or (block_names(unet) if unet is not None else [])
    check_blocks(backbone, blocks)
    last = backbone.schedule.num_train_timesteps - 1
    levels = sorted(set(options.timesteps) | {options.reference})
    if levels[-1] > last:
        raise ConfigError(f"task.timesteps and task.reference must be <= {last} for model '{backbone.name}'")
    extractor = build(cfg.extractor).to(device)  # the features phi is compared with (digits CNN by default)
    dataset = (
        instantiate(cfg.dataset, per_class=options.per_class) if "per_class" in cfg.dataset else build(cfg.dataset)
    )
    targets = dataset.load(extractor)
    if any(t.label is None for t in targets):
        raise ConfigError("task=represent needs labelled images (dataset=digits) for its neighbour agreement")
    labels = torch.tensor([t.label for t in targets])
    z0 = torch.cat(
        [target_latents(targets[i : i + CHUNK], backbone, "task=represent") for i in range(0, len(targets), CHUNK)]
    )
    noise = torch.randn(
        (options.noise_samples, *backbone.latent_shape), generator=torch.Generator().manual_seed(options.noise_seed)
    )
    log.info(
        "task=represent: %d images (%d classes), blocks %s, %d noise levels, %d noise draws",
        len(targets),
        len(set(labels.tolist())),
        ", ".join(blocks),
        len(levels),
        options.noise_samples,
    )

    phi = phi_by_level(backbone, z0, levels, noise.to(device), blocks)

    columns = [f"t={t}" for t in levels]
    sparsity = pd.DataFrame(
        [[float(participation_fraction(phi[t][b]).mean()) for t in levels] for b in range(len(blocks))],
        index=pd.Index(blocks, name="block"),
        columns=columns,
    )
    stability = pd.DataFrame(
        [[float(row_cosine(phi[t][b], phi[options.reference][b]).mean()) for t in levels] for b in range(len(blocks))],
        index=pd.Index(blocks, name="block"),
        columns=columns,
    )
    pixels = z0.flatten(1).cpu()
    features = torch.stack([t.feature for t in targets])
    baselines = {"pixels": neighbour_agreement(pixels, labels), extractor.name: neighbour_agreement(features, labels)}
    neighbours = pd.DataFrame(
        [[neighbour_agreement(phi[t][b], labels) for t in levels] for b in range(len(blocks))],
        index=pd.Index(blocks, name="representation"),
        columns=columns,
    )
    neighbours.insert(0, "clean image", float("nan"))
    for representation, agreement in baselines.items():
        neighbours.loc[representation] = [agreement] + [float("nan")] * len(levels)
    out = folder.representation_dir
    out.mkdir(parents=True, exist_ok=True)
    sparsity.to_csv(out / "sparsity.csv")
    stability.to_csv(out / "stability.csv")
    neighbours.to_csv(out / "neighbours.csv")
    chance = float(labels.bincount().max()) / len(labels)
    plot_by_level(
        sparsity, "participation ratio / channels", "channel sparsity of phi_t (lower: sparser)", out / "sparsity.png"
    )
    plot_by_level(
        stability,
        f"cosine to phi at t={options.reference}",
        "stability of phi_t across noise levels",
        out / "stability.png",
    )
    plot_by_level(
        neighbours.drop(columns="clean image").loc[blocks],
        "nearest-neighbour class agreement",
        "semantic distance: is the nearest image of the same class?",
        out / "neighbours.png",
        lines={**baselines, "chance": chance},
    )
    reference = levels.index(options.reference)
    overview = nearest_grid(
        z0, labels, pixels, features, extractor.name, phi[options.reference], blocks, backbone, folder.overview_file
    )
    summary = {
        "status": "complete",
        "task": "represent",
        "model": backbone.name,
        "extractor": extractor.name,
        "blocks": blocks,
        "timesteps": levels,
        "reference": options.reference,
        "images": len(targets),
        "chance": chance,
        "neighbours": {**{b: float(neighbours.loc[b].iloc[1 + reference]) for b in blocks}, **baselines},
        "sparsity": {b: float(sparsity.loc[b].iloc[reference]) for b in blocks},
        "stability_min": {b: float(stability.loc[b].min()) for b in blocks},
        "overview": folder.relative(overview),
    }
    for representation, agreement in summary["neighbours"].items():
        log.info("nearest-neighbour class agreement, %s: %.3f (chance %.2f)", representation, agreement, chance)
    log.info("overview: %s (tables and figures: %s)", overview, out)
    return summary


@torch.no_grad()
def phi_by_level(
    backbone: DiffusionBackbone, z0: Tensor, levels: list[int], noise: Tensor, blocks: list[str]
) -> dict[int, list[Tensor]]:
    """phi_t of every image for each level t and block: {t: [(N, C_block) per block]}, on the CPU."""
    phi = {}
    for t in levels:
        chunks = [represent(backbone, z0[i : i + CHUNK], t, noise, blocks) for i in range(0, len(z0), CHUNK)]
        phi[t] = [torch.cat([chunk[b] for chunk in chunks]).cpu() for b in range(len(blocks))]
    return phi


def plot_by_level(
    table: pd.DataFrame, ylabel: str, title: str, path: Path, lines: dict[str, float] | None = None
) -> None:
    """One line per row of `table` (columns "t=<n>") against the noise level t; `lines` as horizontal refs."""
    levels = [int(c.removeprefix("t=")) for c in table.columns]
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for i, (name, row) in enumerate(table.iterrows()):
        axes.plot(levels, row.to_numpy(), "o-", ms=3, color=OKABE_ITO[i % len(OKABE_ITO)], label=str(name))
    for j, (name, value) in enumerate((lines or {}).items()):
        axes.axhline(
            value,
            ls=":" if name == "chance" else "--",
            color="#555555" if name == "chance" else OKABE_ITO[-1 - j],
            label=f"{name} ({value:.2f})",
        )
    axes.set_xlabel("noise level t")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def nearest_grid(
    z0: Tensor,
    labels: Tensor,
    pixels: Tensor,
    features: Tensor,
    extractor: str,
    phi: list[Tensor],
    blocks: list[str],
    backbone: DiffusionBackbone,
    path: Path,
) -> Path:
    """The first images of different classes (rows) and their nearest other image under pixels, the
    extractor and each block's phi (columns), its class under each."""
    queries = [int((labels == c).nonzero()[0]) for c in labels.unique()[:SHOWN]]
    spaces = [("pixels", pixels), (extractor, features), *zip(blocks, phi, strict=True)]
    images = (
        backbone.decode(z0.to(next(backbone.parameters()).device)).cpu() if backbone.latent_shape[0] != 1 else z0.cpu()
    )
    rows = []
    for q in queries:
        row = [(picture(images[q]), f"class {int(labels[q])}")]
        for _, space in spaces:
            distances = (space - space[q]).pow(2).sum(1)
            distances[q] = float("inf")
            n = int(distances.argmin())
            row.append((picture(images[n]), f"class {int(labels[n])}"))
        rows.append(row)
    return draw_grid([("image", "")] + [("nearest by", name[:14]) for name, _ in spaces], rows, path)
