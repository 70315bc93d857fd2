"""The runs of a run or multirun folder, as their folders say, and the tables made from them.

Everything is read through `fsa.tracking.run_folder` (which names every file of a run folder), so a
report needs neither W&B nor the models. Every job folder is listed, failed, interrupted and running
ones included: a sweep whose w_g = 8 job crashed must not read as a sweep that never tried w_g = 8.
Trend sentences are computed from the measured distances (Spearman's rho), never written in advance.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsa.errors import ConfigError
from fsa.guidance.options import GUIDED, VARIANTS
from fsa.intervals import target_bootstrap
from fsa.tasks import Task, task_of
from fsa.tracking.run_folder import NOT_COMPARED, RunFolder, SampleResult, State, slug

RUN_COLUMNS = (
    "run",
    "overrides",
    "status",
    "message",
    "task",
    "headline",
    "variant",
    "target",
    "sample",
    "seed",
    "best_distance",
    "final_distance",
    "best_png_distance",
    "calibrated_best_distance",
)
SAMPLE_FIELDS = RUN_COLUMNS[7:]
NO_TREND = 0.3  # |rho| below this: "no clear trend"
DEFAULT = "(default)"  # a swept key the run did not override and whose value its config does not give
LABEL = 120  # characters at most of a figure's file name, less its kind and suffix
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
    swept: tuple[str, ...] | None = None  # the keys its sweep varies (`sweep_groups`); None: not grouped yet

    @property
    def path(self) -> Path:
        return self.folder.root

    def samples(self, variant: str = GUIDED) -> list[SampleResult]:
        return self.folder.samples(self.summary, variant) if self.summary is not None else []

    def variants(self) -> list[str]:
        """guided, then the baselines the run made, in the report's order."""
        names = [GUIDED, *((self.summary or {}).get("baseline_samples") or {})]
        return sorted(names, key=variant_order)

    @property
    def task(self) -> Task | None:
        """The task that made the run, as its config names it; None when that task is not installed here."""
        try:
            return task_of(self.config.get("task") if isinstance(self.config.get("task"), dict) else None)
        except ConfigError:
            return None

    @property
    def task_name(self) -> str:
        node = self.config.get("task")
        return str(node.get("name")) if isinstance(node, dict) and node.get("name") else "guide"

    def headline(self) -> str:
        """The run's result in one line, as its task reads its summary; blank until it completes."""
        task = self.task
        if self.summary is None or task is None:
            return ""
        return task.headline(self.summary)


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


def compared(key: str) -> bool:
    """Whether an override key makes a run what it is: not progress, logger, resume, threads, ..., nor
    Hydra's own keys."""
    return key.split(".")[0].lstrip("~+") not in (*NOT_COMPARED, "hydra")


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value is not the same in every run, in order of first appearance (only the
    keys that make a run what it is)."""
    if len(runs) < 2:
        return []
    parsed = [parse_overrides(run.overrides) for run in runs]
    keys = [key for key in dict.fromkeys(key for p in parsed for key in p) if compared(key)]
    return [key for key in keys if len({p.get(key) for p in parsed}) > 1]


@dataclass(frozen=True)
class Sweep:
    """Runs that are one sweep's jobs: the same task, the same keys overridden, with other values in
    `keys`. A run that shares its kind with no other is a sweep of one, with no keys."""

    name: str  # what its runs share: their common overrides
    runs: list[Run]
    keys: list[str]


def sweep_groups(runs: Sequence[Run]) -> list[Sweep]:
    """The runs of a folder grouped by what they are, in order of first appearance. Hydra's multirun
    gives every job the same override keys; runs made separately (a tiny debug run beside a real one)
    override other keys and are not compared with each other."""
    kinds: dict[tuple[str, frozenset[str]], list[Run]] = {}
    for run in runs:
        keys = frozenset(key for key in parse_overrides(run.overrides) if compared(key))
        kinds.setdefault((run.task_name, keys), []).append(run)
    groups = []
    for found in kinds.values():
        keys = swept_keys(found)
        members = [replace(run, swept=tuple(keys)) for run in found]
        shared = [
            o for o in members[0].overrides if compared(o.partition("=")[0]) and all(o in m.overrides for m in members)
        ]
        groups.append(Sweep(" ".join(shared) or "(no overrides)", members, keys))
    return groups


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
    base |= {"task": run.task_name, "headline": run.headline()}
    if run.summary is None or run.task_name != "guide":  # a task with no samples: one row, its headline
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
                best_interval = mean_interval(selected, "best_distance") or [math.nan, math.nan]
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
                        "best_distance_low": best_interval[0],  # of the mean, 95 %, bootstrap over targets
                        "best_distance_high": best_interval[1],
                        "calibrated_count": cal_count,
                        "calibrated_best_distance_mean": cal_mean,
                        "calibrated_best_distance_std": cal_std,
                    }
                )
    return pd.DataFrame(rows)


def mean_interval(rows: pd.DataFrame, column: str) -> list[float] | None:
    """The 95 % interval of `column`'s mean over the rows, by a bootstrap over their targets."""
    finite = rows[np.isfinite(rows[column].astype(float))]
    groups = [group[[column]].to_numpy(float) for _, group in finite.groupby("target", sort=True)]
    return target_bootstrap(groups, np.mean)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant or n < 3."""
    xs, ys = pd.Series(x, dtype=float), pd.Series(y, dtype=float)
    if len(xs) != len(ys):
        raise ValueError(f"x and y differ in length: {len(xs)} != {len(ys)}")
    if len(xs) < 3 or xs.nunique() < 2 or ys.nunique() < 2:
        return math.nan
    return float(np.corrcoef(xs.rank().to_numpy(), ys.rank().to_numpy())[0, 1])


FEW_VALUES = 5  # distinct values of a swept key below which a rank correlation is only a hint
TREND_VALUES = 3  # distinct values of a swept key below which no trend is computed at all


def trend_sentence(key: str, rho: float, n: int, metric: str = "best distance", values: int | None = None) -> str:
    """The plain-language reading of rho: falls / grows / no clear trend (|rho| < 0.3), with its sample
    size; with fewer than FEW_VALUES distinct values of the key, said to be a hint, not a finding, and
    with fewer than TREND_VALUES, none."""
    if values is not None and values < TREND_VALUES:
        return f"{key} takes {values} value(s): too few for a trend; compare them in the sweep table (n = {n})"
    if not math.isfinite(rho):
        return f"too few distinct values to tell a trend of {metric} with {key} (n = {n})"
    caveat = ""
    if values is not None:
        caveat = f", {values} values" + ("; a hint only: too few values for a trend" if values < FEW_VALUES else "")
    stats = f"(Spearman rho = {rho:.2f}, n = {n}{caveat})"
    if rho <= -NO_TREND:
        return f"{metric} falls as {key} grows {stats}"
    if rho >= NO_TREND:
        return f"{metric} grows as {key} grows {stats}"
    return f"no clear trend between {key} and {metric} {stats}"


def trends(runs: Sequence[Run], table: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """For each swept numeric key: rho between its value and the guided best distance of every sample."""
    guided = table[(table["variant"] == "guided") & np.isfinite(table["best_distance"].astype(float))]
    guided = guided[guided["run"].isin([run.name for run in runs])]  # these runs' samples only
    found = []
    for key in keys:
        numbers = {run.name: as_number(run_value(run, key)) for run in runs if run.summary is not None}
        if not numbers or any(number is None for number in numbers.values()):
            continue  # a name (extractor=vit_h14) or an unknown default: no order to correlate with
        x = guided["run"].map(numbers).astype(float)
        rho = spearman(x.tolist(), guided["best_distance"].tolist())
        values = len(set(numbers.values()))
        sentence = trend_sentence(key, rho, len(x), values=values)
        found.append({"key": key, "rho": rho, "n": len(x), "values": values, "sentence": sentence})
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


def sweep_view(sweep: pd.DataFrame) -> pd.DataFrame:
    """sweep.csv as the App. C table is read: mean ± std, runs (complete), n."""
    return pd.DataFrame(
        {
            **({"sweep": sweep["sweep"]} if "sweep" in sweep else {}),  # a folder of several sweeps
            "key": sweep["key"],
            "value": sweep["value"],
            "variant": sweep["variant"],
            "runs (complete)": [f"{r} ({c})" for r, c in zip(sweep["runs"], sweep["complete_runs"], strict=True)],
            "n": sweep["count"],
            "best distance": [
                plus_minus(m, s) for m, s in zip(sweep["best_distance_mean"], sweep["best_distance_std"], strict=True)
            ],
            "95 % interval of the mean (over targets)": [
                f"[{low:.4g}, {high:.4g}]" if math.isfinite(low) else ""
                for low, high in zip(sweep["best_distance_low"], sweep["best_distance_high"], strict=True)
            ],
            "calibrated best distance": [
                plus_minus(m, s)
                for m, s in zip(
                    sweep["calibrated_best_distance_mean"], sweep["calibrated_best_distance_std"], strict=True
                )
            ],
        }
    )


def sweep_markdown(sweep: pd.DataFrame) -> str:
    return markdown_table(sweep_view(sweep))


def run_label(run: Run, keys: Sequence[str]) -> str:
    """A short file-name part: `<job number>_<swept key>=<value>` for a sweep's job, else the folder name."""
    head, keys = run.name.split("_", 1)[0], run.swept if run.swept is not None else keys
    if keys and head.isdigit():
        return file_label("_".join([head, *(f"{key}={run_value(run, key)}" for key in keys)]))
    return file_label(run.name)


def file_label(text: str) -> str:
    """`slug(text)` as a part of a figure's file name: at most LABEL characters; a longer one is cut and
    ends in a hash of the whole, so two long names stay two files."""
    whole = slug(text, limit=len(text) + 1, empty="run")
    if len(whole) <= LABEL:
        return whole
    return f"{whole[: LABEL - 9]}_{hashlib.sha1(whole.encode()).hexdigest()[:8]}"


def run_title(run: Run, keys: Sequence[str]) -> str:
    """How figures name a run: its swept values (`guidance.w_g=4`) in a sweep, else its overrides,
    with the extractor it ran when the summary says."""
    keys = run.swept if run.swept is not None else keys  # its own sweep's keys, once grouped
    own = [override for override in run.overrides if compared(override.partition("=")[0])]
    parts = [f"{key}={run_value(run, key)}" for key in keys] or own or [run.name]
    extractor = (run.summary or {}).get("extractor")
    return " ".join(parts) + (f" ({extractor})" if extractor else "")


def retention_table(runs: Sequence[Run], keys: Sequence[str]) -> pd.DataFrame:
    """Each complete run's retention per attribute and kind of image (final, best), with its
    interval: one row per run, kind and attribute, in run order."""
    rows = [
        {"run": run_title(run, keys), "kind": kind, "attribute": name, **values}
        for run in runs
        for kind, by_name in ((run.summary or {}).get("retention") or {}).items()
        for name, values in by_name.items()
    ]
    return pd.DataFrame(rows, columns=["run", "kind", "attribute", "value", "low", "high", "samples"])


TRANSFER_COLUMNS = ["run", "title", "check", "variant", "kind", "value", "low", "high"]


def transfer_table(runs: Sequence[Run], keys: Sequence[str]) -> pd.DataFrame:
    """Does each complete run's match transfer? Per run (its folder's name and its title), check (each
    judge's distance over the unguided images'; the guide's distance and feature movement after small
    changes over the target image's), variant and kind of image: the ratio with its 95 % interval
    (docs/judges.md)."""
    rows = []
    for run in runs:
        summary, named = run.summary or {}, [run.name, run_title(run, keys)]
        for name, by_variant in (summary.get("judges") or {}).items():
            for variant, by_kind in by_variant.items():
                for kind, entry in by_kind.items():
                    if variant == "unguided":  # the reference: its ratio is 1 by definition
                        rows.append([*named, f"judge {name}", variant, kind, 1.0, None, None])
                    elif entry.get("ratio") is not None:
                        interval = entry.get("ratio_interval") or [None, None]
                        rows.append([*named, f"judge {name}", variant, kind, entry["ratio"], *interval])
        for variant, by_kind in (summary.get("robustness") or {}).items():
            for kind, by_change in by_kind.items():
                for change, measures in by_change.items():
                    for measure, what in (("distance", "guide distance"), ("sensitivity", "feature movement")):
                        entry = measures[measure]
                        interval = entry.get("interval") or [None, None]
                        check = f"{what} after {'all changes' if change == 'all' else change}"
                        rows.append([*named, check, variant, kind, entry["value"], *interval])
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)
