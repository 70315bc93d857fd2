"""The guide task's `overview.png`, the first thing to open after a run: targets as rows, the actual
image, then the best and the final image of each sample, then the same for each baseline (the same
seeds), with each image's squared feature distance under it; under the grid, a line per variant on
whether its match transfers (the judges, the robustness check)."""

from pathlib import Path
from typing import Any

from fsa.evaluation import at
from fsa.guidance.options import GUIDED
from fsa.pictures import Cell, draw_grid
from fsa.tracking.run_folder import RunFolder, SampleResult


def write_overview(
    folder: RunFolder,
    samples: dict[str, list[SampleResult]],
    path: Path,
    judges: dict[str, Any] | None = None,
    robustness: dict[str, Any] | None = None,
) -> Path:
    """Draw every target of the run (rows) against its images (columns) into `path`, with the judges'
    and the robustness check's figures of each variant's best images under it."""
    variants = [GUIDED, *(v for v in samples if v != GUIDED)]
    by_target: dict[int, dict[str, list[SampleResult]]] = {}
    for variant in variants:
        for record in samples[variant]:
            by_target.setdefault(record.target_index, {}).setdefault(variant, []).append(record)
    sample_ids = sorted({record.sample for record in samples[GUIDED]})
    columns = [("target", "")]
    for variant in variants:
        columns += [(variant, f"sample {i} {kind}") for i in sample_ids for kind in ("best", "final")]
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
    return draw_grid(columns, rows, path, transfer_lines(variants, judges, robustness))


def transfer_lines(variants: list[str], judges: dict[str, Any] | None, robustness: dict[str, Any] | None) -> list[str]:
    """One line per variant: each judge's distance over the unguided images' and the guide's distance
    after small changes over the target image's (best images)."""
    lines = []
    for variant in variants:
        parts = [
            f"{name} {entry['ratio']:.2g}"
            for name, by_variant in (judges or {}).items()
            if (entry := at(by_variant, variant, "best")).get("ratio") is not None
        ]
        changed = at(robustness, variant, "best", "all")
        text = f"{variant}: judges' distance / unguided's: {', '.join(parts)}" if parts else f"{variant}:"
        if changed:
            text += f"; after small changes, guide distance / target's: {changed['distance']['value']:.2g}"
        if parts or changed:
            lines.append(text)
    return lines
