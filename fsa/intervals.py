"""95 % intervals on the figures fsa reports: Wilson's for a proportion (oracle agreement), a percentile
bootstrap over targets for distances (a target's samples kept together: they share its image, so they
are not independent draws), paired for a ratio of two runs on the same targets and seeds. Pure numpy:
the report reads them without the ML stack."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

LEVEL = 0.95  # every interval fsa prints is a 95 % one
RESAMPLES = 2000
ROW_RESAMPLES = 1000  # draws of independent rows (images, seeds, channels): their statistics are cheap but many
Z = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, trials: int) -> list[float] | None:
    """Wilson's score interval for a proportion (LEVEL); None without trials. Unlike p +- z se it stays
    inside [0, 1] and is not empty at 0 or 1 successes out of few."""
    if trials == 0:
        return None
    p, z2 = successes / trials, Z * Z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def target_bootstrap(
    groups: Sequence[np.ndarray], statistic: Callable[[np.ndarray], float], seed: int = 0, resamples: int = RESAMPLES
) -> list[float] | None:
    """The LEVEL percentile-bootstrap interval of `statistic` over targets: each of `resamples` draws the
    targets with replacement and keeps all of a target's rows together (a target's samples share its
    image, so they are not independent draws). `groups`: one array per target, a row per sample (and
    for a paired statistic, a column per run compared). None for fewer than two targets: one target
    says nothing of how the figure varies across targets."""
    if len(groups) < 2:
        return None
    picks = np.random.default_rng(seed).integers(len(groups), size=(resamples, len(groups)))
    return percentile_interval(np.array([statistic(np.concatenate([groups[i] for i in pick])) for pick in picks]))


def row_bootstrap(
    n: int, statistic: Callable[[np.ndarray], Any], resamples: int = ROW_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """`statistic` of `resamples` draws of n independent rows (by index, with replacement): an array of
    its values, one per draw (a vector statistic gives one row per draw). For rows that are independent
    draws, such as images or channels; a target's samples are not (`target_bootstrap`)."""
    picks = np.random.default_rng(seed).integers(n, size=(resamples, n))
    return np.array([statistic(pick) for pick in picks])


def mean_interval(values: np.ndarray, seed: int = 0) -> list[float]:
    """The LEVEL interval of the mean of `values`, one per independent row, by `row_bootstrap`."""
    return percentile_interval(row_bootstrap(len(values), lambda rows: values[rows].mean(), seed=seed))


def percentile_interval(values: np.ndarray) -> list[float]:
    """The LEVEL percentile interval of bootstrap `values` (non-finite ones dropped; NaNs if none is left)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return [math.nan, math.nan]
    return [float(v) for v in np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])]


def by_target(samples: Sequence[dict[str, Any]], *keys: str) -> list[np.ndarray]:
    """The samples' `keys` as one array per target (rows: its samples, in order)."""
    grouped: dict[int, list[list[float]]] = {}
    for s in samples:
        grouped.setdefault(s["target_index"], []).append([float(s[key]) for key in keys])
    return [np.array(rows) for _, rows in sorted(grouped.items())]


def ratio_of_means(rows: Sequence[dict[str, Any]], numerator: str, denominator: str) -> dict[str, Any]:
    """mean(numerator) / mean(denominator) over `rows` (a row per sample, both figures measured on it:
    paired), with its interval by a paired bootstrap over targets."""
    groups = by_target(rows, numerator, denominator)
    stacked = np.concatenate(groups)
    return {
        "value": float(stacked[:, 0].mean() / stacked[:, 1].mean()),
        "interval": target_bootstrap(groups, lambda a: a[:, 0].mean() / a[:, 1].mean()),
    }


def mean_over_targets(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    """The mean of `key` over `rows` with its interval by a bootstrap over targets."""
    groups = by_target(rows, key)
    return {"mean": float(np.concatenate(groups).mean()), "interval": target_bootstrap(groups, np.mean)}


def distance_ratio_interval(guided: Sequence[dict[str, Any]], unguided: Sequence[dict[str, Any]]) -> list[float] | None:
    """The interval of mean best distance guided / unguided by a paired bootstrap over targets: each
    draw keeps a target's guided and unguided samples (same seeds) together."""
    paired = {(s["target_index"], s["sample"]): s["best_distance"] for s in unguided}
    rows = [s | {"unguided": paired[(s["target_index"], s["sample"])]} for s in guided]
    return ratio_of_means(rows, "best_distance", "unguided")["interval"]
