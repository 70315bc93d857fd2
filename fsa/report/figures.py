"""Drawing the report's figures: each saved as a PNG (for screens and the report page) and an SVG
(for papers: vector lines, text kept as text so it stays editable and searchable, images embedded
at full resolution).

Colours come from the Okabe-Ito palette, which stays distinguishable under the common forms of
colour blindness; lines also differ in style, so no reading depends on colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator
from PIL import Image

from fsa.pictures import OKABE_ITO, log_scale
from fsa.report.layouts import RING, ImageTable, PanelTable
from fsa.report.runs import variant_order

PALETTE = OKABE_ITO
MIN_PIXELS = 128  # smaller images are upscaled (nearest neighbour) to at least this size
FONT = 9
VECTOR = "svg"


@dataclass(frozen=True)
class Figure:
    """A written figure (its PNG; the SVG lies beside it), with what it shows and its paper counterpart."""

    path: Path
    kind: str  # sweep | boxplot | gradients | retention | runs | best | panels | curves
    title: str
    paper: str  # e.g. "Figs. 3-4", or "" where the paper has no such figure

    @property
    def vector(self) -> Path:
        return self.path.with_suffix(f".{VECTOR}")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def save_figure(figure: plt.Figure, path: Path) -> Path:
    """`path` (.png) and the same figure as an SVG beside it; returns the PNG's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, not outlines
        figure.savefig(path.with_suffix(f".{VECTOR}"), bbox_inches="tight")
    plt.close(figure)
    return path


def load_image(path: Path, min_pixels: int = MIN_PIXELS) -> np.ndarray | None:
    """The image as an array, upscaled by an integer factor with nearest neighbour so 16 px digits stay crisp."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError):
        return None
    image = image.convert("L") if image.mode in ("L", "1", "I", "I;16") else image.convert("RGB")
    factor = max(1, math.ceil(min_pixels / max(image.size)))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return np.asarray(image)


def image_axes(rows: int, columns: int, width: float, height: float) -> tuple[plt.Figure, np.ndarray]:
    """A rows x columns grid of axes for images (no ticks), each `width` x `height` inches, a title's room on top."""
    figure, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return figure, axes


def plot_image_table(table: ImageTable, path: Path) -> Path:
    """An image figure laid out as `table` says: column headings on top, row labels on the left, the
    distance under each image; a cell without an image shows its text."""
    figure, axes = image_axes(len(table.rows), len(table.columns), 1.7, 2.0)
    for r, (label, cells) in enumerate(table.rows):
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            pixels = load_image(cell.image) if cell.image is not None else None
            if pixels is not None:
                ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=255)
            else:
                text = cell.text or ("missing" if cell.image is not None else "")
                ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=FONT - 1, transform=ax.transAxes, wrap=True)
            ax.set_xlabel(cell.caption, fontsize=FONT)
            if r == 0:
                ax.set_title(table.columns[c], fontsize=FONT - 1)
            if c == 0:
                ax.set_ylabel(label[:24], fontsize=FONT)
    figure.suptitle(f"{table.title}\nunder each image: its squared feature distance to the target", fontsize=FONT + 1)
    figure.tight_layout()
    return save_figure(figure, path)


# Where the samples go around the centre of a 3 x 3 panel: clockwise from the top left.
RING_POSITIONS = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))


def mosaic(centre: np.ndarray | None, around: Sequence[np.ndarray | None], gap: int = 4) -> np.ndarray:
    """A 3 x 3 tile image (RGB, uint8): `centre` in the middle, framed, `around` on the ring; a
    missing image is a grey tile."""
    tiles = [t for t in (centre, *around) if t is not None]
    side = max(max(t.shape[:2]) for t in tiles) if tiles else MIN_PIXELS
    canvas = np.full((3 * side + 2 * gap, 3 * side + 2 * gap, 3), 255, dtype=np.uint8)

    def put(tile: np.ndarray | None, row: int, column: int) -> None:
        y, x = row * (side + gap), column * (side + gap)
        if tile is None:
            canvas[y : y + side, x : x + side] = 200
            return
        rgb = np.repeat(tile[..., None], 3, axis=2) if tile.ndim == 2 else tile
        canvas[y : y + rgb.shape[0], x : x + rgb.shape[1]] = rgb

    for (row, column), tile in zip(RING_POSITIONS, [*around, *[None] * (RING - len(around))], strict=True):
        put(tile, row, column)
    put(centre, 1, 1)
    frame = np.array([int(colour(1)[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
    low, high = side + gap - 2, 2 * side + gap + 2  # a frame in the gap around the target
    canvas[low:high, low : low + 2] = canvas[low:high, high - 2 : high] = frame
    canvas[low : low + 2, low:high] = canvas[high - 2 : high, low:high] = frame
    return canvas


def plot_panels(table: PanelTable, path: Path) -> Path:
    """Kadkhodaie et al.'s Fig. 7: for each target (columns) and variant (rows), the target framed at
    the centre and the samples around it, the oracle's agreement and mean distance under each panel."""
    figure, axes = image_axes(len(table.rows), len(table.columns), 2.6, 2.9)
    for r, (label, panels) in enumerate(table.rows):
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            centre = load_image(panel.target.image) if panel.target.image is not None else None
            ax.imshow(mosaic(centre, [load_image(cell.image) for cell in panel.around if cell.image is not None]))
            ax.set_xlabel(panel.caption, fontsize=FONT - 1)
            if r == 0:
                ax.set_title(table.columns[c][:24], fontsize=FONT)
            if c == 0:
                ax.set_ylabel(label, fontsize=FONT + 1)
    figure.suptitle(
        f"{table.title}\ncentre (framed): the target; around it: the final images of {RING} seeds", fontsize=FONT + 1
    )
    figure.tight_layout()
    return save_figure(figure, path)


def plot_boxplot(
    key: str, groups: dict[str, list[float]], path: Path, means: dict[str, list[float] | None] | None = None
) -> Path:
    """App. B's box plot (the paper's Fig. 10): best distance per swept value, every sample a point; beside
    each box, the mean with its 95 % interval (a bootstrap over targets) where `means` gives one."""
    labels = [value for value, data in groups.items() if data]
    data = [groups[value] for value in labels]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * len(labels)), 3.6))
    axes.boxplot(data, showfliers=False, medianprops={"color": colour(1), "linewidth": 2})
    axes.set_xticks(range(1, len(labels) + 1), labels)
    jitter = np.random.default_rng(0)
    for position, values in enumerate(data, start=1):
        axes.scatter(position + jitter.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7, color=colour(0))
    shown = False
    for position, value in enumerate(labels, start=1):
        interval = (means or {}).get(value)
        if interval:
            mean = float(np.mean(groups[value]))
            axes.errorbar(
                position + 0.3,
                mean,
                yerr=[[mean - interval[0]], [interval[1] - mean]],
                fmt="D",
                ms=4,
                color=colour(2),
                capsize=3,
                label=None if shown else "mean, 95 % interval over targets",
            )
            shown = True
    flat = [v for values in data for v in values]
    if min(flat) > 0 and max(flat) / min(flat) > 50:
        log_scale(axes)
    axes.set_xlabel(key, fontsize=FONT + 1)
    axes.set_ylabel("best squared feature distance", fontsize=FONT + 1)
    axes.set_title(f"best distance per {key} (guided, {len(flat)} samples)", fontsize=FONT + 1)
    axes.grid(axis="y", alpha=0.3)
    if shown:
        axes.legend(fontsize=FONT - 1, loc="best")
    return save_figure(figure, path)


def best_so_far(table: pd.DataFrame) -> pd.DataFrame:
    """Per sample and iteration: the current (pre-guidance) distance and the lowest distance seen so far,
    post-guidance checks included (they are best-image candidates too)."""
    post = table["phase"] == "post" if "phase" in table.columns else pd.Series(False, index=table.index)
    ordered = table.assign(_post=post.astype(int))
    ordered = ordered.sort_values(["target", "sample", "iteration", "_post"], kind="stable")
    ordered["best"] = ordered.groupby(["target", "sample"], sort=False)["distance"].cummin()
    best = ordered.groupby(["target", "sample", "iteration"], sort=False)["best"].last()
    current = ordered[ordered["_post"] == 0].groupby(["target", "sample", "iteration"], sort=False)["distance"].first()
    return pd.DataFrame({"current": current, "best": best}).reset_index()


def plot_retention(table: pd.DataFrame, path: Path, kind: str = "final") -> Path | None:
    """The retention heatmap: runs (extractors) as rows, attributes as columns, each cell's value and
    95 % interval written in it; 1 (kept) dark purple, 0 (ignored, as unguided) white, below 0 orange."""
    table = table[table["kind"] == kind]
    if table.empty:
        return None
    runs, attributes = list(dict.fromkeys(table["run"])), list(dict.fromkeys(table["attribute"]))
    cells = table.set_index(["run", "attribute"])
    values = np.array([[cells["value"].get((r, a), np.nan) for a in attributes] for r in runs], dtype=float)
    figure, axes = plt.subplots(figsize=(1.0 + 1.05 * len(attributes), 0.9 + 0.55 * len(runs)))
    axes.imshow(np.clip(values, -1, 1), cmap="PuOr", vmin=-1, vmax=1, aspect="auto")
    for i, r in enumerate(runs):
        for j, a in enumerate(attributes):
            if (r, a) in cells.index:
                low, high = cells.loc[(r, a), "low"], cells.loc[(r, a), "high"]
                text = f"{values[i, j]:.2f}\n[{low:.2f}, {high:.2f}]"
                shade = "white" if abs(values[i, j]) > 0.6 else "black"
                axes.text(j, i, text, ha="center", va="center", fontsize=FONT - 2, color=shade)
    axes.set_xticks(range(len(attributes)), attributes, rotation=30, ha="right", fontsize=FONT)
    axes.set_yticks(range(len(runs)), [r[:40] for r in runs], fontsize=FONT)
    axes.set_title(f"retention per attribute ({kind} images): 1 kept, 0 as unguided", fontsize=FONT + 1)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_curves(title: str, table: pd.DataFrame, path: Path) -> Path | None:
    """Per-step distance curves, one panel per target, log y: does guidance keep lowering the distance?"""
    if table.empty:
        return None
    curves = best_so_far(table)
    targets = list(dict.fromkeys(curves["target"]))
    columns = min(4, len(targets))
    rows = math.ceil(len(targets) / columns)
    # At least 6.4 in wide (640 px): one target's panel is readable without zooming.
    width = max(6.4, 3.6 * columns)
    height = 3.0 * rows + 1.2
    figure, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False)
    for ax, target in zip(axes.flat, targets, strict=False):
        for sample, curve in curves[curves["target"] == target].groupby("sample"):
            line = colour(int(sample))
            ax.plot(curve["iteration"], curve["current"], color=line, lw=0.8, alpha=0.7, label=f"sample {int(sample)}")
            ax.plot(curve["iteration"], curve["best"], color=line, lw=1.6, ls="--")
        log_scale(ax)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
        ax.set_title(str(target), fontsize=FONT)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(targets) :]:
        ax.axis("off")
    # Once for all panels (fewer texts to lay out), the x label just above the legend.
    figure.supxlabel("guided iteration", fontsize=FONT, y=0.8 / height, va="bottom")
    figure.supylabel("squared feature distance", fontsize=FONT)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    # The legend, titled with how to read the lines, below the panels: never over the data.
    figure.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(len(labels), 6),
        fontsize=FONT - 1,
        frameon=False,
        title=CURVES_KEY,
        title_fontsize=FONT - 1,
    )
    figure.suptitle(title, fontsize=FONT + 1)
    figure.tight_layout(rect=(0, 1.0 / height, 1, 1))
    return save_figure(figure, path)


CURVES_KEY = (
    "solid: the current (pre-guidance) distance; dashed: the best so far, which counts each iteration's "
    "post-guidance check too,\nso it can lie below the current one from the first iteration on"
)


def clip_lines(values: np.ndarray, c: float, mode: str) -> list[float]:
    """Where the clipping acts (Fig. 2), as `clip_gradient` computes it: mean and mean +- c std
    (mode "mean"), +- c std around 0 ("zero"), nothing ("off" or c <= 0); std is the unbiased one."""
    if mode == "off" or c <= 0 or values.size < 2:
        return []
    flat = values.astype(np.float64).ravel()
    std = float(flat.std(ddof=1))
    if mode == "zero":
        return [-c * std, c * std]
    mean = float(flat.mean())
    return [mean, mean - c * std, mean + c * std]


def load_gradients(path: Path) -> dict[str, Any] | None:
    """gradients.pt, or None if it cannot be read; torch is imported only when a run recorded gradients."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file must not stop the report
        return None
    if not isinstance(data, dict) or "values" not in data:
        return None
    raw = data["values"]
    values = raw.detach().float().cpu().numpy() if hasattr(raw, "detach") else np.asarray(raw, dtype=np.float32)
    if values.ndim < 2 or values.shape[0] == 0 or values.shape[1] == 0:
        return None
    return {**data, "values": values}


def plot_gradients(runs: Sequence[tuple[str, dict[str, Any]]], path: Path) -> Path | None:
    """Fig. 2: one row per run (an extractor), one panel per recorded step: the distribution of the
    normalised gradient of the run's first sample, its mean dotted and the clip bounds +- c std solid,
    as the paper draws them."""
    if not runs:
        return None
    columns = max(len(gradients["values"]) for _, gradients in runs)
    figure, axes = plt.subplots(len(runs), columns, figsize=(2.6 * columns, 2.4 * len(runs) + 0.6), squeeze=False)
    for r, (label, gradients) in enumerate(runs):
        values = gradients["values"]
        c, mode = float(gradients.get("clip_c") or 0.0), str(gradients.get("clip_mode") or "off")
        steps, ts = list(gradients.get("step") or []), list(gradients.get("t") or [])
        for i in range(columns):
            ax = axes[r, i]
            if i >= len(values):
                ax.axis("off")
                continue
            flat = values[i, 0].ravel()
            ax.hist(flat, bins=100, color=colour(r), alpha=0.85)
            lines = clip_lines(flat, c, mode)
            for j, x in enumerate(lines):
                centre = mode == "mean" and j == 0
                ax.axvline(x, color="black", ls=":" if centre else "-", lw=1.2)
            step = steps[i] if i < len(steps) else i
            t = f"t = {ts[i]}" if i < len(ts) else f"step {step}"
            clipped = f"\n{np.mean((flat < lines[-2]) | (flat > lines[-1])):.1%} clipped" if lines else ""
            ax.set_title(f"{t}{clipped}", fontsize=FONT)
            ax.tick_params(labelsize=FONT - 2)
            if r == len(runs) - 1:
                ax.set_xlabel("normalised gradient value", fontsize=FONT - 1)
            if i == 0:
                ax.text(0.02, 0.98, "count", transform=ax.transAxes, va="top", fontsize=FONT - 2)
        bounds = {"mean": f"mean ± {c:g} std", "zero": f"0 ± {c:g} std"}.get(mode, "no clipping")
        axes[r, 0].set_ylabel(f"{label}\n({bounds})", fontsize=FONT)
    figure.suptitle("normalised gradient at k = 0 before clipping: mean dotted, clip bounds solid", fontsize=FONT + 1)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_transfer(title: str, table: pd.DataFrame, path: Path, kind: str = "best") -> Path | None:
    """Does the match transfer? One row per check (each judge; the guide's distance and feature movement
    after all small changes), one marker per variant at its ratio with its 95 % interval as an error
    bar, on a log axis with 1 (as unguided; as the target image) marked."""
    checks = [c for c in dict.fromkeys(table["check"]) if c.startswith("judge") or c.endswith("all changes")]
    chosen = table[(table["kind"] == kind) & table["check"].isin(checks)]
    if chosen.empty:
        return None
    variants = sorted(dict.fromkeys(chosen["variant"]), key=variant_order)
    figure, axes = plt.subplots(figsize=(7.0, 1.2 + 0.5 * len(checks)))
    markers = "o^sDvP"
    for i, variant in enumerate(variants):
        rows = chosen[chosen["variant"] == variant].set_index("check")
        ys = [len(checks) - 1 - checks.index(c) + 0.12 * (i - (len(variants) - 1) / 2) for c in rows.index]
        low = (rows["value"] - rows["low"].fillna(rows["value"])).clip(lower=0)
        high = (rows["high"].fillna(rows["value"]) - rows["value"]).clip(lower=0)
        axes.errorbar(
            rows["value"],
            ys,
            xerr=[low, high],
            fmt=markers[i % len(markers)],
            color=colour(i),
            ms=5,
            capsize=2,
            label=variant,
        )
    axes.axvline(1.0, color="#555555", ls=":", lw=1)
    log_scale(axes, "x")
    axes.set_yticks(range(len(checks)), list(reversed(checks)), fontsize=FONT)
    axes.set_xlabel(
        "ratio (log): judges over the unguided images'; after changes over the target image's", fontsize=FONT
    )
    axes.set_title(f"{title}: does the match transfer? ({kind} images, 95 % intervals)", fontsize=FONT + 1)
    axes.legend(fontsize=FONT - 1, loc="best")
    axes.grid(axis="x", alpha=0.3, which="both")
    return save_figure(figure, path)
