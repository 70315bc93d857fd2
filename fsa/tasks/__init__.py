"""Tasks: what one fsa job does, each behind the same protocol, found through its YAML.

A task is one module (or folder) with a class that `Task` describes, and one YAML in a `task/` config
folder that names the class (`_target_`) and gives its settings. `fsa.job` does everything around a
task's work (the run folder, its log, validation, the device, checkpoints, W&B, the summary); the
task does its work in `run(job)`. The config (`fsa.config.validate`), the command line (`fsa --help`)
and the report (`fsa-report`) find tasks through `task_of` and `available_tasks` here.

This module and every task's class load no ML stack: a task imports its heavy modules in `run`, so
that a config is checked, and `fsa --help` answers, in about a second.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import yaml

from fsa import CONF_DIR
from fsa.errors import ConfigError

# Keys every task's root config holds, whatever it uses: where it runs and how a job is kept.
COMMON = (
    "task",
    "logger",
    "seed",
    "device",
    "weights",
    "data_dir",
    "checkpoint_every",
    "resume",
    "fresh",
    "progress",
    "threads",
    "objective",
)
DEFAULT_TASK = "guide"  # a run folder whose config names no task (written before tasks had names)


class Task(Protocol):
    """What a task declares, and its work. Class attributes, so the config reads them without running it."""

    name: ClassVar[str]  # the `task=` option
    options: ClassVar[type]  # a dataclass of its settings, the `task.*` keys; checked in its __post_init__
    uses: ClassVar[tuple[str, ...]]  # the config groups and top-level keys it reads beyond COMMON
    outputs: ClassVar[tuple[str, ...]]  # what it writes into the run folder beside the job's own files
    tables: ClassVar[dict[str, str]]  # its CSV tables (run-folder relative) that fsa-report shows, with captions
    state: ClassVar[type | None]  # its checkpoint state (a dataclass), None when it is not checkpointed
    metrics: ClassVar[tuple[str, ...]]  # numeric summary keys (dotted) a sweeper may take as its objective

    def check(self, cfg: Any) -> None:
        """Checks across the groups it uses that their own schemas cannot make (a ConfigError)."""

    def run(self, job: Any) -> dict[str, Any]:
        """The work, given the `fsa.job.Job` (a layer above this registry); returns the summary's
        task-specific part (the job adds status, time, memory)."""

    def headline(self, summary: Mapping[str, Any]) -> str:
        """The run's result in one line, for fsa-report's runs table."""


def config_dirs() -> list[Path]:
    """Where `task/<name>.yaml` files are looked for: the user's config folder (as Hydra's search path
    says, $FSA_CONFIG_DIR else ~/.config/fsa), then fsa's own."""
    user = Path(os.environ.get("FSA_CONFIG_DIR") or Path.home() / ".config" / "fsa")
    return [user, CONF_DIR]


def available_tasks() -> dict[str, str]:
    """{task name: the class its YAML names}, for every task YAML found (the user's first)."""
    found: dict[str, str] = {}
    for folder in reversed(config_dirs()):
        for path in sorted((folder / "task").glob("*.yaml")):
            content = yaml.safe_load(path.read_text()) or {}
            if isinstance(content, dict) and content.get("_target_"):
                found[path.stem] = str(content["_target_"])
    return found


def import_attribute(path: str) -> Any:
    """The object at `path` ("package.module.name")."""
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"task: '{path}' cannot be imported ({error})") from error


def load_task(target: str) -> Task:
    """The task class at `target` ("package.module.Class"), instantiated."""
    return import_attribute(target)()


class Declaration:
    """What fsa's task declarations share: no checks across groups unless they add some, and the work
    (`work`: "module.function") and the checkpoint state (`state_at`: "module.Class", or None) imported
    only when a job needs them, so that a declaration loads no ML stack."""

    work: ClassVar[str]
    state_at: ClassVar[str | None] = None
    tables: ClassVar[dict[str, str]] = {}

    @property
    def state(self) -> type | None:
        return None if self.state_at is None else import_attribute(self.state_at)

    def check(self, cfg: Any) -> None:
        """No checks across groups: each group's own schema and signature checks are enough."""

    def run(self, job: Any) -> dict[str, Any]:
        return import_attribute(self.work)(job)


def task_of(node: Mapping[str, Any] | None) -> Task:
    """The task a config's `task` node names: its `_target_`, else (a run folder written before tasks
    named their class) the built-in task of that name; no node at all is the paper's guidance."""
    node = node or {}
    target = node.get("_target_")
    if target:
        return load_task(str(target))
    name = str(node.get("name") or DEFAULT_TASK)
    known = available_tasks()
    if name not in known:
        raise ConfigError(f"unknown task '{name}'; the tasks are: {', '.join(sorted(known))}")
    return load_task(known[name])


def objectives(summary: Mapping[str, Any] | None, keys: Sequence[str]) -> float | list[float] | None:
    """What the Hydra app returns to a sweeper: the summary's figures named by `objective` (dotted
    keys, each among the task's `metrics`); one figure as a float, several as a list, NaN for each
    when the job did not complete (a sweeper that searches, Optuna, records the trial as failed)."""
    if not keys:
        return None
    values = []
    for key in keys:
        value: Any = summary
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        values.append(float(value) if isinstance(value, int | float) else float("nan"))
    return values[0] if len(values) == 1 else values
