"""`report.html`: the whole report on one page that opens from the folder, without a server.

Every image is embedded (a base64 data URI), so the page can be mailed or moved alone; only the
links to each figure's SVG point at files beside it. No script, no web font, nothing fetched.
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fsa.report.figures import Figure
from fsa.report.runs import Run, format_cell, run_label, run_title, sweep_view, variant_order

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; } td.text { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
.state-failed { color: #D55E00; font-weight: bold; } .state-complete { color: #009E73; }
.state-interrupted, .state-running, .state-new { color: #E69F00; font-weight: bold; }
details { margin: 0.5em 0; } summary { cursor: pointer; }
"""


def embed(path: Path) -> str:
    """The PNG as a data URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def table_html(table: pd.DataFrame) -> str:
    """A table with fsa-report's number format (4 significant digits, blanks for missing values)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.itertuples(index=False):
        cells = []
        for value in row:
            kind = "" if isinstance(value, int | float) and not isinstance(value, bool) else ' class="text"'
            cells.append(f"<td{kind}>{html.escape(format_cell(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure_html(figure: Figure, out: Path) -> str:
    paper = f" As the paper's {figure.paper}." if figure.paper else ""
    link = ""
    if figure.vector.exists():
        link = f' <a href="{html.escape(figure.vector.relative_to(out).as_posix())}">SVG</a>'
    return (
        f'<figure><img src="{embed(figure.path)}" alt="{html.escape(figure.title)}">'
        f"<figcaption>{html.escape(figure.title)}.{html.escape(paper)}{link}</figcaption></figure>"
    )


def state_html(run: Run) -> str:
    return f'<span class="state-{html.escape(run.status)}">{html.escape(run.status)}</span>'


def shown_interval(value: Any, interval: Sequence[float] | None) -> str:
    """A figure with its 95 % interval where there is one: `12.4 [9.06, 16.2]`."""
    shown = format_cell(value)
    return f"{shown} [{format_cell(interval[0])}, {format_cell(interval[1])}]" if shown and interval else shown


def with_interval(summary: dict[str, Any], key: str) -> str:
    """A summary figure with its 95 % interval where the run recorded one."""
    return shown_interval(summary.get(key), (summary.get("intervals") or {}).get(key))


def runs_overview(runs: Sequence[Run], keys: Sequence[str]) -> str:
    """One row per run: its folder, what it ran, its state, and its task's headline numbers."""
    rows = []
    for run in runs:
        summary: dict[str, Any] = run.summary or {}
        best, final = with_interval(summary, "mean_best_distance"), with_interval(summary, "mean_final_distance")
        cells = [run.name, run_title(run, keys), run.task_name]
        rows.append(
            "<tr>"
            + "".join(f'<td class="text">{html.escape(cell)}</td>' for cell in cells)
            + f'<td class="text">{state_html(run)}</td>'
            f"<td>{html.escape(best)}</td><td>{html.escape(final)}</td>"
            f'<td class="text">{html.escape(run.headline())}</td><td class="text">{html.escape(run.message)}</td></tr>'
        )
    head = "".join(
        f"<th>{name}</th>"
        for name in (
            "folder",
            "run",
            "task",
            "state",
            "mean best distance [95 %]",
            "mean final distance",
            "result",
            "message",
        )
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def run_details(run: Run, keys: Sequence[str]) -> str:
    """One run: its overview picture, its overrides and its resolved config."""
    parts = [f"<details><summary>{html.escape(run.name)}: {state_html(run)}</summary>"]
    if run.message:
        parts.append(f"<p>{html.escape(run.message)}</p>")
    if run.folder.overview_file.exists():
        parts.append(
            f'<figure><img src="{embed(run.folder.overview_file)}" alt="overview of {html.escape(run.name)}">'
            "<figcaption>targets (rows) against the best and final image of each sample, and the "
            "baselines' for the same seeds</figcaption></figure>"
        )
    parts += task_outputs(run)
    parts.append(f"<p>overrides: <code>{html.escape(' '.join(run.overrides) or '(none)')}</code></p>")
    config = yaml.safe_dump(run.config, sort_keys=False) if run.config else "(no config.yaml)"
    parts.append(f"<pre>{html.escape(config)}</pre></details>")
    return "".join(parts)


def task_outputs(run: Run) -> list[str]:
    """The tables its task names (with their captions) and the figures in the folders it writes."""
    task, parts = run.task, []
    if task is None:
        return parts
    for file, caption in task.tables.items():
        if run.folder.path(file).exists():
            parts.append(f"<p>{html.escape(caption)}:</p>" + table_html(pd.read_csv(run.folder.path(file))))
    for output in task.outputs:
        folder = run.folder.path(output)
        for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            parts.append(
                f'<figure><img src="{embed(png)}" alt="{html.escape(png.stem)}">'
                f"<figcaption>{html.escape(png.stem.replace('_', ' '))}</figcaption></figure>"
            )
    return parts


def transfer_section(
    table: pd.DataFrame | None, figures: Sequence[Figure], out: Path, runs: Sequence[Run], keys: Sequence[str]
) -> list[str]:
    """ "Does the match transfer?": per run, its checks against its variants (best images; ratio with its 95 %
    interval) and its figure. transfer.csv has the final images' too."""
    if table is None or table.empty:
        return []
    parts = [
        "<h2>Does the match transfer?</h2>",
        "<p>Judges are extractors that score the images but never guided them: a real match transfers to them "
        "(distance well below the unguided images', ratio &lt; 1), an adversarial one does not. After small changes "
        "of an image (shift, crop, JPEG, noise) the guide's distance and feature movement are shown over the same "
        "changes of the target image: near 1 for a real match, far above for an adversarial one. The adversarial "
        "control's images stand beside the guided ones under <i>Best images against the baselines</i>. "
        "95 % intervals by a paired bootstrap over targets.</p>",
    ]
    drawn = {f.path.stem: f for f in figures if f.kind == "transfer"}
    best = table[table["kind"] == "best"]
    for run in runs:
        rows = best[best["run"] == run.name]
        if rows.empty:
            continue
        shown = [
            shown_interval(v, [lo, hi] if pd.notna(lo) else None)
            for v, lo, hi in zip(rows["value"], rows["low"], rows["high"], strict=True)
        ]
        wide = rows.assign(shown=shown).pivot(index="check", columns="variant", values="shown")
        wide = wide.reindex(
            index=list(dict.fromkeys(rows["check"])), columns=sorted(dict.fromkeys(rows["variant"]), key=variant_order)
        )
        parts += [f"<h3>{html.escape(run_title(run, keys))} ({html.escape(run.name)})</h3>"]
        parts.append(table_html(wide.reset_index().fillna("")))
        figure = drawn.get(f"transfer_{run_label(run, keys)}")
        if figure is not None:
            parts.append(figure_html(figure, out))
    return parts


def write_page(
    path: Path,
    folder: Path,
    runs: Sequence[Run],
    keys: Sequence[str],
    tables: dict[str, pd.DataFrame],
    sentences: Sequence[str],
    figures: Sequence[Figure],
) -> Path:
    """Write the report page; returns its path."""
    out = path.parent
    unfinished = [run for run in runs if run.summary is None]
    states = ", ".join(f"{sum(r.status == s for r in runs)} {s}" for s in dict.fromkeys(r.status for r in runs))
    body = [
        f"<h1>fsa report: {html.escape(folder.name)}</h1>",
        f"<p>{len(runs)} run(s) in <code>{html.escape(str(folder))}</code> ({html.escape(states)}). "
        f"Written {datetime.datetime.now().isoformat(timespec='seconds')} by <code>fsa-report</code>. "
        "Distances are squared Euclidean distances between features; lower is closer to the target.</p>",
        "<h2>Runs</h2>",
        runs_overview(runs, keys),
    ]
    if unfinished:
        items = "".join(
            f"<li>{html.escape(run.name)}: {state_html(run)}{': ' + html.escape(run.message) if run.message else ''}"
            "</li>"
            for run in unfinished
        )
        body += ["<h2>Runs that did not complete</h2>", f"<ul>{items}</ul>"]
    if sentences:
        body += ["<h2>Trends</h2>", "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>"]
    if "sweep" in tables:
        heading = "<h2>Best distance per swept value (as the paper's App. C)</h2>"
        body += [heading, table_html(sweep_view(tables["sweep"]))]
    body += transfer_section(tables.get("transfer"), figures, out, runs, keys)
    for kind, heading in (
        ("sweep", "Images by swept value"),
        ("boxplot", "Best distances by swept value"),
        ("gradients", "Gradient distributions"),
        ("runs", "Final and best images"),
        ("best", "Best images against the baselines"),
        ("curves", "Distance per guided iteration"),
    ):
        chosen = [f for f in figures if f.kind == kind]
        if chosen:
            body += [f"<h2>{heading}</h2>", *(figure_html(f, out) for f in chosen)]
    body += ["<h2>Each run: overview and config</h2>", *(run_details(run, keys) for run in runs)]
    body += ["<h2>Every sample</h2>", "<details><summary>runs.csv</summary>", table_html(tables["runs"]), "</details>"]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fsa report: {html.escape(folder.name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
