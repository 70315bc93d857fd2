"""Weights & Biases, the one way fsa drives it: every task's job and `fsa-report` log through `Tracker`.

A tracker holds one W&B run per *stream*: the guide task opens one per variant (guided and each
baseline), embed and represent one each, the report one. Rows are held until `send()`, which the job
calls whenever a checkpoint is written, so W&B gets exactly what a checkpoint covers and a run killed
and resumed logs every step once; a resumed job continues the same W&B runs (`run_ids`).

How the workspace reads: group = the experiment (or "fsa") and when the run or sweep started, so a
sweep's jobs sit together; job type = the stream; run name = the job's overrides, with the stream's
label where a job has several ("guidance.w_g=4 [guided]").
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("fsa")


def logged_in() -> bool:
    """An API key in the environment or in ~/.netrc; checked without touching the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    """auto: online when logged in, else offline."""
    if mode == "auto":
        return "online" if logged_in() else "offline"
    return mode


class Tracker:
    """The W&B runs of one job (or one report), written under `directory/wandb`.

    `logger` is the `logger` config (mode, project, entity, group, name, tags): its group and name
    win over the defaults given here. `run_ids` ({stream: W&B id}) continues those runs (a resume)."""

    def __init__(
        self,
        logger: Any,
        directory: Path,
        config: dict[str, Any],
        group: str | None,
        name: str | None,
        run_ids: dict[str, str] | None = None,
    ) -> None:
        import wandb

        self._wandb = wandb
        self.logger, self.directory, self.config = logger, Path(directory), config
        self.mode = resolve_mode(logger.mode)
        self.group = logger.group or group
        self.name = logger.name or name
        self._saved_ids = dict(run_ids or {})
        self.runs: dict[str, Any] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}

    def open(self, stream: str, job_type: str, label: str | None = None, config: dict[str, Any] | None = None) -> Any:
        """The W&B run of `stream` (job type `job_type`), opened or, on a resume, continued; `label` is
        added to the run's name and `config` to the job's config."""
        name = f"{self.name} [{label}]" if label and self.name else label or self.name
        run_id = self._saved_ids.get(stream)
        self.runs[stream] = self._wandb.init(
            project=self.logger.project,
            entity=self.logger.entity,
            group=self.group,
            job_type=job_type,
            name=name,
            tags=list(self.logger.tags),
            config={**self.config, **(config or {})},
            dir=str(self.directory),
            mode=self.mode,
            reinit="create_new",  # several runs open side by side (one per stream) until the job ends
            id=run_id,
            resume="allow" if run_id else None,
            settings=self._wandb.Settings(silent=True),  # fsa's log already says where the runs are
        )
        self._pending[stream] = []
        return self.runs[stream]

    def define(self, stream: str, metric: str, **options: Any) -> None:
        """A metric's x axis and summary (`step_metric=`, `summary=`, `hidden=`), as W&B's define_metric."""
        self.runs[stream].define_metric(metric, **options)

    def log(self, stream: str, row: dict[str, Any]) -> None:
        """A row of metrics or media for the stream's run, sent with the next `send()`."""
        self._pending[stream].append(row)

    def summarise(self, stream: str, values: dict[str, Any]) -> None:
        """Summary values of the stream's run, set when the job finishes."""
        self._summaries.setdefault(stream, {}).update(values)

    def image(self, path: Path, caption: str | None = None) -> Any:
        return self._wandb.Image(str(path), caption=caption)

    def table(self, table: pd.DataFrame) -> Any:
        """A W&B table of a data frame; missing values (pandas' NA is not JSON) become None."""
        clean = table.astype(object).where(table.notna(), None)
        return self._wandb.Table(columns=[str(c) for c in clean.columns], data=clean.values.tolist())

    def log_outputs(self, stream: str, tables: dict[str, pd.DataFrame], figures: dict[str, Path]) -> None:
        """Tables and figures (PNG files), each under its key, in one row of the stream's run."""
        row: dict[str, Any] = {key: self.table(table) for key, table in tables.items()}
        self.log(stream, row | {key: self.image(path) for key, path in figures.items()})

    def send(self) -> None:
        """Log the rows held since the last send (the job calls this when a checkpoint covers them)."""
        for stream, rows in self._pending.items():
            for row in rows:
                self.runs[stream].log(row)
            rows.clear()

    def run_ids(self) -> dict[str, str]:
        """{stream: W&B run id}: what a checkpoint keeps so that a resumed job continues the same runs."""
        return {stream: run.id for stream, run in self.runs.items()}

    def record(self) -> dict[str, Any]:
        """What summary.json says of the W&B runs: mode, group and each stream's run id and folder."""
        runs = {stream: {"id": run.id, "dir": run.dir} for stream, run in self.runs.items()}
        return {"mode": self.mode, "group": self.group, "runs": runs}

    def finish(self, facts: dict[str, Any] | None = None, exit_code: int = 0) -> None:
        """A finished job sends what it holds and sets each run's summary, with `facts` (status, time)
        in every one; a failed or interrupted job records only its facts and drops its rows, since
        those after the last checkpoint are made again on resume."""
        if exit_code == 0:
            self.send()
        for stream, run in self.runs.items():
            own = self._summaries.get(stream, {}) if exit_code == 0 else {}
            for key, value in {**(facts or {}), **own}.items():
                run.summary[key] = value
            run.finish(exit_code=exit_code)
        if exit_code == 0 and self.runs:
            log.info("W&B runs (%s): %s", self.mode, ", ".join(run.dir for run in self.runs.values()))
