"""`fsa-report <run or sweep folder>`: the tables, the paper's figures and one report page.

Writes into `<folder>/report/` (or `--out`): `runs.csv/.md`, for a sweep `sweep.csv/.md` and
`trends.md`, the figures under `figures/` (each as PNG and SVG), and `report.html`, one page that
holds all of it and opens from the folder without a server.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import pandas as pd

from fsa.report.figures import (
    Figure,
    load_gradients,
    plot_boxplot,
    plot_curves,
    plot_gradients,
    plot_image_table,
    plot_panels,
    plot_retention,
    plot_transfer,
)
from fsa.report.layouts import best_with_baselines, by_swept_value, final_and_best, ring_panels
from fsa.report.page import write_page
from fsa.report.runs import (
    STATES,
    Run,
    Sweep,
    file_label,
    find_runs,
    load_run,
    markdown_table,
    mean_interval,
    parse_overrides,
    read_evaluations,
    retention_table,
    run_label,
    run_title,
    run_value,
    runs_table,
    sweep_groups,
    sweep_markdown,
    sweep_table,
    transfer_table,
    trends,
    value_order,
)
from fsa.tracking.run_folder import wandb_group

FIGURES = "figures"  # the report's sub-folder for figures
SCALED_TARGET_KEYS = ("dataset.norm", "dataset.scale")  # swept in the paper's Fig. 8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fsa-report",
        description="Tables, the paper's figures (Figs. 2-8, 10-12, App. C) and a report page from an fsa run "
        "or multirun folder.",
    )
    parser.add_argument("folder", type=Path, help="a run folder (with status.json) or a multirun folder of job folders")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: <folder>/report)")
    parser.add_argument(
        "--wandb",
        choices=("auto", "online", "offline", "disabled"),
        default="disabled",
        help="also log the tables and figures to one W&B run (auto: online when logged in, else offline)",
    )
    return parser.parse_args(argv)


def write_table(table: pd.DataFrame, out: Path, stem: str, markdown: str | None = None) -> list[Path]:
    csv, md = out / f"{stem}.csv", out / f"{stem}.md"
    table.to_csv(csv, index=False)
    md.write_text(markdown if markdown is not None else markdown_table(table))
    return [csv, md]


def sweep_tables(sweeps: Sequence[Sweep], table: pd.DataFrame, out: Path) -> dict[str, Any]:
    """sweep.csv/.md (App. C) and trends.md, each sweep's runs compared among themselves only (a `sweep`
    column and sentence prefix name it where a folder holds several); what was written, for printing,
    the page and W&B."""
    many, parts, found = len(sweeps) > 1, [], []
    for group in sweeps:
        part = sweep_table(group.runs, table, group.keys)
        for trend in trends(group.runs, table, group.keys):
            found.append(
                {"sweep": group.name, **trend, "sentence": f"{group.name}: {trend['sentence']}"} if many else trend
            )
        parts.append(part.assign(sweep=group.name)[["sweep", *part.columns]] if many else part)
    sweep = pd.concat(parts, ignore_index=True)
    lines = [f"- {t['sentence']}" for t in found] or ["- no swept key has numeric values"]
    (out / "trends.md").write_text("# Trends of the best distance (guided)\n\n" + "\n".join(lines) + "\n")
    return {
        "files": [*write_table(sweep, out, "sweep", sweep_markdown(sweep)), out / "trends.md"],
        "tables": {"sweep": sweep} | ({"trends": pd.DataFrame(found)} if found else {}),
        "trends": [t["sentence"] for t in found],
    }


def sweep_figures(
    runs: Sequence[Run], table: pd.DataFrame, keys: Sequence[str], out: Path, prefix: str = ""
) -> list[Figure]:
    """Per swept key: the box plot of best distances (Fig. 10), and the best images by value (Figs. 8,
    11-12), one figure for each combination of the other swept keys' values. `prefix` starts the file
    names (the sweep's, where a folder holds several)."""
    table = table[table["run"].isin([run.name for run in runs])]
    figures = []
    guided = table[table["variant"] == "guided"]
    for key in keys:
        values = {run.name: run_value(run, key) for run in runs}
        column = guided["run"].map(values)
        groups = {
            value: [float(d) for d in guided.loc[column == value, "best_distance"] if math.isfinite(d)]
            for value in value_order(values.values())
        }
        means = {value: mean_interval(guided[column == value], "best_distance") for value in groups if groups[value]}
        if any(groups.values()):
            path = plot_boxplot(key, groups, out / f"{prefix}boxplot_{file_label(key)}.png", means)
            figures.append(Figure(path, "boxplot", f"best distance per {key}", "Fig. 10 (App. B)"))
        others = [other for other in keys if other != key]

        def context(run: Run, others: list[str] = others) -> tuple[str, ...]:
            return tuple(f"{other}={run_value(run, other)}" for other in others)

        paper = "Fig. 8" if key in SCALED_TARGET_KEYS else "Figs. 11-12 (App. B)"
        for fixed, group in groupby(sorted(runs, key=context), key=context):
            title = f"best image of each run by {key}" + (f" ({', '.join(fixed)})" if fixed else "")
            layout = by_swept_value(list(group), key, title)
            if layout is not None and len(layout.columns) > 1:
                name = f"{prefix}sweep_{file_label('__'.join([key, *fixed]))}"
                figures.append(Figure(plot_image_table(layout, out / f"{name}.png"), "sweep", title, paper))
    return figures


def grouping(groups: Sequence[Sweep]) -> str:
    """How the runs were grouped, in a line: each sweep with its jobs and keys, then the runs alone."""
    sweeps = [f"a sweep of {len(g.runs)} runs over {', '.join(g.keys)} ({g.name})" for g in groups if g.keys]
    alone = sum(len(g.runs) for g in groups if not g.keys)
    parts = sweeps + ([f"{alone} run(s) outside any sweep, not compared"] if alone else [])
    return "grouped: " + "; ".join(parts)


def run_figures(run: Run, keys: Sequence[str], out: Path, transfer: pd.DataFrame) -> list[Figure]:
    """A run's image figures (complete runs only), whether its match transfers (its rows of `transfer`,
    `transfer_table`'s), and its distance curves (any run with a table)."""
    label, title = run_label(run, keys), run_title(run, keys)
    figures = []
    if run.summary is not None:
        layout = final_and_best(run, f"{title}: final and best image of each run")
        if layout is not None:
            path = plot_image_table(layout, out / f"runs_{label}.png")
            figures.append(Figure(path, "runs", layout.title, "Figs. 3-4"))
        layout = best_with_baselines(run, f"{title}: best image of each run, and the baselines' for the same seeds")
        if layout is not None:
            path = plot_image_table(layout, out / f"best_{label}.png")
            figures.append(Figure(path, "best", layout.title, "Figs. 5-7"))
        panels = ring_panels(run, f"{title}: eight samples per target")
        if panels is not None:
            path = plot_panels(panels, out / f"panels_{label}.png")
            figures.append(Figure(path, "panels", panels.title, "Kadkhodaie et al., Fig. 7"))
    transferred = transfer[transfer["run"] == run.name]
    if not transferred.empty:
        path = plot_transfer(title, transferred, out / f"transfer_{label}.png")
        if path is not None:
            figures.append(Figure(path, "transfer", f"{title}: does the match transfer?", ""))
    curves = plot_curves(title, read_evaluations(run.folder.evaluations_file()), out / f"curves_{label}.png")
    if curves is not None:
        figures.append(Figure(curves, "curves", f"{title}: distance per guided iteration", ""))
    return figures


def gradient_figure(runs: Sequence[Run], keys: Sequence[str], out: Path) -> list[Figure]:
    """Fig. 2: every run that recorded gradients, one row each, in one figure."""
    recorded = []
    for run in runs:
        if run.folder.gradients_file.exists():
            gradients = load_gradients(run.folder.gradients_file)
            if gradients is not None:
                recorded.append((run_title(run, keys), gradients))
    path = plot_gradients(recorded, out / "gradients.png")
    return [Figure(path, "gradients", "normalised gradients and the clip bounds", "Fig. 2")] if path else []


def figure_lines(figures: Sequence[Figure], out: Path) -> list[str]:
    """One printed line per kind of figure, naming the first few."""
    lines = []
    for kind in ("sweep", "boxplot", "gradients", "retention", "transfer", "runs", "best", "panels", "curves"):
        made = [f for f in figures if f.kind == kind]
        if made:
            names = ", ".join(f.path.name for f in made[:3]) + (", ..." if len(made) > 3 else "")
            lines.append(f"  {kind}: {len(made)} figure(s) in {out} ({names}; each also as SVG)")
    return lines


# ---------------------------------------------------------------- W&B


def recorded_group(runs: Sequence[Run], folder: Path) -> str:
    """The W&B group the runs logged to, from their own record (summary.json); for run folders
    written before runs recorded it, the group fsa gave them (the experiment and the folder)."""
    recorded = [((run.summary or {}).get("tracker") or {}).get("group") for run in runs]
    experiment = parse_overrides(runs[0].overrides).get("experiment") if runs else None
    return next((group for group in recorded if group), None) or wandb_group(experiment, folder)


def log_to_wandb(
    mode: str, out: Path, runs: Sequence[Run], folder: Path, tables: dict[str, pd.DataFrame], figures: list[Path]
) -> str:
    """One W&B run (job type "report") in the runs' group, holding the tables and the figures."""
    from fsa.config import LoggerConfig
    from fsa.tracking.tracker import Tracker

    config = next((run.config for run in runs if run.config), {})
    logger = config.get("logger") if isinstance(config.get("logger"), dict) else {}
    group = recorded_group(runs, folder)
    options = LoggerConfig(mode=mode, project=logger.get("project") or "fsa", entity=logger.get("entity"))
    tracker = Tracker(options, out, {"folder": group}, group, f"report-{group}")
    run = tracker.open("report", job_type="report")
    kept = {name: table for name, table in tables.items() if not table.empty}
    tracker.log_outputs("report", kept, {f"figures/{png.stem}": png for png in figures})
    where = f"W&B run {run.id} ({tracker.mode}) in {run.dir}"
    tracker.finish()
    return where


# ---------------------------------------------------------------- the command


def main(argv: list[str] | None = None) -> int:
    """Write the report of a run or multirun folder into --out; 1 if the folder holds no run."""
    args = parse_args(argv)
    folder = args.folder.resolve()
    paths = find_runs(folder)
    if not paths:
        print(
            f"fsa-report: no runs in {folder}: expected a run folder (with status.json or config.yaml) "
            "or a multirun folder of such job folders",
            file=sys.stderr,
        )
        return 1
    out = (args.out or folder / "report").resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(
            f"fsa-report: error: cannot create the output folder {out} ({error.strerror}); choose --out",
            file=sys.stderr,
        )
        return 2
    runs = [load_run(path) for path in paths]
    table = runs_table(runs)
    counts = {state.value: sum(run.status == state.value for run in runs) for state in STATES}
    counts = {state: n for state, n in counts.items() if n or state in ("complete", "failed")}
    print(f"fsa-report: {len(runs)} run(s) in {folder} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    for run in runs:
        if run.summary is None:
            print(f"  {run.status}: {run.name}" + (f" ({run.message})" if run.message else ""))

    files, tables, sentences = write_table(table, out, "runs"), {"runs": table}, []
    groups = sweep_groups(runs)
    grouped = {run.name: run for group in groups for run in group.runs}
    runs = [grouped[run.name] for run in runs]  # each knowing its sweep's keys, in the folder's order
    sweeps = [group for group in groups if group.keys]
    keys = list(dict.fromkeys(key for group in sweeps for key in group.keys))
    print(f"  {grouping(groups)}")
    figures_dir = out / FIGURES
    figures: list[Figure] = []
    if sweeps:
        sweep = sweep_tables(sweeps, table, out)
        files, sentences = files + sweep["files"], sweep["trends"]
        tables |= sweep["tables"]
        for i, group in enumerate(sweeps):
            prefix = f"sweep{i + 1}_" if len(sweeps) > 1 else ""
            figures += sweep_figures(group.runs, table, group.keys, figures_dir, prefix)
    figures += gradient_figure(runs, keys, figures_dir)
    retained = retention_table(runs, keys)
    if not retained.empty:  # runs with an unguided baseline and an attributes config
        files, tables = files + write_table(retained, out, "retention"), tables | {"retention": retained}
        heatmap = plot_retention(retained, figures_dir / "retention.png")
        if heatmap is not None:
            figures.append(Figure(heatmap, "retention", "retention per attribute, final images", ""))
    transfer = transfer_table(runs, keys)
    if not transfer.empty:  # runs with judges or the robustness check
        files, tables = files + write_table(transfer, out, "transfer"), tables | {"transfer": transfer}
    for run in runs:
        figures += run_figures(run, keys, figures_dir, transfer)
    page = write_page(out / "report.html", folder, runs, keys, tables, sentences, figures)

    lines = [f"  tables: {', '.join(f.name for f in files)} in {out}"]
    lines += [f"  trend: {sentence}" for sentence in sentences] + figure_lines(figures, figures_dir)
    print("\n".join(lines))
    if args.wandb != "disabled":
        print("  " + log_to_wandb(args.wandb, out, runs, folder, tables, [f.path for f in figures]))
    print(f"fsa-report: report in {out}; open {page}")
    return 0
