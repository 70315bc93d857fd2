"""One picture of a run: `overview.png` in the run folder, the first thing to open after a run.

Targets as rows: the actual image, then the best and the final image of each sample, then the same
for each baseline (the same seeds), with each image's squared feature distance under it. Small
images are upscaled by an integer factor without blurring, so 16 px digits stay crisp.
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from fsa.tracking.run_folder import GUIDED, RunFolder, SampleResult

CELL = 96  # pixels per image, at least
LABEL = 14  # pixels of a line of text: one under each image, two above each column (variant; sample)
HEADER = 2 * LABEL
GAP = 4  # white pixels at least between neighbouring images


def _tile(path: Path, size: int) -> Image.Image:
    """The image scaled to fit `size` (an integer factor, nearest neighbour, for a small one)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    if max(image.size) < size:
        factor = size // max(image.size)
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image.resize((size, size * image.height // image.width), Image.Resampling.BICUBIC)


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
    font = ImageFont.load_default()
    width, height = CELL * len(columns), HEADER + (CELL + LABEL) * len(by_target)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (first, second) in enumerate(columns):
        if c == 0 or columns[c - 1][0] != first:  # the variant once, over its first column
            draw.text((c * CELL + 2, 1), first, fill="black", font=font)
        draw.text((c * CELL + 2, LABEL + 1), second, fill="black", font=font)
    for r, index in enumerate(sorted(by_target)):
        top = HEADER + r * (CELL + LABEL)
        records = by_target[index]
        first = records[GUIDED][0]
        cells: list[tuple[Path, str]] = []
        target = folder.target_image(GUIDED, index, first.target)
        cells.append((target, first.target[:14]))
        for variant in variants:
            for record in sorted(records.get(variant, []), key=lambda r: r.sample):
                cells.append((folder.path(record.best_image), f"d={record.best_distance:.3g}"))
                cells.append((folder.path(record.final_image), f"d={record.final_distance:.3g}"))
        for c, (image_path, caption) in enumerate(cells):
            if image_path.exists():
                tile = _tile(image_path, CELL - GAP)
                sheet.paste(tile, (c * CELL + (CELL - tile.width) // 2, top + (CELL - tile.height) // 2))
            draw.text((c * CELL + 2, top + CELL), caption, fill="black", font=font)
    sheet.save(path)
    return path
