"""`fsa-report`: turn a run or multirun folder into the paper's tables and figures.

It reads only what the runs wrote locally, through `fsa.tracking.run_folder` (which names every file
of a run folder), so a report needs neither W&B nor the models. Every job folder is listed, failed,
interrupted and running ones included: a sweep whose w_g = 8 job crashed must not read as a sweep
that never tried w_g = 8. Trend sentences are computed from the measured distances (Spearman's rho),
never written in advance.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from fsa.tracking.run_folder import GUIDED, RunFolder, SampleResult, State, wandb_group

VARIANTS = ("guided", "unguided", "printed_sign")
RUN_COLUMNS = (
    "run",
    "overrides",
    "status",
    "message",
    "variant",
    "target",
    "sample",
    "seed",
    "best_distance",
    "final_distance",
    "best_png_distance",
    "calibrated_best_distance",
)
SAMPLE_FIELDS = RUN_COLUMNS[5:]
NO_TREND = 0.3  # |rho| below this: "no clear trend"
DEFAULT = "(default)"  # a swept key the run did not override and whose value its config does not give
MIN_PIXELS = 128  # smaller images are upscaled (nearest neighbour) to at least this size in the grids
STATES = (State.COMPLETE, State.FAILED, State.INTERRUPTED, State.RUNNING, State.NEW)


@dataclass(frozen=True)
class Run:
    """One run folder as it was found: its summary is None unless the run completed."""

    folder: RunFolder
    name: str
    overrides: tuple[str, ...]
    status: str  # a run_folder.State value: complete | failed | interrupted | running | new
    message: str
    summary: dict[str, Any] | None
    config: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.folder.root

    def samples(self, variant: str = GUIDED) -> list[SampleResult]:
        return self.folder.samples(self.summary, variant) if self.summary is not None else []

    def variants(self) -> list[str]:
        """guided, then the baselines the run made, in the report's order."""
        names = [GUIDED, *((self.summary or {}).get("baseline_samples") or {})]
        return sorted(names, key=variant_order)


# ---------------------------------------------------------------- finding and reading runs


def job_order(path: Path) -> tuple[int, str]:
    """Hydra numbers jobs `<n>_<overrides>`: sort 2 before 10, names without a number last."""
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (sys.maxsize, path.name)


def find_runs(folder: Path) -> list[Path]:
    """The folder itself if it is a run, else its job folders (a multirun); empty if neither."""
    if RunFolder.holds_a_run(folder):
        return [folder]
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if RunFolder.holds_a_run(p)), key=job_order)


def failure_message(failure: dict[str, Any]) -> str:
    """`failure.json` as one line: "<error type>: <message>"."""
    error, message = str(failure.get("error") or "").strip(), str(failure.get("message") or "").strip()
    return ": ".join(part for part in (error, message) if part)


def load_run(path: Path) -> Run:
    """A run as its folder says: its state, and its summary (complete) or why it failed."""
    folder = RunFolder(path)
    state, summary, message = folder.state(), None, ""
    if state == State.COMPLETE:
        summary, message = folder.summary()
        if summary is None:
            state = State.FAILED  # said complete, but its summary cannot be read
    elif state == State.FAILED:
        failure, problem = folder.failure()
        message = failure_message(failure) if failure is not None else problem
    return Run(folder, path.name, tuple(folder.overrides()), state.value, message, summary, folder.config())


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    """Hydra override strings -> {key: value text}; `+key`, `++key` and `~key` count as `key`."""
    parsed: dict[str, str] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep:
            parsed[key.lstrip("+~")] = value
    return parsed


def as_number(text: Any) -> float | None:
    """The numeric value of an override or config value, or None (booleans and names are not numbers)."""
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, int | float):
        return float(text)
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if str(text).strip().lower() not in ("nan", "inf", "-inf", "+inf") else None


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """`config["a"]["b"]` for "a.b"; None if absent or not a plain value (a config group)."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict | list) else node


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run, in order of first appearance."""
    if len(runs) < 2:
        return []
    parsed = [parse_overrides(run.overrides) for run in runs]
    keys = list(dict.fromkeys(key for p in parsed for key in p))
    return [key for key in keys if len({p.get(key) for p in parsed}) > 1]


def run_value(run: Run, key: str) -> str:
    """The run's value of a swept key: its override, else what its resolved config says, else "(default)"."""
    overridden = parse_overrides(run.overrides).get(key)
    if overridden is not None:
        return overridden
    configured = lookup(run.config, key)
    return DEFAULT if configured is None else str(configured)


# ---------------------------------------------------------------- tables


def sample_rows(run: Run) -> list[dict[str, Any]]:
    """One row per (variant, target, sample); a run without a summary gets one row of its own."""
    base = {"run": run.name, "overrides": " ".join(run.overrides), "status": run.status, "message": run.message}
    if run.summary is None:
        return [{**base, "variant": None, **dict.fromkeys(SAMPLE_FIELDS)}]
    rows = [
        {**base, "variant": variant, **{field: getattr(record, field) for field in SAMPLE_FIELDS}}
        for variant in run.variants()
        for record in run.samples(variant)
    ]
    return rows or [{**base, "variant": GUIDED, **dict.fromkeys(SAMPLE_FIELDS)}]


def variant_order(name: str) -> tuple[int, str]:
    """guided, unguided, printed_sign, then any other baseline by name."""
    return (VARIANTS.index(name), name) if name in VARIANTS else (len(VARIANTS), name)


def read_evaluations(path: Path) -> pd.DataFrame:
    """evaluations.csv, or an empty table when the run never got to write one."""
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()
    needed = {"target", "sample", "iteration", "distance"}
    return table if needed <= set(table.columns) else pd.DataFrame()


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """The per-sample table of every run (runs.csv)."""
    rows = [row for run in runs for row in sample_rows(run)]
    table = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for column in ("best_distance", "final_distance", "best_png_distance", "calibrated_best_distance"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    for column in ("sample", "seed"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table


def value_order(values: Iterable[str]) -> list[str]:
    """Numeric values in numeric order (0.5 before 10), then the rest in order of appearance."""
    unique = list(dict.fromkeys(values))
    numeric = sorted((v for v in unique if as_number(v) is not None), key=lambda v: as_number(v) or 0.0)
    return numeric + [v for v in unique if as_number(v) is None]


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    """(mean, unbiased std, count) over the finite values; std is NaN for fewer than two."""
    finite = values[np.isfinite(values.astype(float))].astype(float)
    if finite.empty:
        return math.nan, math.nan, 0
    return float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else math.nan, len(finite)


def sweep_table(runs: Sequence[Run], table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """App. C: per swept key, value and variant, best (and calibrated) distance over all targets and samples.

    Other swept keys are pooled, as the paper's tables pool over images and runs.
    """
    rows = []
    for key in keys:
        values = {run.name: run_value(run, key) for run in runs}
        column = table["run"].map(values)
        variants = sorted(table["variant"].dropna().unique(), key=variant_order) or ["guided"]
        for value in value_order(values.values()):
            in_value = [run for run in runs if values[run.name] == value]
            for variant in variants:
                selected = table[(column == value) & (table["variant"] == variant)]
                if selected.empty and variant != "guided":
                    continue
                best_mean, best_std, count = mean_std(selected["best_distance"])
                cal_mean, cal_std, cal_count = mean_std(selected["calibrated_best_distance"])
                rows.append(
                    {
                        "key": key,
                        "value": value,
                        "variant": variant,
                        "runs": len(in_value),
                        "complete_runs": sum(run.summary is not None for run in in_value),
                        "count": count,
                        "best_distance_mean": best_mean,
                        "best_distance_std": best_std,
                        "calibrated_count": cal_count,
                        "calibrated_best_distance_mean": cal_mean,
                        "calibrated_best_distance_std": cal_std,
                    }
                )
    return pd.DataFrame(rows)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant or n < 3."""
    xs, ys = pd.Series(x, dtype=float), pd.Series(y, dtype=float)
    if len(xs) != len(ys):
        raise ValueError(f"x and y differ in length: {len(xs)} != {len(ys)}")
    if len(xs) < 3 or xs.nunique() < 2 or ys.nunique() < 2:
        return math.nan
    return float(np.corrcoef(xs.rank().to_numpy(), ys.rank().to_numpy())[0, 1])


def trend_sentence(key: str, rho: float, n: int, metric: str = "best distance") -> str:
    """The plain-language reading of rho: falls / grows / no clear trend (|rho| < 0.3)."""
    if not math.isfinite(rho):
        return f"too few distinct values to tell a trend of {metric} with {key} (n = {n})"
    stats = f"(Spearman rho = {rho:.2f}, n = {n})"
    if rho <= -NO_TREND:
        return f"{metric} falls as {key} grows {stats}"
    if rho >= NO_TREND:
        return f"{metric} grows as {key} grows {stats}"
    return f"no clear trend between {key} and {metric} {stats}"


def trends(runs: Sequence[Run], table: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """For each swept numeric key: rho between its value and the guided best distance of every sample."""
    guided = table[(table["variant"] == "guided") & np.isfinite(table["best_distance"].astype(float))]
    found = []
    for key in keys:
        numbers = {run.name: as_number(run_value(run, key)) for run in runs if run.summary is not None}
        if not numbers or any(number is None for number in numbers.values()):
            continue  # a name (extractor=vit_h14) or an unknown default: no order to correlate with
        x = guided["run"].map(numbers).astype(float)
        rho = spearman(x.tolist(), guided["best_distance"].tolist())
        found.append({"key": key, "rho": rho, "n": len(x), "sentence": trend_sentence(key, rho, len(x))})
    return found


# ---------------------------------------------------------------- Markdown


def format_cell(value: Any) -> str:
    """Four significant digits for floats, blanks for missing values, pipes escaped."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs `tabulate`, which fsa does not depend on)."""
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def plus_minus(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return ""
    return f"{mean:.4g}" if not math.isfinite(std) else f"{mean:.4g} ± {std:.3g}"


def sweep_markdown(sweep: pd.DataFrame) -> str:
    """sweep.csv as the App. C table: mean ± std (count)."""
    view = pd.DataFrame(
        {
            "key": sweep["key"],
            "value": sweep["value"],
            "variant": sweep["variant"],
            "runs (complete)": [f"{r} ({c})" for r, c in zip(sweep["runs"], sweep["complete_runs"], strict=True)],
            "n": sweep["count"],
            "best distance": [
                plus_minus(m, s) for m, s in zip(sweep["best_distance_mean"], sweep["best_distance_std"], strict=True)
            ],
            "calibrated best distance": [
                plus_minus(m, s)
                for m, s in zip(
                    sweep["calibrated_best_distance_mean"], sweep["calibrated_best_distance_std"], strict=True
                )
            ],
        }
    )
    return markdown_table(view)


# ---------------------------------------------------------------- figures


def slug(name: str) -> str:
    """A file-name-safe form of a run name or key (`0_a=1,b=2` -> `0_a=1_b=2`)."""
    return re.sub(r"[^\w.=+-]+", "_", name).strip("_") or "run"


def run_label(run: Run, keys: Sequence[str]) -> str:
    """A short file-name part: `<job number>_<swept key>=<value>` for a sweep's job, else the folder name."""
    head = run.name.split("_", 1)[0]
    if keys and head.isdigit():
        return slug("_".join([head, *(f"{key}={run_value(run, key)}" for key in keys)]))
    return slug(run.name)


def save_figure(figure: plt.Figure, path: Path) -> Path:
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_boxplot(key: str, groups: dict[str, list[float]], path: Path) -> Path:
    """App. B: best distance per swept value, every sample drawn as a point over its box."""
    labels = [value for value, data in groups.items() if data]
    data = [groups[value] for value in labels]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * len(labels)), 3.6))
    axes.boxplot(data, showfliers=False)
    axes.set_xticks(range(1, len(labels) + 1), labels)
    jitter = np.random.default_rng(0)
    for position, values in enumerate(data, start=1):
        axes.scatter(position + jitter.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.6, color="C0")
    flat = [v for values in data for v in values]
    if min(flat) > 0 and max(flat) / min(flat) > 50:
        axes.set_yscale("log")
    axes.set_xlabel(key)
    axes.set_ylabel("best squared feature distance")
    axes.set_title(f"best distance per {key} (guided, {len(flat)} samples)")
    axes.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def load_image(path: Path, min_pixels: int = MIN_PIXELS) -> np.ndarray | None:
    """The PNG as an array, upscaled by an integer factor with nearest neighbour so 16 px digits stay crisp."""
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


def grid_cells(run: Run, variant: str) -> list[tuple[str, list[tuple[str, Path, str]]]]:
    """Rows of (title, png, caption), one per target in the run's order: the actual image, then the
    final and best image of each sample with their feature distances."""
    by_target: dict[int, list[SampleResult]] = {}
    for record in run.samples(variant):
        by_target.setdefault(record.target_index, []).append(record)
    rows = []
    for index in sorted(by_target):
        records = sorted(by_target[index], key=lambda r: r.sample)
        first = records[0]
        label = "" if first.target_label is None else f"label {first.target_label}"
        target = run.folder.target_image(variant, index, first.target)
        cells = [("target", target, label)] if target.exists() else []
        for r in records:
            cells.append((f"sample {r.sample} final", run.folder.path(r.final_image), f"d = {r.final_distance:.4g}"))
            cells.append((f"sample {r.sample} best", run.folder.path(r.best_image), f"d = {r.best_distance:.4g}"))
        rows.append((first.target, cells))
    return rows


def plot_grid(title: str, rows: Sequence[tuple[str, list[tuple[str, Path, str]]]], path: Path) -> Path | None:
    """Figs. 3-7: one row per target, the feature distance under each generated image."""
    if not rows:
        return None
    columns = max(len(cells) for _, cells in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.9 * len(rows) + 0.4), squeeze=False)
    for r, (target, cells) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cells):
                ax.axis("off")
                continue
            heading, png, caption = cells[c]
            pixels = load_image(png)
            if pixels is None:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, interpolation="nearest", vmin=0, vmax=255)
            ax.set_xlabel(caption, fontsize=8)
            if r == 0:
                ax.set_title(heading, fontsize=8)
            if c == 0:
                ax.set_ylabel(target, fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
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


def plot_curves(title: str, table: pd.DataFrame, path: Path) -> Path | None:
    """Per-step distance curves, one panel per target, log y: does guidance keep lowering the distance?"""
    if table.empty:
        return None
    curves = best_so_far(table)
    targets = list(dict.fromkeys(curves["target"]))
    columns = min(5, len(targets))
    rows = math.ceil(len(targets) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.4), squeeze=False)
    for ax, target in zip(axes.flat, targets, strict=False):
        for sample, curve in curves[curves["target"] == target].groupby("sample"):
            color = f"C{int(sample) % 10}"
            ax.plot(curve["iteration"], curve["current"], color=color, lw=0.8, alpha=0.6, label=f"sample {sample}")
            ax.plot(curve["iteration"], curve["best"], color=color, lw=1.6, ls="--")
        ax.set_yscale("log")
        ax.set_title(str(target), fontsize=9)
        ax.set_xlabel("guided iteration", fontsize=8)
        ax.set_ylabel("squared distance", fontsize=8)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(targets) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, title="solid: current, dashed: best", title_fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


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
    return data if isinstance(data, dict) and "values" in data else None


def plot_gradients(title: str, gradients: dict[str, Any], path: Path) -> Path | None:
    """Fig. 2: the distribution of g_hat (first sample) per recorded step, with the clipping bounds."""
    raw = gradients["values"]
    values = raw.detach().float().cpu().numpy() if hasattr(raw, "detach") else np.asarray(raw, dtype=np.float32)
    if values.ndim < 2 or values.shape[0] == 0 or values.shape[1] == 0:
        return None
    c, mode = float(gradients.get("clip_c") or 0.0), str(gradients.get("clip_mode") or "off")
    steps, ts = list(gradients.get("step") or []), list(gradients.get("t") or [])
    samples = list(gradients.get("samples") or [])
    count = values.shape[0]
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.axis("off")
            continue
        flat = values[i, 0].ravel()
        ax.hist(flat, bins=100, color="C0", alpha=0.8)
        ax.set_yscale("log")
        lines = clip_lines(flat, c, mode)
        for j, x in enumerate(lines):
            centre = mode == "mean" and j == 0
            ax.axvline(x, color="k" if centre else "C3", ls="-" if centre else "--", lw=1)
        step = steps[i] if i < len(steps) else i
        t = f", t = {ts[i]}" if i < len(ts) else ""
        clipped = f", {np.mean((flat < lines[-2]) | (flat > lines[-1])):.1%} clipped" if lines else ""
        ax.set_title(f"step {step}{t}{clipped}", fontsize=9)
        ax.set_xlabel("normalised gradient value", fontsize=8)
    sample = samples[0] if samples else "sample 0"
    bounds = {"mean": f"mean ± {c:g} std", "zero": f"0 ± {c:g} std"}.get(mode, "no clipping")
    figure.suptitle(f"{title}\n{sample}: g_hat before clipping ({bounds})", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


# ---------------------------------------------------------------- W&B


def wandb_table(table: pd.DataFrame) -> Any:
    """A wandb.Table that tolerates missing values (pandas' NA is not JSON)."""
    import wandb

    clean = table.astype(object).where(table.notna(), None)
    return wandb.Table(columns=[str(c) for c in clean.columns], data=clean.values.tolist())


def log_to_wandb(
    mode: str, out: Path, group: str, config: dict[str, Any], tables: dict[str, pd.DataFrame], figures: list[Path]
) -> str:
    """One W&B run (job_type "report") in the jobs' group, holding the tables and the figures."""
    import wandb

    from fsa.tracking.wandb_logger import resolve_mode

    logger = config.get("logger") if isinstance(config.get("logger"), dict) else {}
    resolved = resolve_mode(mode)
    run = wandb.init(
        project=logger.get("project") or "fsa",
        entity=logger.get("entity"),
        group=logger.get("group") or group,
        job_type="report",
        name=f"report-{group}",
        dir=str(out),
        mode=resolved,
        config={"folder": group},
        reinit="finish_previous",
    )
    run.log({name: wandb_table(table) for name, table in tables.items() if not table.empty})
    run.log({f"figures/{png.stem}": wandb.Image(str(png)) for png in figures})
    where = f"W&B run {run.id} ({resolved}) in {run.dir}"
    run.finish()
    return where


# ---------------------------------------------------------------- the command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fsa-report", description="Tables and figures (App. B/C, Figs. 2-7) from an fsa run or multirun folder."
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


def write_sweep(runs: Sequence[Run], table: pd.DataFrame, keys: Sequence[str], out: Path) -> dict[str, Any]:
    """sweep.csv/.md, trends.md and one box plot per swept key; what was written, for printing and W&B."""
    sweep = sweep_table(runs, table, keys)
    found = trends(runs, table, keys)
    lines = [f"- {t['sentence']}" for t in found] or ["- no swept key has numeric values"]
    (out / "trends.md").write_text("# Trends of the best distance (guided)\n\n" + "\n".join(lines) + "\n")
    guided = table[table["variant"] == "guided"]
    figures = []
    for key in keys:
        values = {run.name: run_value(run, key) for run in runs}
        column = guided["run"].map(values)
        groups = {
            value: [float(d) for d in guided.loc[column == value, "best_distance"] if math.isfinite(d)]
            for value in value_order(values.values())
        }
        if any(groups.values()):
            figures.append(plot_boxplot(key, groups, out / f"boxplot_{slug(key)}.png"))
    return {
        "files": [*write_table(sweep, out, "sweep", sweep_markdown(sweep)), out / "trends.md"],
        "tables": {"sweep": sweep} | ({"trends": pd.DataFrame(found)} if found else {}),
        "trends": [t["sentence"] for t in found],
        "figures": figures,
    }


def run_figures(run: Run, label: str, out: Path) -> list[Path]:
    """A run's grids (guided and each baseline, complete runs only), its curves and its gradient histograms."""
    figures: list[Path | None] = []
    for variant in run.variants() if run.summary is not None else []:
        suffix, title = ("", run.name) if variant == GUIDED else (f"__{slug(variant)}", f"{run.name} ({variant})")
        figures.append(plot_grid(title, grid_cells(run, variant), out / f"grid_{label}{suffix}.png"))
    figures.append(plot_curves(run.name, read_evaluations(run.folder.evaluations_file()), out / f"curves_{label}.png"))
    if run.folder.gradients_file.exists():
        gradients = load_gradients(run.folder.gradients_file)
        figures.append(plot_gradients(run.name, gradients, out / f"gradients_{label}.png") if gradients else None)
    return [figure for figure in figures if figure is not None]


def figure_lines(figures: Sequence[Path], out: Path) -> list[str]:
    """One printed line per kind of figure, naming the first few."""
    lines = []
    for kind in ("boxplot", "grid", "curves", "gradients"):
        made = [f for f in figures if f.name.startswith(f"{kind}_")]
        if made:
            names = ", ".join(f.name for f in made[:3]) + (", ..." if len(made) > 3 else "")
            lines.append(f"  {kind}: {len(made)} figure(s) in {out} ({names})")
    return lines


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
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(path) for path in paths]
    table = runs_table(runs)
    counts = {state.value: sum(run.status == state.value for run in runs) for state in STATES}
    counts = {state: n for state, n in counts.items() if n or state in ("complete", "failed")}
    print(f"fsa-report: {len(runs)} run(s) in {folder} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    for run in runs:
        if run.summary is None:
            print(f"  {run.status}: {run.name}" + (f" ({run.message})" if run.message else ""))

    files, tables, figures, sentences = write_table(table, out, "runs"), {"runs": table}, [], []
    keys = swept_keys(runs)
    if keys:
        sweep = write_sweep(runs, table, keys, out)
        files, figures, sentences = files + sweep["files"], sweep["figures"], sweep["trends"]
        tables |= sweep["tables"]
    for run in runs:
        figures += run_figures(run, run_label(run, keys), out)

    lines = [f"  tables: {', '.join(f.name for f in files)} in {out}"]
    lines += [f"  trend: {sentence}" for sentence in sentences] + figure_lines(figures, out)
    print("\n".join(lines))
    if args.wandb != "disabled":
        config = next((run.config for run in runs if run.config), {})
        experiment = parse_overrides(runs[0].overrides).get("experiment")
        group = wandb_group(experiment, folder)  # the group the jobs logged to
        print("  " + log_to_wandb(args.wandb, out, group, config, tables, figures))
    print(f"fsa-report: report in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
