"""A paper's claims as a task measures them: each with fsa's figure, its 95 % interval, the rule it is
judged by and whether it holds. Tasks write the table as `findings.csv`; the report page shows it."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

COLUMNS = ["measure", "value", "low", "high", "rule", "holds"]


@dataclass(frozen=True)
class Finding:
    claim: str  # where the paper makes it ("Fig. 3: ...")
    measure: str  # what fsa measured, in words
    value: float
    interval: Sequence[float] | None  # its 95 % interval; None where there is none
    rule: str  # when the claim holds, in terms of value, low and high ("high < 0")
    holds: bool | str  # a verdict, or why there can be none ("untestable: ...")

    def row(self) -> dict[str, object]:
        low, high = self.interval if self.interval is not None else (math.nan, math.nan)
        verdict = self.holds if isinstance(self.holds, str) else ("yes" if self.holds else "no")
        return {
            "claim": self.claim,
            "measure": self.measure,
            "value": self.value,
            "low": low,
            "high": high,
            "rule": self.rule,
            "holds": verdict,
        }


def findings_table(findings: Sequence[Finding]) -> pd.DataFrame:
    """One row per claim (the index), columns COLUMNS."""
    return pd.DataFrame([f.row() for f in findings], columns=["claim", *COLUMNS]).set_index("claim")


def log_findings(table: pd.DataFrame, log: logging.Logger) -> None:
    for claim, row in table.iterrows():
        log.info("%s: %.3g [%.3g, %.3g] -> %s", claim, row["value"], row["low"], row["high"], row["holds"])
