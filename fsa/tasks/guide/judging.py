"""Phase 4 of the guide task: each sample judged (calibrated distance, the oracle's verdicts); with an
unguided twin, each attribute's retention; and whether the match is real: the judges' transfer ratios
and the robustness check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from PIL import Image

from fsa.attributes.options import AttributesOptions
from fsa.data.targets import Target, resize_images
from fsa.errors import FsaError
from fsa.evaluation import KINDS, attribute_distances, entropy, retention_figures
from fsa.extractors.base import FeatureExtractor, features_of
from fsa.guidance.options import GUIDED
from fsa.intervals import mean_over_targets, ratio_of_means
from fsa.job import build
from fsa.judges.changes import small_changes
from fsa.judges.options import RobustnessOptions
from fsa.pictures import read_image
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
    targets = torch.tensor([pair[0].target_index for pair in pairs])
    return retention_figures(found[GUIDED], found["unguided"], options.resamples, targets)


# ---------------------------------------------------------------- is the match real? (docs/judges.md)


@dataclass(frozen=True)
class JudgedImages:
    """The saved images the judges and the robustness check read, each read once: each target's (by
    target index, the targets with an image) and, per (variant, kind of image), the samples of those
    targets with theirs."""

    targets: dict[int, Image.Image]
    samples: dict[tuple[str, str], list[tuple[SampleResult, Image.Image]]]


def judged_images(samples: dict[str, list[SampleResult]], folder: RunFolder, targets: list[Target]) -> JudgedImages:
    target_images = {
        i: read_image(folder.target_image(GUIDED, i, t.name)) for i, t in enumerate(targets) if t.image is not None
    }
    judged = {
        (variant, kind): [
            (r, read_image(folder.path(getattr(r, f"{kind}_image"))))
            for r in records
            if r.target_index in target_images
        ]
        for variant, records in samples.items()
        for kind in KINDS
    }
    return JudgedImages(target_images, judged)


def load_judge(node: Any, name: str, device: torch.device) -> tuple[FeatureExtractor | None, str]:
    """A judge, or None and why not: a judge whose weights are not on this machine (and cannot be
    downloaded) is skipped, not fatal."""
    try:
        return build(node).to(device), ""
    except (FsaError, OSError) as error:
        reason = str(error).splitlines()[0]
        log.warning("judge %s skipped: %s", name, reason)
        return None, reason


def judge_transfer(
    judges: Any, images: JudgedImages, folder: RunFolder, device: torch.device
) -> tuple[dict[str, Any], dict[str, str]]:
    """Per judge, its distance from each variant's images to the target images, and the transfer ratio
    E[d(variant)] / E[d(unguided)] paired by target and seed (judges.csv has each sample's distance).
    Judges load one at a time and are freed after; those that cannot load are returned as skipped."""
    rows, skipped = [], {}
    for name, node in judges.items():
        judge, reason = load_judge(node, name, device)
        if judge is None:
            skipped[name] = reason
            continue
        target_features = dict(zip(images.targets, features_of(judge, list(images.targets.values())), strict=True))
        for (variant, kind), pairs in images.samples.items():
            features = features_of(judge, [image for _, image in pairs])
            for (r, _), feature in zip(pairs, features, strict=True):
                distance = float((feature - target_features[r.target_index]).pow(2).sum())
                rows.append(_row(r, variant, kind) | {"judge": name, "distance": distance})
        del judge
    pd.DataFrame(rows).to_csv(folder.judges_file, index=False)
    figures = {
        name: _against_unguided([row for row in rows if row["judge"] == name], "distance")
        for name in judges
        if name not in skipped
    }
    return figures, skipped


def robustness(
    extractor: FeatureExtractor,
    options: RobustnessOptions,
    images: JudgedImages,
    targets: list[Target],
    folder: RunFolder,
) -> dict[str, Any]:
    """The guide's view of small changes T (shift, crop, JPEG, noise) of a generated image x, beside
    the same changes of the target image x_s, paired by target (robustness.csv: each sample's):

    - sensitivity: how far T moves the features, ||f(T x) - f(x)||^2 over ||f(T x_s) - f(x_s)||^2. A
      real match moves as a real image does (near 1); an adversarial one collapses (far above 1).
    - distance: the guide's distance after the change, d(f(T x), f_s) over d(f(T x_s), f_s). It also
      holds the match's own distance d(f(x), f_s), so it is large wherever T hardly moves the target
      (JPEG, noise on clean digits) even for a real match: read it beside the sensitivity.
    """
    reference = {i: _changed(extractor, image, options, targets[i].feature) for i, image in images.targets.items()}
    rows = []
    for (variant, kind), pairs in images.samples.items():
        for r, image in pairs:
            changed = _changed(extractor, image, options, targets[r.target_index].feature)
            for change, (distance, movement) in changed.items():
                target_distance, target_movement = reference[r.target_index][change]
                rows.append(
                    _row(r, variant, kind)
                    | {"change": change, "distance": distance, "target_distance": target_distance}
                    | {"movement": movement, "target_movement": target_movement}
                )
    pd.DataFrame(rows).to_csv(folder.robustness_file, index=False)
    figures: dict[str, Any] = {}
    for variant, kind in images.samples:
        chosen = [row for row in rows if row["variant"] == variant and row["kind"] == kind]
        if not chosen:
            continue
        by_change = {change: [row for row in chosen if row["change"] == change] for change in options.enabled()}
        by_change["all"] = _summed_over_changes(chosen)
        figures.setdefault(variant, {})[kind] = {
            change: {
                "sensitivity": ratio_of_means(picked, "movement", "target_movement"),
                "distance": ratio_of_means(picked, "distance", "target_distance"),
            }
            for change, picked in by_change.items()
        }
    return figures


def _changed(
    extractor: FeatureExtractor, image: Image.Image, options: RobustnessOptions, target: torch.Tensor
) -> dict[str, tuple[float, float]]:
    """Per change T of `image` x: the distance d(f(T x), f_s) (Eq. 2) and the movement ||f(T x) - f(x)||^2."""
    changes = small_changes(image, options)
    features = features_of(extractor, [image, *changes.values()])
    distances = (features[1:] - target.float().cpu()).pow(2).sum(dim=1).tolist()
    movements = (features[1:] - features[0]).pow(2).sum(dim=1).tolist()
    return dict(zip(changes, zip(distances, movements, strict=True), strict=True))


def _row(record: SampleResult, variant: str, kind: str) -> dict[str, Any]:
    return {
        "variant": variant,
        "kind": kind,
        "target": record.target,
        "target_index": record.target_index,
        "sample": record.sample,
        "seed": record.seed,
    }


def _summed_over_changes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per sample with its figures summed over the changes (each change weighs as its target's)."""
    figures = ("distance", "target_distance", "movement", "target_movement")
    summed: dict[tuple[int, int], dict[str, Any]] = {}
    for row in rows:
        into = summed.setdefault(
            (row["target_index"], row["sample"]),
            {"target_index": row["target_index"], "sample": row["sample"]} | dict.fromkeys(figures, 0.0),
        )
        for figure in figures:
            into[figure] += row[figure]
    return list(summed.values())


def _against_unguided(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Per variant and kind, the mean of `key` with its interval and, beside the unguided twin (same
    target and seed), the ratio of means with its paired interval."""
    unguided = {
        (row["kind"], row["target_index"], row["sample"]): row[key] for row in rows if row["variant"] == "unguided"
    }
    figures: dict[str, Any] = {}
    for variant in dict.fromkeys(row["variant"] for row in rows):
        for kind in KINDS:
            chosen = [row for row in rows if row["variant"] == variant and row["kind"] == kind]
            if not chosen:
                continue
            entry = mean_over_targets(chosen, key)
            if unguided and variant != "unguided":
                paired = [row | {"unguided": unguided[(kind, row["target_index"], row["sample"])]} for row in chosen]
                ratio = ratio_of_means(paired, key, "unguided")
                entry |= {"ratio": ratio["value"], "ratio_interval": ratio["interval"]}
            figures.setdefault(variant, {})[kind] = entry
    return figures
