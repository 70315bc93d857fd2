"""`task=represent`: what a diffusion UNet's own block representations phi_t keep (Kadkhodaie et al.).

The work is in `fsa.tasks.represent.run` (loaded when a job runs); this module only declares the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fsa.representation.options import RepresentOptions
from fsa.tasks import Declaration

FOLDER = "representation"  # its tables and figures, in the run folder


class RepresentTask(Declaration):
    name = "represent"
    options = RepresentOptions
    uses = ("model", "extractor", "dataset")
    outputs = (FOLDER, "overview.png")
    tables: ClassVar[dict[str, str]] = {
        f"{FOLDER}/neighbours.csv": "nearest-neighbour class agreement per representation and noise level",
        f"{FOLDER}/sparsity.csv": "participation ratio of phi_t over its channels, as a fraction of them "
        "(lower: sparser)",
        f"{FOLDER}/stability.csv": "cosine of phi_t to phi at the reference noise level",
        f"{FOLDER}/sparsity_input.csv": "participation ratio of the spatial means of each block's input channels",
        f"{FOLDER}/findings.csv": "Kadkhodaie et al.'s claims: fsa's figure, 95 % interval, rule, verdict",
    }
    work = "fsa.tasks.represent.run.represent"
    state_at = None  # seconds on the digits: a stopped job starts over
    metrics = ("neighbours.mid_block", "neighbours.pixels", "chance", "wall_time_s")

    def headline(self, summary: Mapping[str, Any]) -> str:
        neighbours = summary.get("neighbours") or {}
        blocks = [block for block in summary.get("blocks") or [] if block in neighbours]
        if not blocks:
            return "no representation measured"
        block = max(blocks, key=neighbours.__getitem__)
        pixels, chance = neighbours.get("pixels", float("nan")), summary.get("chance", float("nan"))
        found = f"nearest-neighbour class agreement {neighbours[block]:.3g} ({block}"
        return found + f"; pixels {pixels:.3g}, chance {chance:.2g})"
