"""Asperti et al.'s claims that `task=embed` measures, each with fsa's figure, its 95 % interval, the
rule it is judged by and whether it holds (`embedding/findings.csv`, on the report page)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fsa.findings import Finding, findings_table
from fsa.intervals import mean_interval, percentile_interval, row_bootstrap


def mean_draws(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """Bootstrap draws of the mean of `values` (independent images)."""
    return row_bootstrap(len(values), lambda rows: values[rows].mean(), seed=seed)


def findings(table: pd.DataFrame, summary: dict[str, Any], seed_dimensions: int) -> pd.DataFrame:
    """From the per-image reconstruction table (set, method, image, mse) and the task's summary."""
    dataset = table[table["set"] == "dataset"].pivot(index="image", columns="method", values="mse")
    generated = table[table["set"] == "generated"].pivot(index="image", columns="method", values="mse")
    networks = [m for m in dataset.columns if m.startswith("network ") and not m.endswith(" + gd")]
    cloud, independence = summary.get("cloud") or {}, summary.get("independence") or {}
    found: list[Finding] = []

    def lower(a: str, b: str, claim: str, what: str) -> None:
        """Method a's MSE against method b's on the same held-out images: does a embed better?"""
        gap = (dataset[a] - dataset[b]).to_numpy()
        interval = mean_interval(gap)
        found.append(
            Finding(claim, f"MSE of {a} - of {b}, {what}", float(gap.mean()), interval, "high < 0", interval[1] < 0)
        )

    unets = [m for m in networks if m.startswith("network unet")]
    convs = [m for m in networks if m.startswith("network conv")]
    if unets and convs:
        best = [min(group, key=lambda m: dataset[m].mean()) for group in (unets, convs)]
        lower(*best, "Table 1: a U-Net embeds best of the networks", "the best of each, held-out images")
    refined = [m for m in dataset.columns if m.endswith(" + gd")]
    if refined:
        lower(
            refined[-1],
            refined[-1].removesuffix(" + gd"),
            "Sec. 5.2: gradient descent refines a network's seeds",
            "held-out images",
        )
    if networks and len(generated):
        last = networks[-1]
        made, real = generated[last].to_numpy(), dataset[last].to_numpy()
        interval = percentile_interval(mean_draws(made) - mean_draws(real, seed=1))
        found.append(
            Finding(
                "Table 2: generated images embed better than dataset images",
                f"MSE of {last} on generated - on held-out images",
                float(made.mean() - real.mean()),
                interval,
                "high < 0",
                interval[1] < 0,
            )
        )
    if "same_over_other" in independence:
        interval = independence["same_over_other_interval"]
        found.append(
            Finding(
                "Sec. 3.3: the latent space does not depend on the model",
                "image MSE of one seed through two models / of two seeds through them",
                independence["same_over_other"],
                interval,
                "high < 0.1",
                interval[1] < 0.1,
            )
        )
    if "combination_mse" in cloud and "random seed" in dataset:
        floor, interval = float(dataset["random seed"].mean()), cloud["combination_mse_interval"]
        found.append(
            Finding(
                "Fig. 12: the cloud is convex: combinations of its seeds remake the image",
                f"MSE of convex combinations of the cloud's seeds (random seeds: {floor:.3g})",
                cloud["combination_mse"],
                interval,
                "high < random / 10",
                interval[1] < floor / 10,
            )
        )
    if "centre_ratio" in cloud:
        interval = cloud["centre_ratio_interval"]
        found.append(
            Finding(
                "Sec. 5.2: a network's seed is a canonical one, near the cloud's centre",
                f"distance of {cloud['network']}'s seed to the cloud's mean / a seed's mean distance",
                cloud["centre_ratio"],
                interval,
                "high < 1",
                interval[1] < 1,
            )
        )
    change = list((cloud.get("component_change") or {}).values())  # along the major components first
    if len(change) >= 2:
        half, size = len(change) // 2, cloud["size"]
        ratio = float(np.mean(change[half:]) / max(np.mean(change[:half]), 1e-30))
        verdict = ratio > 1 if size > seed_dimensions else f"untestable: {size} seeds span {size - 1} directions"
        found.append(
            Finding(
                "Sec. 5.1.1: minor components change the image more than major ones",
                f"image change along the {len(change) - half} minor / the {half} major components shown "
                f"({size} seeds, {seed_dimensions} dimensions)",
                ratio,
                None,
                "value > 1",
                verdict,
            )
        )
    return findings_table(found)
