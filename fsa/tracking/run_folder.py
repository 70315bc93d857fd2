"""The run folder: every file a run writes and reads, the folder's state, and the lock on it.

One module owns the layout, so the job and its task write through it, `fsa-report` reads through it
and the tests build folders with it. Paths are relative to the run folder (the guide task's files;
each task declares what else it writes, `Task.outputs`, e.g. `embedding/` and `representation/`):

    status.json        the state (new | running | interrupted | complete | failed), by which process, history
    run.lock           locked (flock, empty) by the process running here; the OS releases it if that dies
    config.yaml        the resolved config the run was made with
    overrides.yaml     its command-line overrides (what `fsa-report` groups a sweep by)
    fsa.log            the run's log
    summary.json       a complete run's figures and per-sample results (complete only)
    failure.json       what went wrong (failed only; never beside a summary)
    checkpoint.pt      where an interrupted run continues from
    evaluations.csv    one row per sample and evaluation; gradients.pt: Fig. 2's gradients
    overview.png       every target against its best and final images, baselines included
    images/<nnn>_<target>/target.png, sample<i>_best.png, sample<i>_final.png
    baselines/<name>/  evaluations.csv and images/ of each baseline (same seeds, other guidance)
    wandb/             W&B's own files
    superseded/<time>/ an earlier run of this folder, moved aside by `fresh=true` (never deleted)

Rules: one process at a time (a second one is refused at once and writes nothing); a complete
folder is never overwritten (only moved aside on request); a folder continues only the run it was
made with (the same config); a refused run changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import IO, Any

import yaml

from fsa.errors import FsaError
from fsa.guidance.options import GUIDED

log = logging.getLogger("fsa")

STATUS, LOCK, CONFIG, OVERRIDES, LOG = "status.json", "run.lock", "config.yaml", "overrides.yaml", "fsa.log"
SUMMARY, FAILURE, CHECKPOINT, OVERVIEW = "summary.json", "failure.json", "checkpoint.pt", "overview.png"
EVALUATIONS, GRADIENTS, IMAGES, BASELINES, SUPERSEDED = (
    "evaluations.csv",
    "gradients.pt",
    "images",
    "baselines",
    "superseded",
)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
# What a run must agree on to continue another's folder; the rest (where, how it logs) may differ.
NOT_COMPARED = ("resume", "fresh", "progress", "logger", "checkpoint_every", "threads")


class State(str, Enum):
    NEW = "new"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETE = "complete"
    FAILED = "failed"


class RunFolderError(FsaError):
    """The folder cannot take this run (in use, complete, made with another config, unwritable)."""


@dataclass
class SampleResult:
    """One generated sample: where its best and final images are (relative to the run folder) and
    how close their features came to the target's."""

    target: str
    target_index: int
    target_label: int | None
    sample: int
    seed: int
    best_distance: float
    best_t: int
    best_k: int
    best_phase: str
    final_distance: float
    final_cosine: float
    best_png_distance: float  # the saved PNG scored as an actual image (the paper's footnote 5)
    final_png_distance: float
    guided_iterations: int
    network_evaluations: int
    feature_evaluations: int
    wall_time_s: float  # of the whole batch the sample ran in
    best_image: str
    final_image: str
    calibrated_best_distance: float | None = None  # best distance / mean pairwise target distance
    best_oracle_class: int | None = None
    best_oracle_confidence: float | None = None
    best_oracle_entropy: float | None = None
    final_oracle_class: int | None = None
    final_oracle_confidence: float | None = None
    final_oracle_entropy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SampleResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # the day folder of hydra.run.dir / hydra.sweep.dir


def slug(text: str, limit: int = 48, empty: str = "target") -> str:
    """A file-name-safe form of a name (a target's, a run's, a key's): letters, digits and `_.=+-`
    kept, every other run of characters one `_`, at most `limit` characters, `empty` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")[:limit] or empty


def target_folder_name(index: int, name: str) -> str:
    """`images/<nnn>_<name>/`: numbered, so targets keep the order they were given in."""
    return f"{index:03d}_{slug(name)}"


def job_folder(resume: str | None, output_dir: Path) -> Path:
    """The one place that says where a job runs: `resume=<folder>` continues that folder's run,
    otherwise Hydra's output folder for the job (which also resumes when it holds a checkpoint: a
    requeued Slurm job reruns in the same folder). A `resume` that holds no run is refused: it would
    start a new run there."""
    if resume is not None and not str(resume).strip():
        raise RunFolderError("resume= is empty: give the run folder to continue, or leave resume out")
    if resume and not RunFolder.holds_a_run(Path(resume)):
        what = (
            "does not exist" if not Path(resume).exists() else "holds no run of fsa's (no status.json or config.yaml)"
        )
        raise RunFolderError(f"resume={resume}: the folder {what}; give a run folder that fsa wrote")
    return Path(resume) if resume else Path(output_dir)


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that makes two runs the same run."""
    return {k: v for k, v in config.items() if k not in NOT_COMPARED}


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write, then rename: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(content, "") or (None, why it could not be read; "" when the file is absent)."""
    if not path.exists():
        return None, ""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return None, f"unreadable {path.name}: {error}"
    return (data, "") if isinstance(data, dict) else (None, f"unreadable {path.name}: not an object")


def read_yaml(path: Path) -> Any:
    """A YAML file's content, or None when it is missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """One run's folder. Reading works on any folder; writing needs `lock()` held."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock_file: IO[str] | None = None
        self._admitted = False  # this process has taken the run (admit)
        self.owned = False  # this process may record the run's outcome here

    # ------------------------------------------------------------------ names

    def variant_dir(self, variant: str) -> Path:
        """The guided run writes into the folder itself, each baseline into baselines/<name>/."""
        return self.root if variant == GUIDED else self.root / BASELINES / variant

    def evaluations_file(self, variant: str = GUIDED) -> Path:
        return self.variant_dir(variant) / EVALUATIONS

    def target_dir(self, variant: str, target_index: int, target: str) -> Path:
        return self.variant_dir(variant) / IMAGES / target_folder_name(target_index, target)

    def target_image(self, variant: str, target_index: int, target: str) -> Path:
        return self.target_dir(variant, target_index, target) / "target.png"

    def sample_image(self, variant: str, target_index: int, target: str, sample: int, kind: str) -> Path:
        """kind: "best" or "final"."""
        return self.target_dir(variant, target_index, target) / f"sample{sample}_{kind}.png"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def checkpoint_file(self) -> Path:
        return self.root / CHECKPOINT

    @property
    def gradients_file(self) -> Path:
        return self.root / GRADIENTS

    @property
    def overview_file(self) -> Path:
        return self.root / OVERVIEW

    @property
    def attributes_file(self) -> Path:
        """Per sample of the guided and unguided runs, each attribute's distance to the target."""
        return self.root / "attributes.csv"

    @property
    def judges_file(self) -> Path:
        """Per judge, variant, kind of image and sample, the judge's distance to the target image."""
        return self.root / "judges.csv"

    @property
    def robustness_file(self) -> Path:
        """Per variant, kind of image, change and sample, the guide's distance after the change."""
        return self.root / "robustness.csv"

    # ------------------------------------------------------------------ reading

    @staticmethod
    def holds_a_run(path: Path) -> bool:
        """Whether `path` is a run folder (a job folder of a multirun, or a single run)."""
        return path.is_dir() and any((path / name).exists() for name in (STATUS, CONFIG, SUMMARY, FAILURE))

    def status(self) -> dict[str, Any]:
        data, _ = read_json(self.root / STATUS)
        return data or {}

    def state(self) -> State:
        """The folder's state: status.json says it, except that a run whose process died (its lock is
        free again) was interrupted, not running. A folder without status.json is new if empty."""
        recorded = self.status().get("state")
        if recorded is None:
            files = {SUMMARY: State.COMPLETE, FAILURE: State.FAILED, CHECKPOINT: State.INTERRUPTED}
            found = [state for name, state in files.items() if (self.root / name).exists()]
            return found[0] if found else State.INTERRUPTED if (self.root / CONFIG).exists() else State.NEW
        state = State(recorded)
        if state == State.RUNNING:
            # Running means: some process holds the lock and has taken the run. Otherwise the
            # process that wrote "running" died (SIGKILL, power loss) and the run was interrupted.
            running = self._admitted if self._lock_file is not None else self._locked_by_another()
            return State.RUNNING if running else State.INTERRUPTED
        return state

    def config(self) -> dict[str, Any]:
        config = read_yaml(self.root / CONFIG)
        return config if isinstance(config, dict) else {}

    def overrides(self) -> list[str]:
        overrides = read_yaml(self.root / OVERRIDES)
        return [str(o) for o in overrides] if isinstance(overrides, list) else []

    def summary(self) -> tuple[dict[str, Any] | None, str]:
        return read_json(self.root / SUMMARY)

    def failure(self) -> tuple[dict[str, Any] | None, str]:
        return read_json(self.root / FAILURE)

    def samples(self, summary: dict[str, Any], variant: str = GUIDED) -> list[SampleResult]:
        """The per-sample results of a summary, for the guided run or a baseline."""
        raw = summary.get("samples") if variant == GUIDED else (summary.get("baseline_samples") or {}).get(variant)
        return [SampleResult.from_dict(r) for r in raw or []]

    # ------------------------------------------------------------------ the lock

    def _locked_by_another(self) -> bool:
        path = self.root / LOCK
        if not path.exists():
            return False
        with path.open() as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(probe, fcntl.LOCK_UN)
        return False

    def _in_use(self) -> RunFolderError:
        status = self.status()
        holder = f"process {status['pid']} on {status['host']}" if status.get("state") == "running" else ""
        return RunFolderError(
            f"the run folder '{self.root}' is in use by {holder or 'another process'}; wait for it to end, "
            "or run in another folder (hydra.run.dir=...)"
        )

    @contextmanager
    def lock(self) -> Iterator[RunFolder]:
        """Hold the folder's exclusive lock for the run; refuse at once, writing nothing, if another
        process holds it. The OS releases the lock when the process ends, however it ends."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            file = (self.root / LOCK).open("a+")
        except OSError as error:
            raise RunFolderError(
                f"cannot write to the run folder '{self.root}' ({error.strerror}); "
                "choose another with hydra.run.dir=... (hydra.sweep.dir=... for -m)"
            ) from error
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            file.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise self._in_use() from None
        self._lock_file = file
        self.owned = self.state() == State.NEW
        try:
            yield self
        finally:
            self._lock_file = None
            self._admitted = self.owned = False
            file.close()  # releases the lock

    # ------------------------------------------------------------------ writing (lock held)

    def _set_state(self, state: State, **details: Any) -> None:
        assert self._lock_file is not None, "the run folder must be locked to change its state"
        status = self.status()
        now, pid, host = _now(), os.getpid(), socket.gethostname()
        history = [*status.get("history", []), {"state": state.value, "at": now, "pid": pid, "host": host, **details}]
        write_json(
            {"state": state.value, "pid": pid, "host": host, "updated": now, "history": history}, self.root / STATUS
        )

    def check(self, config: dict[str, Any], fresh: bool = False) -> State:
        """Whether this folder would take the run, without changing anything: its state, or a
        RunFolderError that says why not (in use, complete, made with another config). `fsa` asks
        this before loading anything heavy, so a refused run ends at once."""
        if self._lock_file is None and self._locked_by_another():
            raise self._in_use()
        state = self.state()
        if state == State.NEW and not fresh and self.foreign_files():
            names = ", ".join(sorted(p.name for p in self.foreign_files())[:5])
            raise RunFolderError(
                f"the folder '{self.root}' holds files fsa did not write ({names}); run elsewhere "
                f"(hydra.run.dir=...), or pass fresh=true to move them to {SUPERSEDED}/ and run here"
            )
        if fresh or state == State.NEW:
            return state
        if state == State.COMPLETE:
            raise RunFolderError(
                f"the run folder '{self.root}' already holds a complete run; read it with "
                f"`fsa-report {self.root}`, run elsewhere (hydra.run.dir=...), or pass fresh=true to start "
                f"over here (the old results move to {SUPERSEDED}/)"
            )
        if (self.root / CONFIG).exists():
            before, now = comparable(self.config()), comparable(_normalised(config))
            if before != now:
                changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
                raise RunFolderError(
                    f"the run folder '{self.root}' holds an {state.value} run made with another config "
                    f"(differs in: {', '.join(changed) or 'its keys'}); rerun with the same overrides to "
                    f"continue it, or pass fresh=true to start over here (the old files move to {SUPERSEDED}/)"
                )
        return state

    def admit(self, config: dict[str, Any], overrides: list[str], fresh: bool = False) -> State:
        """Take this run, or refuse it and change nothing (see `check`). Returns the state the folder
        was in: new (the run starts here), interrupted or failed (the run continues from its
        checkpoint, if any). `fresh` first moves an earlier run's files to superseded/<time>/."""
        assert self._lock_file is not None, "the run folder must be locked to admit a run"
        state = self.check(config, fresh)
        if fresh and (state != State.NEW or self.foreign_files()):
            self._move_aside()
            state = State.NEW
        if not (self.root / CONFIG).exists():
            (self.root / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
            (self.root / OVERRIDES).write_text(yaml.safe_dump(list(overrides)))
        failure, _ = self.failure()
        self._set_state(State.RUNNING, **({"previous_failure": failure} if failure else {}))
        (self.root / FAILURE).unlink(missing_ok=True)  # kept in status.json's history
        self._admitted = self.owned = True
        return state

    def foreign_files(self) -> list[Path]:
        """What a folder without a run holds besides fsa's lock and superseded runs: files fsa did not
        write, which a new run must not overwrite."""
        if not self.root.is_dir() or self.state() != State.NEW:
            return []
        return [entry for entry in self.root.iterdir() if entry.name not in (LOCK, SUPERSEDED)]

    def _move_aside(self) -> None:
        target = self.root / SUPERSEDED / _now().replace(":", "-")
        target.mkdir(parents=True)
        for entry in self.root.iterdir():
            if entry.name not in (LOCK, SUPERSEDED):
                shutil.move(str(entry), str(target / entry.name))
        log.warning("fresh=true: moved the earlier run in %s to %s", self.root, target)

    def interrupted(self, reason: str) -> None:
        """The run stopped before its end (a signal, Ctrl-C): its checkpoint, if any, resumes it."""
        if self._admitted:
            self._set_state(State.INTERRUPTED, reason=reason)

    def fail(self, error: BaseException) -> None:
        """Record why the run failed (failure.json), unless it is not this process's to record."""
        if not self.owned or self.state() == State.COMPLETE:  # a folder never holds a summary and a failure
            return
        record = {"status": "failed", "error": type(error).__name__, "message": str(error)}
        write_json(record, self.root / FAILURE)
        if (self.root / LOG).exists():  # the log ends with why, as failure.json says it
            with (self.root / LOG).open("a") as log_file:
                log_file.write(f"[{_now()}][fsa][ERROR] - failed: {record['error']}: {record['message']}\n")
        self._set_state(State.FAILED, error=record["error"])

    def complete(self, summary: dict[str, Any]) -> None:
        """Write the summary, then say complete, then drop the checkpoint: a crash between any two
        leaves a folder that resumes to the same end."""
        write_json(summary, self.root / SUMMARY)
        self._set_state(State.COMPLETE)
        self.checkpoint_file.unlink(missing_ok=True)

    @contextmanager
    def log_file(self) -> Iterator[None]:
        """The run's log lines also go to fsa.log in the folder, while the run lasts."""
        handler = logging.FileHandler(self.root / LOG)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.setLevel(logging.INFO)
        fsa_logger = logging.getLogger("fsa")  # fsa's INFO lines reach the file however the caller logs
        level = fsa_logger.level
        if fsa_logger.getEffectiveLevel() > logging.INFO:
            fsa_logger.setLevel(logging.INFO)
        logging.getLogger().addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(handler)
            fsa_logger.setLevel(level)
            handler.close()


def _normalised(config: dict[str, Any]) -> dict[str, Any]:
    """The config as config.yaml gives it back (YAML's types), so a comparison is like for like."""
    return yaml.safe_load(yaml.safe_dump(config, sort_keys=False))


def wandb_group(experiment: str | None, folder: Path) -> str:
    """The W&B group of a run or sweep: its experiment (else "fsa") and when it started, read off the
    folder (`.../2026-11-29/14-03-12`, as fsa names them) so every job of a sweep, and a resumed run,
    gets the same group; a folder named otherwise gives its own name."""
    stamp = f"{folder.parent.name} {folder.name}" if DATE.fullmatch(folder.parent.name) else folder.name
    return f"{experiment or 'fsa'} {stamp}"
