"""One picture of a run: `overview.png` in the run folder, the first thing to open after a run.

Targets as rows: the actual image, then the best and the final image of each sample, then the same
for each baseline (the same seeds), with each image's squared feature distance under it. Small
images are upscaled by an integer factor without blurring, so 16 px digits stay crisp.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from fsa.tracking.run_folder import GUIDED, RunFolder, SampleResult

# Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion, reddish purple,
# sky blue, yellow, black; distinguishable under the common forms of colour blindness. fsa's plots use it.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
CELL = 96  # pixels per image, at least
LABEL = 14  # pixels of a line of text: one under each image, two above each column (variant; sample)
HEADER = 2 * LABEL
GAP = 4  # white pixels at least between neighbouring images


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


def draw_grid(columns: list[tuple[str, str]], rows: list[list[Cell]], path: Path) -> Path:
    """Rows of images under two-line column headings (the first line only where it changes), each
    image with its caption under it; small images are upscaled by an integer factor, without blurring."""
    font = ImageFont.load_default()
    width, height = CELL * len(columns), HEADER + (CELL + LABEL) * len(rows)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def write_overview(folder: RunFolder, samples: dict[str, list[SampleResult]], path: Path) -> Path:
    """Draw every target of the run (rows) against its images (columns) into `path`."""
    variants = [GUIDED, *(v for v in samples if v != GUIDED)]
    by_target: dict[int, dict[str, list[SampleResult]]] = {}
    for variant in variants:
        for record in samples[variant]:
            by_target.setdefault(record.target_index, {}).setdefault(variant, []).append(record)
    sample_ids = sorted({record.sample for record in samples[GUIDED]})
    columns = [("target", "")]
    for variant in variants:
        columns += [(variant, f"s{i} {kind}") for i in sample_ids for kind in ("best", "final")]
    rows = []
    for index in sorted(by_target):
        records = by_target[index]
        first = records[GUIDED][0]
        cells: list[Cell] = [(folder.target_image(GUIDED, index, first.target), first.target[:14])]
        for variant in variants:
            for record in sorted(records.get(variant, []), key=lambda r: r.sample):
                cells.append((folder.path(record.best_image), f"d={record.best_distance:.3g}"))
                cells.append((folder.path(record.final_image), f"d={record.final_distance:.3g}"))
        rows.append(cells)
    return draw_grid(columns, rows, path)
