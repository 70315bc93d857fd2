"""The represent task's work: what a diffusion UNet's own block representations phi_t keep.

It writes `representation/` (tables and figures) and `overview.png`. On held-out labelled images, for
every block of the UNet (encoder, middle, decoder) and every noise level t of `task.timesteps`:

1. sparsity: the participation ratio of phi_t(x) over its channels, as a fraction of them, of the
   block's output and of its input (the paper's Fig. 1);
2. stability: the cosine between phi_t(x) and phi at the reference level (the paper's Fig. 2);
3. semantic distance: leave-one-out nearest-neighbour class agreement of phi_t, against raw pixels
   and against the run's extractor's features (the digits CNN by default).
For one block (`task.block`) at the reference level: 4. each channel's selectivity and its
distribution (Fig. 3), 5. the top images of the most selective channels (Fig. 4), 6. K-means clusters,
their separation and class purity against the classes' (Fig. 6); 7. the paper's claims, each with
fsa's figure, its 95 % interval and whether it holds (`findings.csv`).
phi_t(x) = E_z[a(sqrt(abar_t) z_0 + sqrt(1 - abar_t) z, t)] as `extractor=unet_block` computes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from fsa.data.targets import target_latents
from fsa.diffusion.backbones import DiffusionBackbone
from fsa.errors import ConfigError
from fsa.extractors.unet_block import block_names, check_blocks, represent_input_output
from fsa.findings import Finding, findings_table, log_findings
from fsa.intervals import mean_interval
from fsa.job import Job
from fsa.pictures import draw_grid, picture, plot_lines
from fsa.representation import analyses
from fsa.representation.measures import neighbour_agreement, neighbour_matches, participation_fraction, row_cosine
from fsa.representation.options import RepresentOptions
from fsa.tasks.represent import FOLDER, figures

log = logging.getLogger("fsa")
CHUNK = 64  # images per forward pass (times the noise draws)
SHOWN = 6  # query images in the overview's nearest-neighbour grid; selective channels shown
BIMODAL = 5 / 9  # a bimodality coefficient above a uniform's suggests two modes (Sarle)
STREAM = "represent"  # the job's one W&B run


@dataclass
class Phi:
    """phi_t of every image per level t and block: of the blocks' outputs and of their inputs."""

    outputs: dict[int, list[Tensor]]
    inputs: dict[int, list[Tensor]]


@dataclass
class BlockStudy:
    """4-6: the studied block's selectivity and clusters; every block's per-image participation ratio
    at the reference level, of its inputs and of its outputs (None: a side with one channel)."""

    selectivity: analyses.Selectivity
    clusters: analyses.Clusters
    input_sparsity: list[np.ndarray | None]
    output_sparsity: list[np.ndarray | None]


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
    baselines = {"pixels": float(tables["neighbours"].loc["pixels", "clean image"])}
    baselines[images.extractor] = float(tables["neighbours"].loc[images.extractor, "clean image"])
    chance = float(images.labels.bincount().max()) / len(images.labels)
    draw_figures(tables, blocks, baselines, chance, options.reference, out)
    shown = shown_images(images, backbone)
    study = study_block(phi, images, blocks, options, shown, out)
    tables["findings"] = findings(phi, tables, images, blocks, options, study)
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv")
    overview = nearest_grid(images, phi.outputs[options.reference], blocks, shown, job.folder.overview_file)
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
        "block": options.block,
        "selectivity_bimodality": study.selectivity.bimodality,
        "clusters": study.clusters.figures,
        "findings": tables["findings"].reset_index().to_dict(orient="records"),
        "overview": job.folder.relative(overview),
    }
    for name, agreement in summary["neighbours"].items():
        log.info("nearest-neighbour class agreement, %s: %.3f (chance %.2f)", name, agreement, chance)
    log_findings(tables["findings"], log)
    if job.tracker is not None:
        tell_tracker(job, summary, out)
    return summary


def blocks_and_levels(backbone: DiffusionBackbone, options: RepresentOptions) -> tuple[list[str], list[int]]:
    """The blocks measured (every block of the UNet by default) and the noise levels, checked."""
    unet = getattr(backbone, "unet", None)
    blocks = list(options.blocks) or (block_names(unet) if unet is not None else [])
    check_blocks(backbone, [*blocks, options.block])
    if options.block not in blocks:
        raise ConfigError(f"task.block '{options.block}' must be one of task.blocks: {', '.join(blocks)}")
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
def phi_by_level(backbone: DiffusionBackbone, z0: Tensor, levels: list[int], noise: Tensor, blocks: list[str]) -> Phi:
    """phi_t of every image for each level t and block, of its output and its input, on the CPU."""
    phi = Phi({}, {})
    for t in levels:
        chunks = [
            represent_input_output(backbone, z0[i : i + CHUNK], t, noise, blocks) for i in range(0, len(z0), CHUNK)
        ]
        phi.inputs[t] = [torch.cat([inputs[b] for inputs, _ in chunks]).cpu() for b in range(len(blocks))]
        phi.outputs[t] = [torch.cat([outputs[b] for _, outputs in chunks]).cpu() for b in range(len(blocks))]
    return phi


def measure(phi: Phi, images: Images, blocks: list[str], levels: list[int], reference: int) -> dict[str, pd.DataFrame]:
    """1-3. Sparsity of the outputs and of the inputs, stability per block and level; neighbour
    agreement per block and level, with the pixels' and the extractor's (of the clean image) below."""
    index, columns = pd.Index(blocks, name="block"), [f"t={t}" for t in levels]

    def table(cell: Any) -> pd.DataFrame:
        return pd.DataFrame([[cell(t, b) for t in levels] for b in range(len(blocks))], index=index, columns=columns)

    sparsity = table(lambda t, b: float(participation_fraction(phi.outputs[t][b]).mean()))
    sparsity_input = table(lambda t, b: float(participation_fraction(phi.inputs[t][b]).mean()))
    stability = table(lambda t, b: float(row_cosine(phi.outputs[t][b], phi.outputs[reference][b]).mean()))
    neighbours = table(lambda t, b: neighbour_agreement(phi.outputs[t][b], images.labels)).rename_axis("representation")
    neighbours.insert(0, "clean image", float("nan"))
    for name, space in (("pixels", images.pixels), (images.extractor, images.features)):
        neighbours.loc[name] = [neighbour_agreement(space, images.labels)] + [float("nan")] * len(levels)
    return {"sparsity": sparsity, "sparsity_input": sparsity_input, "stability": stability, "neighbours": neighbours}


def study_block(
    phi: Phi, images: Images, blocks: list[str], options: RepresentOptions, shown: Tensor, out: Path
) -> BlockStudy:
    """4-6. The studied block's channel selectivity, its selective channels' top images, its K-means
    clusters (at the reference level), and Fig. 1's histograms of every block; their figures."""
    reference, labels = options.reference, images.labels.numpy()
    block_phi = phi.outputs[reference][blocks.index(options.block)].double().numpy()
    selectivity = analyses.selectivity(block_phi, labels, SHOWN, options.top_images)
    k = options.clusters or len(np.unique(labels))
    clusters = analyses.clusters(block_phi, labels, k)
    inputs, outputs = (
        [participation_fraction(means).numpy() if means.shape[1] > 1 else None for means in side[reference]]
        for side in (phi.inputs, phi.outputs)
    )
    figures.sparsity_histograms(blocks, inputs, outputs, reference, out / "sparsity_histograms.png")
    figures.selectivity_histogram(selectivity, options.block, out / "selectivity.png")
    figures.selective_channels(selectivity, shown, labels, out / "selective_channels.png")
    figures.separations(clusters, out / "separation.png")
    figures.cluster_members(clusters, shown, labels, 10, out / "clusters.png")
    return BlockStudy(selectivity, clusters, inputs, outputs)


def findings(
    phi: Phi,
    tables: dict[str, pd.DataFrame],
    images: Images,
    blocks: list[str],
    options: RepresentOptions,
    study: BlockStudy,
) -> pd.DataFrame:
    """7. Each of the paper's claims this task measures: fsa's figure, its 95 % interval (a bootstrap
    over images; Wilson's for a proportion), the rule it is judged by, and whether it holds."""
    reference, block = options.reference, options.block
    at = blocks.index(block)
    selectivity, clusters = study.selectivity, study.clusters
    inputs, outputs = study.input_sparsity, study.output_sparsity

    def with_interval(per_image: np.ndarray) -> tuple[float, list[float]]:
        return float(per_image.mean()), mean_interval(per_image)

    def sparsity_change(names: list[str]) -> tuple[float, list[float]]:
        """(output PR - input PR) per image, averaged over the named blocks whose two sides both have
        more than one channel (a single channel's ratio is always 1)."""
        both = [
            b for b, name in enumerate(blocks) if name in names and inputs[b] is not None and outputs[b] is not None
        ]
        if not both:
            return float("nan"), [float("nan"), float("nan")]
        return with_interval(np.mean([outputs[b] - inputs[b] for b in both], axis=0))

    encoder = [b for b in blocks if b.startswith("down_blocks")]
    later = [b for b in blocks if b not in encoder]
    others = [column for column in tables["stability"].columns if column != f"t={reference}"]
    steadiest = str(tables["stability"][others].mean(axis=1).idxmax())
    cosines = np.mean(
        [row_cosine(phi.outputs[int(c[2:])][at], phi.outputs[reference][at]).numpy() for c in others], axis=0
    )
    gain = (
        neighbour_matches(phi.outputs[reference][at], images.labels).double()
        - neighbour_matches(images.pixels, images.labels).double()
    ).numpy()
    shares, intervals = clusters.figures, clusters.intervals
    sparser, denser = sparsity_change(later), sparsity_change(encoder)
    cosine = with_interval(cosines)
    agreement = with_interval(gain)
    chance, top = selectivity.chance_share, selectivity.top_share_interval
    return findings_table(
        [
            Finding(
                "Fig. 1: middle and decoder blocks make their channels sparser",
                f"output PR - input PR, mean over {', '.join(later)}",
                *sparser,
                "high < 0",
                sparser[1][1] < 0,
            ),
            Finding(
                "Fig. 1: encoder blocks make their channels denser",
                "output PR - input PR, mean over the encoder blocks",
                *denser,
                "low > 0",
                denser[1][0] > 0,
            ),
            Finding(
                "Fig. 2: phi is most stable across noise levels in the middle block",
                f"{block}'s mean cosine to phi at t={reference} over the other levels (steadiest: {steadiest})",
                *cosine,
                "steadiest = mid_block",
                steadiest == "mid_block",
            ),
            Finding(
                "Fig. 3: channel selectivity is bimodal",
                f"bimodality coefficient of {block}'s channel selectivities",
                selectivity.bimodality,
                selectivity.bimodality_interval,
                "low > 5/9",
                selectivity.bimodality_interval[0] > BIMODAL,
            ),
            Finding(
                "Fig. 4: a selective channel's top images share a pattern",
                f"share of the top {options.top_images} images of the {len(selectivity.channels)} most selective "
                f"channels in their commonest class (random images: {chance:.2f})",
                selectivity.top_share,
                top,
                "low > random",
                bool(top and top[0] > chance),
            ),
            Finding(
                f"Fig. 6: K-means centroids are at least {analyses.SEPARATED:g} sd apart, every pair",
                f"share of the {clusters.k} clusters' pairs >= {analyses.SEPARATED:g} sd apart",
                shares["clusters_separated"],
                intervals["clusters_separated"],
                "value = 1",
                shares["clusters_separated"] == 1,
            ),
            Finding(
                "Fig. 6: the clusters are real: more separated than K-means makes a cloud without clusters",
                "median separation of the clusters / of K-means clusters in Gaussian clouds of phi's covariance "
                f"({shares['gaussian_median']:.2f} sd; interval: over {analyses.GAUSSIAN_DRAWS} such clouds)",
                shares["clusters_median"] / shares["gaussian_median"],
                [shares["clusters_median"] / bound for bound in reversed(intervals["gaussian_median"])],
                "low > 1",
                shares["clusters_median"] > intervals["gaussian_median"][1],
            ),
            Finding(
                "Fig. 6: classes are less separated than clusters",
                "median separation of clusters - of classes (sd)",
                shares["median_gap"],
                intervals["median_gap"],
                "low > 0",
                intervals["median_gap"][0] > 0,
            ),
            Finding(
                "Fig. 6: clusters are not the classes",
                "class purity of the clusters",
                shares["purity"],
                intervals["purity"],
                "high < 1",
                intervals["purity"][1] < 1,
            ),
            Finding(
                "Fig. 5: nearest images are semantically closer in phi than in pixels",
                f"{block}'s nearest-neighbour class agreement - the pixels'",
                *agreement,
                "low > 0",
                agreement[1][0] > 0,
            ),
        ]
    )


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
        ("noise level t", "participation ratio", "channel sparsity of each block's output (lower: sparser)"),
        out / "sparsity.png",
    )
    plot_lines(
        levels,
        rows(tables["sparsity_input"]),
        ("noise level t", "participation ratio", "channel sparsity of each block's input (lower: sparser)"),
        out / "sparsity_input.png",
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


def shown_images(images: Images, backbone: DiffusionBackbone) -> Tensor:
    """The images as pictures show them: a latent model's decoded, a pixel model's as they are."""
    device = next(backbone.parameters()).device
    with torch.no_grad():
        return backbone.decode(images.z0.to(device)).cpu() if backbone.latent_shape[0] != 1 else images.z0.cpu()


def nearest_grid(images: Images, phi: list[Tensor], blocks: list[str], shown: Tensor, path: Path) -> Path:
    """The first images of different classes (rows) and their nearest other image under pixels, the
    extractor and each block's phi (columns), its class under each."""
    labels = images.labels
    queries = [int((labels == c).nonzero()[0]) for c in labels.unique()[:SHOWN]]
    spaces = [("pixels", images.pixels), (images.extractor, images.features), *zip(blocks, phi, strict=True)]
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
    job.tracker.summarise(STREAM, {f"clusters/{name}": value for name, value in summary["clusters"].items()})
