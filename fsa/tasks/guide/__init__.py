"""`task=guide`: the paper's feature guidance on every target, and the baselines with the same seeds.

The work is in `fsa.tasks.guide.run` (loaded when a job runs); this module only declares the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from fsa.errors import ConfigError
from fsa.tasks import Declaration

SELF_GUIDED = "fsa.guidance.self_guided.SelfGuidance"
UNET_BLOCK_EXTRACTOR = "fsa.extractors.unet_block.UNetBlockExtractor"


@dataclass(frozen=True)
class GuideOptions:
    """task=guide has no settings of its own: its groups (sampler, guidance, ...) are its settings."""


class GuideTask(Declaration):
    name = "guide"
    options = GuideOptions
    uses = (
        "model",
        "sampler",
        "guidance",
        "extractor",
        "dataset",
        "speed",
        "dtype",
        "batch_size",
        "targets_per_batch",
        "max_targets",
        "max_samples",
        "baselines",
        "oracle",
        "attributes",
        "judges",
        "robustness",
        "record_gradients",
    )
    outputs = (
        "images",
        "baselines",
        "evaluations.csv",
        "gradients.pt",
        "attributes.csv",
        "judges.csv",
        "robustness.csv",
        "overview.png",
    )
    tables: ClassVar[
        dict[str, str]
    ] = {}  # fsa-report builds the guide's tables and figures from its summary and images
    metrics = (
        "mean_best_distance",
        "median_best_distance",
        "mean_final_distance",
        "calibrated_best_distance",
        "best_oracle_agreement",
        "final_oracle_agreement",
        "guided_iterations_per_sample",
        "network_evaluations_per_sample",
        "feature_evaluations_per_sample",
        "proof.distance_ratio",
        "speed.seconds_per_sample",
        "speed.seconds_per_iteration",
        "wall_time_s",
    )

    work = "fsa.tasks.guide.run.guide"
    state_at = "fsa.tasks.guide.decoding.GuideState"

    def check(self, cfg: Any) -> None:
        """Self-guided matching reads the UNet block's representation; Fig. 2's record is of Eq. 3's gradient."""
        if cfg.guidance._target_ == SELF_GUIDED and cfg.extractor._target_ != UNET_BLOCK_EXTRACTOR:
            raise ConfigError(
                "guidance=self_guided matches the diffusion model's own representation: it needs "
                f"extractor=unet_block, got {cfg.extractor._target_}"
            )
        if cfg.guidance._target_ == SELF_GUIDED and cfg.record_gradients:
            raise ConfigError("record_gradients records Eq. 3's gradient, which guidance=self_guided has not")

    def headline(self, summary: Mapping[str, Any]) -> str:
        figures = [
            f"{label} {summary[key]:.4g}"
            for key, label in (("mean_best_distance", "mean best distance"), ("mean_final_distance", "mean final"))
            if isinstance(summary.get(key), int | float)
        ]
        ratio = (summary.get("proof") or {}).get("distance_ratio")
        if ratio is not None:
            figures.append(f"{ratio:.3g} x unguided")
        match = (summary.get("match") or {}).get("guided") or {}
        if match.get("judges"):
            figures.append(f"transfers to {match['judges_transferred']}/{match['judges']} judges")
        if match.get("small_changes"):
            figures.append(f"{match['small_changes']} to small changes")
        return ", ".join(figures) or "no samples"
