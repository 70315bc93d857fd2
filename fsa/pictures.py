"""Pictures every part of fsa draws: the palette, tensors as images and PNGs, image sheets, line plots.

Sheets (`draw_grid`) are rows of images under two-line column headings, each with a caption: the
`overview.png` of every task is one. Small images are upscaled by an integer factor without blurring,
so 16 px digits stay crisp. Plots use the Okabe-Ito palette.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import LogFormatter
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion, reddish purple,
# sky blue, yellow, black; distinguishable under the common forms of colour blindness.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
CELL = 96  # pixels per image in a sheet, at least
LABEL = 14  # pixels of a line of text: one under each image, two above each column
HEADER = 2 * LABEL
GAP = 4  # white pixels at least between neighbouring images


def to_uint8(image: Tensor) -> np.ndarray:
    """(3, H, W) in about [-1, 1] -> (H, W, 3) uint8, as saving a PNG does (round, then clamp)."""
    pixels = ((image.detach().float().cpu() + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()


def picture(image: Tensor) -> Image.Image:
    """(C, H, W) in about [-1, 1], grey (C = 1) or colour, -> an RGB picture, as a PNG of it would be."""
    return Image.fromarray(to_uint8(image.expand(3, -1, -1) if image.shape[0] == 1 else image))


def save_png(image: Tensor, path: Path) -> Path:
    """(3, H, W) in about [-1, 1] as an 8-bit PNG at `path` (its folder made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path


def read_image(path: Path) -> Image.Image:
    """An image file as an RGB picture, read into memory (the file closed)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def _tile(source: Path | Image.Image, size: int) -> Image.Image:
    """The image scaled to fit `size` (an integer factor, nearest neighbour, for a small one)."""
    if isinstance(source, Path):
        with Image.open(source) as opened:
            image = opened.convert("RGB")
    else:
        image = source.convert("RGB")
    if max(image.size) < size:
        factor = size // max(image.size)
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image.resize((size, size * image.height // image.width), Image.Resampling.BICUBIC)


Cell = tuple[Path | Image.Image | None, str]  # an image (a file or a picture; None: empty) and its caption


def draw_grid(columns: list[tuple[str, str]], rows: list[list[Cell]], path: Path, footer: Sequence[str] = ()) -> Path:
    """Rows of images under two-line column headings (the first line only where it changes), each
    image with its caption under it, and `footer` lines of text under the grid."""
    font = ImageFont.load_default()
    width, height = CELL * len(columns), HEADER + (CELL + LABEL) * len(rows) + LABEL * len(footer)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (first, second) in enumerate(columns):
        if c == 0 or columns[c - 1][0] != first:  # a group's name once, over its first column
            draw.text((c * CELL + 2, 1), first, fill="black", font=font)
        draw.text((c * CELL + 2, LABEL + 1), second, fill="black", font=font)
    for r, cells in enumerate(rows):
        top = HEADER + r * (CELL + LABEL)
        for c, (image, caption) in enumerate(cells):
            if image is not None and (not isinstance(image, Path) or image.exists()):
                tile = _tile(image, CELL - GAP)
                sheet.paste(tile, (c * CELL + (CELL - tile.width) // 2, top + (CELL - tile.height) // 2))
            draw.text((c * CELL + 2, top + CELL), caption, fill="black", font=font)
    for i, line in enumerate(footer):
        draw.text((2, HEADER + (CELL + LABEL) * len(rows) + i * LABEL + 1), line, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def log_scale(axes: Any, which: str = "y") -> None:
    """A log scale on one axis with plain tick labels ("60", "100"): matplotlib's default sets them as
    mathtext (6x10^1), whose parsing took most of a multi-panel figure's seconds."""
    getattr(axes, f"set_{which}scale")("log")
    axis = axes.yaxis if which == "y" else axes.xaxis
    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))


def plot_lines(
    x: Sequence[float],
    lines: dict[str, Sequence[float]],
    labels: tuple[str, str, str],
    path: Path,
    references: dict[str, float] | None = None,
    log_y: bool = False,
) -> Path:
    """One line per entry of `lines` against `x`, with `labels` (x axis, y axis, title), horizontal
    `references` (dotted for "chance", dashed otherwise) and a legend when there is more than one line."""
    figure, axes = plt.subplots(figsize=(6, 3.6))
    for i, (name, values) in enumerate(lines.items()):
        axes.plot(x, list(values), "o-", ms=3, color=OKABE_ITO[i % len(OKABE_ITO)], label=name)
    for j, (name, value) in enumerate((references or {}).items()):
        chance = name == "chance"
        colour = "#555555" if chance else OKABE_ITO[-1 - j]
        axes.axhline(value, ls=":" if chance else "--", color=colour, label=f"{name} ({value:.2f})")
    if log_y:
        log_scale(axes)
    axes.set_xlabel(labels[0])
    axes.set_ylabel(labels[1])
    axes.set_title(labels[2])
    axes.grid(alpha=0.3, which="both")
    if len(lines) + len(references or {}) > 1:
        axes.legend(fontsize=7, ncol=2)
    return save_plot(figure, path)


def save_plot(figure: plt.Figure, path: Path) -> Path:
    """A task's plot as a PNG at `path` (its folder made), laid out tight; the figure is closed."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
