"""What goes where in the paper's image figures, as data: rows, columns, and what each cell shows.

Kept apart from the drawing (`figures.py`) so tests can check a figure's layout from the runs
alone. Rows are targets, in the order the runs gave them; the first column is the target as given
(its actual image, or the caption's text), the others hold generated images with the squared
feature distance to the target under each, as in the paper:

- `final_and_best` (Figs. 3-4): each run's final and best image;
- `best_with_baselines` (Figs. 5-7): each run's best image, then the baselines' best images for
  the same seeds (fsa's counterpart of the paper's RCDM columns);
- `by_swept_value` (Figs. 8, 11-12): the best image of each run for every value of a swept key,
  the same targets and seeds in every column group;
- `ring_panels` (Kadkhodaie et al., Fig. 7): per target and variant, the target at the centre and
  the final images of eight samples around it.

The paper's "runs" of an image are fsa's samples: run i is sample i - 1, seed `seed + i - 1`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fsa.report.runs import Run, run_value, value_order
from fsa.tracking.run_folder import GUIDED, SampleResult


@dataclass(frozen=True)
class Cell:
    """An image (or, without one, a text such as a caption or "failed") and the line under it."""

    image: Path | None = None
    text: str = ""
    caption: str = ""


@dataclass
class ImageTable:
    """A figure of images: `rows` are (row label, one cell per column)."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)


def distance_caption(distance: float) -> str:
    return f"{distance:.4g}"


def run_header(record: SampleResult) -> str:
    return f"sample {record.sample} (seed {record.seed})"


def best_cell(run: Run, record: SampleResult) -> Cell:
    return Cell(image=run.folder.path(record.best_image), caption=distance_caption(record.best_distance))


def target_cell(run: Run, variant: str, record: SampleResult) -> Cell:
    """The actual image the target came from, or the target's name (a caption) where there is none."""
    image = run.folder.target_image(variant, record.target_index, record.target)
    if image.exists():
        label = "" if record.target_label is None else f"class {record.target_label}"
        return Cell(image=image, caption=label)
    return Cell(text=textwrap.fill(record.target, 22), caption="(no image)")


def by_target(records: Sequence[SampleResult]) -> dict[int, list[SampleResult]]:
    """Records grouped by target, targets in run order, samples in order."""
    grouped: dict[int, list[SampleResult]] = {}
    for record in sorted(records, key=lambda r: (r.target_index, r.sample)):
        grouped.setdefault(record.target_index, []).append(record)
    return grouped


def final_and_best(run: Run, title: str) -> ImageTable | None:
    """Figs. 3-4: actual image | final and best image of each run, distance under each."""
    grouped = by_target(run.samples(GUIDED))
    if not grouped:
        return None
    first = next(iter(grouped.values()))
    columns = ["actual image"] + [f"{run_header(r)}\n{kind}" for r in first for kind in ("final", "best")]
    table = ImageTable(title, columns)
    for records in grouped.values():
        cells = [target_cell(run, GUIDED, records[0])]
        for r in records:
            cells.append(Cell(image=run.folder.path(r.final_image), caption=distance_caption(r.final_distance)))
            cells.append(best_cell(run, r))
        table.rows.append((records[0].target, cells))
    return table


def best_with_baselines(run: Run, title: str) -> ImageTable | None:
    """Figs. 5-7: actual image | best image of each run, then each baseline's best for the same seeds."""
    variants = run.variants()
    grouped = {variant: by_target(run.samples(variant)) for variant in variants}
    if not grouped[GUIDED] or len(variants) == 1:  # no baseline: nothing to set the guided images against
        return None
    first = next(iter(grouped[GUIDED].values()))
    columns = ["actual image"]
    for variant in variants:
        prefix = "fsa" if variant == GUIDED else variant
        columns += [f"{prefix}\n{run_header(r)}" for r in first]
    table = ImageTable(title, columns)
    for index, records in grouped[GUIDED].items():
        cells = [target_cell(run, GUIDED, records[0])]
        for variant in variants:
            found = {r.sample: r for r in grouped[variant].get(index, [])}
            for r in first:
                match = found.get(r.sample)
                cells.append(best_cell(run, match) if match else Cell(text="missing"))
        table.rows.append((records[0].target, cells))
    return table


def by_swept_value(runs: Sequence[Run], key: str, title: str) -> ImageTable | None:
    """Figs. 8 and 11-12: actual image | for each value of `key`, the best image of each run.

    `runs` should differ only in `key` (the caller groups a sweep by its other swept keys). A value
    whose job failed or never finished keeps its columns, each cell saying so."""
    values = value_order(run_value(run, key) for run in runs)
    by_value = {value: next(run for run in runs if run_value(run, key) == value) for value in values}
    complete = [run for run in by_value.values() if run.summary is not None]
    if not complete:
        return None
    samples = sorted({r.sample for run in complete for r in run.samples(GUIDED)})
    seeds = {r.sample: r.seed for run in complete for r in run.samples(GUIDED)}
    columns = ["actual image"] + [f"{key}={value}\nsample {s} (seed {seeds[s]})" for value in values for s in samples]
    targets: dict[int, tuple[Run, SampleResult]] = {}
    for run in complete:
        for record in run.samples(GUIDED):
            targets.setdefault(record.target_index, (run, record))
    table = ImageTable(title, columns)
    for index in sorted(targets):
        source, first = targets[index]
        cells = [target_cell(source, GUIDED, first)]
        for value in values:
            run = by_value[value]
            found = {(r.target_index, r.sample): r for r in run.samples(GUIDED)}
            for s in samples:
                match = found.get((index, s))
                if match is not None:
                    cells.append(best_cell(run, match))
                else:  # the value's job failed or is unfinished: its cells say so
                    cells.append(Cell(text=run.status if run.summary is None else "missing"))
        table.rows.append((first.target, cells))
    return table


RING = 8  # samples around the target in a panel (Kadkhodaie et al., Fig. 7)


@dataclass(frozen=True)
class Panel:
    """A target at the centre and `RING` samples around it, clockwise from the top left, with the
    oracle's agreement and the mean feature distance of those samples."""

    target: Cell
    around: list[Cell]
    caption: str


@dataclass
class PanelTable:
    """Panels in rows (one per variant: fsa's guidance, then each baseline) and columns (targets)."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[Panel]]] = field(default_factory=list)


def ring_panels(run: Run, title: str) -> PanelTable | None:
    """Kadkhodaie et al.'s Fig. 7 for a run with at least `RING` samples per target: the first `RING`
    samples' final images around the target, a row per variant for the same seeds."""
    grouped = {variant: by_target(run.samples(variant)) for variant in run.variants()}
    guided = grouped[GUIDED]
    if not guided or min(len(records) for records in guided.values()) < RING:
        return None
    table = PanelTable(title, [records[0].target for records in guided.values()])
    for variant, targets in grouped.items():
        panels = []
        for index in guided:
            records = targets.get(index, [])[:RING]
            judged = [r for r in records if r.final_oracle_class is not None and r.target_label is not None]
            agreement = (
                f"oracle {sum(r.final_oracle_class == r.target_label for r in judged)}/{len(judged)}, "
                if judged
                else ""
            )
            mean = sum(r.final_distance for r in records) / len(records) if records else float("nan")
            panels.append(
                Panel(
                    target=target_cell(run, GUIDED, guided[index][0]),
                    around=[Cell(image=run.folder.path(r.final_image)) for r in records],
                    caption=f"{agreement}mean distance {mean:.3g}",
                )
            )
        table.rows.append(("fsa" if variant == GUIDED else variant, panels))
    return table
