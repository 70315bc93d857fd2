"""The represent task's figures of the studied block: Kadkhodaie et al.'s Figs. 1, 3, 4 and 6 for
fsa's models. Pure drawing: arrays and images in, PNG files out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from torch import Tensor

from fsa.pictures import OKABE_ITO, draw_grid, picture, save_plot
from fsa.representation.analyses import SEPARATED, Clusters, Selectivity

INPUT, OUTPUT = OKABE_ITO[1], OKABE_ITO[2]  # the paper's Fig. 1 colours: orange input, green output


def sparsity_histograms(
    blocks: Sequence[str],
    inputs: Sequence[np.ndarray | None],
    outputs: Sequence[np.ndarray | None],
    t: int,
    path: Path,
) -> Path:
    """Fig. 1: per block, the histograms over images of the participation ratio of its input channels
    and of its output channels (a side with one channel is left out: its ratio is always 1)."""
    figure, axes = plt.subplots(1, len(blocks), figsize=(2.1 * len(blocks), 2.6), sharey=True, squeeze=False)
    bins = np.linspace(0, 1, 26)
    for axis, block, into, out in zip(axes[0], blocks, inputs, outputs, strict=True):
        for values, colour, name in ((into, INPUT, "input"), (out, OUTPUT, "output")):
            if values is not None:
                axis.hist(values, bins=bins, color=colour, alpha=0.6, label=name)
        axis.set_title(block, fontsize=8)
        axis.set_xlabel("participation ratio", fontsize=7)
        axis.tick_params(labelsize=7)
    axes[0][0].set_ylabel("images")
    axes[0][0].legend(fontsize=7)
    figure.suptitle(f"channel sparsity of each block's input and output at t={t} (lower: sparser)", fontsize=9)
    return save_plot(figure, path)


def selectivity_histogram(study: Selectivity, block: str, path: Path) -> Path:
    """Fig. 3, left: the distribution over channels of their selectivity, with its bimodality coefficient."""
    figure, axis = plt.subplots(figsize=(6, 3.4))
    values = study.per_channel[np.isfinite(study.per_channel)]
    axis.hist(values, bins=np.linspace(0, 1, 26), color=OKABE_ITO[0])
    low, high = study.bimodality_interval
    axis.set_title(
        f"{block}: selectivity of its {len(values)} active channels\n"
        f"bimodality coefficient {study.bimodality:.2f} [{low:.2f}, {high:.2f}] (above 0.56: two modes)",
        fontsize=9,
    )
    axis.set_xlabel("participation ratio over images (low: selective)")
    axis.set_ylabel("channels")
    return save_plot(figure, path)


def selective_channels(study: Selectivity, shown: Tensor, labels: np.ndarray, path: Path) -> Path:
    """Fig. 4: for each of the most selective channels (rows), the images that activate it most."""
    k = study.top.shape[1]
    rows = [[(picture(shown[i]), f"class {labels[i]}") for i in row] for row in study.top]
    columns = [("top images", f"#{j + 1}") for j in range(k)]
    footer = [
        f"row {r}: channel {c}, participation ratio {study.per_channel[c]:.3f}" for r, c in enumerate(study.channels)
    ]
    return draw_grid(columns, rows, path, footer)


def separations(study: Clusters, path: Path) -> Path:
    """Fig. 6, top: for each pair of clusters (and of classes), the distance between the centroids
    against the standard deviation along the line joining them; above the line: well separated."""
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.6), sharey=True)
    for axis, values, name in (
        (axes[0], study.cluster_separations, f"K-means clusters (k={study.k})"),
        (axes[1], study.class_separations, "classes"),
    ):
        axis.hist(values, bins=20, color=OKABE_ITO[0] if name.startswith("K") else OKABE_ITO[1])
        axis.axvline(SEPARATED, ls="--", color="#555555", label=f"{SEPARATED:g} standard deviations")
        share = float((values >= SEPARATED).mean())
        axis.set_title(f"{name}: {share:.0%} of pairs >= {SEPARATED:g} sd apart", fontsize=9)
        axis.set_xlabel("centroid distance / sd along the line joining them")
    axes[0].set_ylabel("pairs")
    axes[0].legend(fontsize=7)
    return save_plot(figure, path)


def cluster_members(study: Clusters, shown: Tensor, labels: np.ndarray, per_row: int, path: Path) -> Path:
    """Fig. 6, bottom: each cluster (a row) by its first members, each with its class."""
    rows = []
    for cluster in range(study.k):
        members = np.flatnonzero(study.assignment == cluster)[:per_row]
        rows.append([(picture(shown[i]), f"class {labels[i]}") for i in members])
    columns = [("cluster members", f"#{j + 1}") for j in range(per_row)]
    footer = [f"row {c}: cluster {c}, {int((study.assignment == c).sum())} images" for c in range(study.k)]
    return draw_grid(columns, rows, path, footer)
