"""One job (Hydra's word for one run of the app): what every task's run does around its own work, once.

`run(cfg, output_dir)` is the whole job; `fsa.cli` hands it Hydra's config and folder, the tests call
it directly. In order: the task the config names; its root config (only what it uses); the run
folder's lock, admission and log; validation; the device; the checkpoint store with the task's typed
state; the tracker (W&B); the task's `run(job)`; the summary with its status, time, peak memory and
environment. The task's work is its own (`fsa.tasks`); this module only puts the rest in order.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

import fsa
from fsa.config import local_configs, resolved_container, task_config, validate
from fsa.data.targets import TargetError
from fsa.errors import ConfigError, FsaError, Interrupted
from fsa.tasks import Task, task_of
from fsa.threads import chosen_threads
from fsa.tracking.checkpoint import Checkpoints
from fsa.tracking.run_folder import RunFolder, comparable, job_folder
from fsa.tracking.tracker import Tracker
from fsa.weights import check_available, setting_of

__all__ = ["Interrupted", "Job", "build", "preflight", "run"]

log = logging.getLogger("fsa")
LIBRARIES = ("torch", "torchvision", "diffusers", "transformers", "open_clip_torch", "timm", "numpy", "hydra-core")


@dataclass
class Job:
    """What a task's `run(job)` gets: its root config and options, the run folder, the device, the
    checkpoint store (and the state it resumes from), and the tracker (None without a logger)."""

    cfg: DictConfig  # the task's root config: the common keys and what the task uses
    options: Any  # the task's settings, `task.*`, as its options dataclass
    folder: RunFolder
    device: torch.device
    checkpoints: Checkpoints
    saved: Any  # the task's state from the folder's checkpoint, or None: a fresh start
    tracker: Tracker | None

    def build(self, group: str, **overrides: Any) -> Any:
        """The object of a config group (`_target_`), its keys replaced by `overrides`."""
        return build(self.cfg[group], **overrides)


def run(
    cfg: DictConfig,
    output_dir: Path,
    overrides: Sequence[str] = (),
    wandb_group: str | None = None,
    wandb_name: str | None = None,
) -> dict[str, Any]:
    """Run the task the config names in its folder; returns the summary.

    The job holds the folder's lock throughout. A refused job (folder in use, complete, or made with
    another config) changes nothing; a failed one leaves `failure.json` and no `summary.json`."""
    task = task_of(cfg.task)
    folder = RunFolder(job_folder(cfg.resume, output_dir))
    with folder.lock():
        try:
            root = task_config(cfg, task, overrides)
            return _run(task, root, folder, list(overrides), wandb_group, wandb_name)
        except (Interrupted, KeyboardInterrupt) as stop:
            folder.interrupted(type(stop).__name__)  # the checkpoint, if any, is there to resume from
            raise
        except Exception as error:
            folder.fail(error)
            raise


def _run(task: Task, cfg: DictConfig, folder: RunFolder, overrides: list[str], group: str | None, name: str | None):
    # 1. Every value and file the task uses checked, and the device found, before the folder takes the job.
    options, device = preflight(task, cfg, overrides)
    threads, why = chosen_threads(cfg.threads)
    torch.set_num_threads(threads)
    # 2. The folder takes the job (new), continues it (same config) or refuses it; nothing written before.
    config = resolved_container(cfg)
    folder.admit(config, overrides, fresh=cfg.fresh)
    with folder.log_file():
        # ... and the checkpoint checked before any model loads.
        log.info("%d CPU thread(s) (%s)", threads, why)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        checkpoints = Checkpoints(folder.checkpoint_file, cfg.checkpoint_every, comparable(config), task.state)
        saved = checkpoints.saved()
        if saved is not None:
            log.info("resuming from %s", checkpoints.path)
            group = (saved.parts.get("tracker") or {}).get("group") or group  # the group the job started with

        # 3. The tracker: W&B gets what each checkpoint covers; a resumed job continues the same runs.
        tracker = None
        if cfg.logger is not None and cfg.logger.mode != "disabled":
            ids = (saved.parts.get("tracker") or {}).get("runs") if saved else None
            tracker = Tracker(cfg.logger, folder.root, config, group, name, ids)
            checkpoints.parts["tracker"] = lambda: {"group": tracker.group, "runs": tracker.run_ids()}
            checkpoints.on_save.append(tracker.send)

        # 4. The task's work, then its summary with what every job records.
        job = Job(cfg, options, folder, device, checkpoints, saved.state if saved else None, tracker)
        start = time.perf_counter()
        try:
            with checkpoints:
                body = task.run(job)
        except BaseException as stop:
            if tracker is not None:
                state = "interrupted" if isinstance(stop, Interrupted | KeyboardInterrupt) else "failed"
                tracker.finish({"status": state}, exit_code=1)
            raise
        facts = {"status": "complete", "task": task.name, "wall_time_s": time.perf_counter() - start}
        facts["peak_memory_mb"] = peak_memory_mb(device)
        summary = {**facts, **body, "environment": environment(), "tracker": tracker.record() if tracker else None}
        folder.complete(summary)
        if tracker is not None:
            tracker.finish(facts)
        log.info("task=%s: %s", task.name, task.headline(summary))
        log.info("overview: %s (tables and figures: fsa-report %s)", folder.overview_file, folder.root)
        return summary


def preflight(task: Task, cfg: DictConfig, overrides: Sequence[str] = ()) -> tuple[Any, torch.device]:
    """All that can be checked without loading a model: every value (`validate`), the device, and every
    file and download the run needs, all missing ones named in one error. Returns the task's options
    and the device. `fsa` calls it before it touches the run folder; the job again, under its lock."""
    options = validate(cfg, task)
    device = resolve_device(cfg.device)
    check_available(
        {group: cfg.get(group) for group in ("task", "model", "extractor") if group == "task" or group in task.uses},
        problems=_target_problems(cfg, overrides) if "dataset" in task.uses else [],
        overrides=overrides,
        local_configs=local_configs()[:1],  # the one Hydra read
    )
    return options, device


def _target_problems(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """What is wrong with the targets' files (a folder that is not there), found by building the dataset,
    which lists its files and reads none."""
    try:
        build(cfg.dataset)
    except TargetError as error:
        key = next((key for key in ("root", "paths", "path") if key in cfg.dataset), None)
        where = setting_of(cfg.dataset, key, "dataset", overrides, local_configs()[:1]) if key else "dataset"
        return [f"the targets ({where}): {error}"]
    return []


def build(node: DictConfig, **overrides: Any) -> Any:
    """`instantiate`, letting fsa's own errors through unwrapped (their messages are for the user)."""
    try:
        return instantiate(node, **overrides)
    except InstantiationException as error:
        if isinstance(error.__cause__, FsaError):
            raise error.__cause__ from None
        raise


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when there is a GPU, else the CPU; a device that this machine has not is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}, but torch sees no CUDA GPU here; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name}, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name}, but torch sees no MPS device here; use device=cpu or device=auto")
    return device


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def environment() -> dict[str, Any]:
    """What a job's figures depend on beyond its config: versions, device, CPU threads."""
    versions = {}
    for library in LIBRARIES:
        try:
            versions[library] = metadata.version(library)
        except metadata.PackageNotFoundError:
            versions[library] = None
    return {
        "fsa": fsa.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "torch_threads": torch.get_num_threads(),  # CPU results differ in the last digits with it
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
