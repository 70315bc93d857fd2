"""`task=embed`: from images back to the seeds of the deterministic DDIM generator (Asperti et al.).

The work is in `fsa.tasks.embed.run` (loaded when a job runs); this module only declares the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fsa.embedding.options import EmbedOptions
from fsa.tasks import Declaration

FOLDER = "embedding"  # its tables and figures, in the run folder


class EmbedTask(Declaration):
    name = "embed"
    options = EmbedOptions
    uses = ("model", "extractor", "dataset", "max_targets")
    outputs = (FOLDER, "overview.png")
    tables: ClassVar[dict[str, str]] = {
        f"{FOLDER}/methods.csv": "reconstruction MSE per method ([0, 1] pixel units)",
        f"{FOLDER}/findings.csv": "Asperti et al.'s claims: fsa's figure, 95 % interval, rule, verdict",
    }
    metrics = ("best_dataset_mse", "best_generated_mse", "cloud.member_mse", "cloud.mean_seed_mse", "wall_time_s")

    work = "fsa.tasks.embed.run.embed"
    state_at = "fsa.tasks.embed.units.EmbedState"

    def headline(self, summary: Mapping[str, Any]) -> str:
        rows = [row for row in summary.get("methods") or [] if row.get("set") == "dataset"]
        if not rows:
            return "no methods"
        best = min(rows, key=lambda row: row["mse"])
        return f"reconstruction MSE {best['mse']:.3g} by {best['method']} (best of {len(rows)} methods)"
