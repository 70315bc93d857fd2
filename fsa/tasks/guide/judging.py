"""Phase 4 of the guide task: each sample judged (calibrated distance, the oracle's verdicts) and, with
an unguided twin, each attribute's retention."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from fsa.attributes.options import AttributesOptions
from fsa.data.targets import Target, resize_images
from fsa.evaluation import attribute_distances, entropy, retention_figures
from fsa.guidance.options import GUIDED
from fsa.tracking.run_folder import RunFolder, SampleResult

log = logging.getLogger("fsa")


def judge(records: list[SampleResult], reference: float | None, oracle: Any, folder: RunFolder) -> None:
    """Add the calibrated distance and, with an oracle, its verdict on each best and final image."""
    for r in records:
        r.calibrated_best_distance = r.best_distance / reference if reference else None
    if oracle is None or not records:
        return
    for kind in ("best", "final"):
        probabilities = oracle.judge_files([folder.path(getattr(r, f"{kind}_image")) for r in records])
        for r, p, h in zip(records, probabilities, entropy(probabilities), strict=True):
            setattr(r, f"{kind}_oracle_class", int(p.argmax()))
            setattr(r, f"{kind}_oracle_confidence", float(p.max()))
            setattr(r, f"{kind}_oracle_entropy", float(h))


def retention(
    options: AttributesOptions,
    measures: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    samples: dict[str, list[SampleResult]],
    targets: list[Target],
    folder: RunFolder,
) -> dict[str, Any] | None:
    """Each attribute's retention (guided against unguided, the same targets and seeds), over the
    targets that have an image; each sample's distances go to attributes.csv."""
    images = {
        i: resize_images(t.image[None], options.image_size)[0] for i, t in enumerate(targets) if t.image is not None
    }
    unguided = {(r.target_index, r.sample): r for r in samples["unguided"]}
    pairs = [(r, unguided[(r.target_index, r.sample)]) for r in samples[GUIDED] if r.target_index in images]
    if not pairs:
        log.info("retention not measured: no target has an image")
        return None
    variants = (GUIDED, "unguided")
    found = {
        variant: attribute_distances([pair[side] for pair in pairs], images, measures, options, folder)
        for side, variant in enumerate(variants)
    }
    rows = [
        {"variant": variant, "kind": kind, "target": r.target, "sample": r.sample, "seed": r.seed}
        | {"attribute": name, "distance": float(distance[i])}
        for side, variant in enumerate(variants)
        for kind, by_name in found[variant].items()
        for name, distance in by_name.items()
        for i, r in enumerate(pair[side] for pair in pairs)
    ]
    pd.DataFrame(rows).to_csv(folder.attributes_file, index=False)
    return retention_figures(found[GUIDED], found["unguided"], options.resamples)
