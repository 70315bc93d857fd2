"""Checkpoints: when a job saves one, what it holds, and the file format that makes a bad one impossible to use.

A checkpoint holds the job's config, the task's state (a dataclass of the task's own, `Task.state`)
and the job's parts beside it (the W&B run ids). States go to disk as plain data (`to_plain`) and
come back typed (`from_plain`, by the dataclass's field types).

File layout: 8 magic bytes, the SHA-256 of the payload, the payload (a `torch.save` of plain data
and tensors). A truncated or altered file fails the check and is reported, never loaded. The payload
is read with `torch.load(weights_only=True)`, whose allow-list is exactly what a checkpoint holds
(tensors, numbers, strings, None, lists, tuples and dicts): a file that asks to build any other
object, the way a malicious pickle runs code, is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pickle
import signal
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fsa.errors import FsaError, Interrupted

log = logging.getLogger("fsa")
MAGIC = b"FSACKPT1"
DIGEST = 32


class CheckpointError(FsaError):
    """A checkpoint that cannot be trusted (truncated, corrupted, not plain data) or does not fit this run."""


def to_plain(value: Any) -> Any:
    """Dataclasses (nested in dicts, lists and tuples too) as dicts: what `torch.load(weights_only=True)` reads."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(to_plain(item) for item in value)
    return value


def from_plain(kind: Any, data: Any) -> Any:
    """`to_plain`'s data back as `kind`: a dataclass, `X | None`, `list[X]` or `dict[str, X]` of them,
    rebuilt by the field types; a field the data lacks takes its default, one it has extra is dropped."""
    if data is None:
        return None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return from_plain(next(arg for arg in args if arg is not type(None)), data)
    if origin is list:
        return [from_plain(args[0], item) for item in data]
    if origin is dict:
        return {key: from_plain(args[1], item) for key, item in data.items()}
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        names = {f.name for f in dataclasses.fields(kind)}
        return kind(**{key: from_plain(hints[key], item) for key, item in data.items() if key in names})
    return data


def save_checkpoint(data: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename: the old checkpoint stays until then."""
    buffer = io.BytesIO()
    torch.save(data, buffer)
    payload = buffer.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as file:
        file.write(MAGIC + hashlib.sha256(payload).digest() + payload)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    blob = path.read_bytes()
    header = len(MAGIC) + DIGEST
    if len(blob) < header or blob[: len(MAGIC)] != MAGIC:
        raise CheckpointError(f"'{path}' is not an fsa checkpoint (truncated or foreign); delete it to start over")
    payload = blob[header:]
    if hashlib.sha256(payload).digest() != blob[len(MAGIC) : header]:
        raise CheckpointError(f"checkpoint '{path}' is corrupted (checksum mismatch); delete it to start over")
    try:
        data = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as error:
        raise CheckpointError(
            f"checkpoint '{path}' holds more than plain data and tensors and was not loaded "
            f"({str(error).splitlines()[0]}); delete it to start over"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(data).__name__}, not a checkpoint; delete it")
    return data


@dataclass
class Saved:
    """A checkpoint read back: the task's state (typed) and the job's parts kept beside it."""

    state: Any
    parts: dict[str, Any]


class Checkpoints:
    """When to checkpoint: every `every` iterations of the task's loop, and when SIGTERM, SIGUSR1 or
    SIGUSR2 arrives (Slurm preemption or time limit). The handler only notes the signal; the checkpoint
    is written at the next iteration boundary, so it is always a consistent state. Then a handler that
    was there before fsa's (submitit's SIGUSR2 handler, which requeues the job) gets the signal, and
    the job stops with `Interrupted`. `parts` are saved beside the task's state ({name: a function
    giving it}); `on_save` listeners hear of every checkpoint written (the tracker sends what it covers)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self, path: Path, every: int, config: dict[str, Any], state: type | None = None) -> None:
        self.path, self.every, self.config, self.state_type = path, every, config, state
        self.count = 0
        self.signal: int | None = None
        self.parts: dict[str, Callable[[], Any]] = {}
        self.on_save: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Checkpoints:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.warning("received %s: checkpointing after this iteration", signal.Signals(signum).name)
        self.signal = signum

    def saved(self) -> Saved | None:
        """The last checkpoint in the run folder, if any, once checked to belong to this config and task."""
        if not self.path.exists():
            return None
        data = load_checkpoint(self.path)
        if data.get("config") != self.config or "state" not in data:
            raise CheckpointError(
                f"checkpoint '{self.path}' was written by a run with another config or version of fsa; rerun "
                "with the same overrides, or pass fresh=true to start over"
            )
        parts = {name: data.get(name) for name in data if name not in ("config", "state")}
        return Saved(from_plain(self.state_type, data["state"]), parts)

    def after_iteration(self, state: Callable[[], Any]) -> None:
        """One more iteration done: checkpoint if it is the `every`-th, or if a signal came."""
        self.count += 1
        if self.signal is None and not (self.every and self.count % self.every == 0):
            return
        self.save(state)

    def save(self, state: Callable[[], Any]) -> None:
        """Checkpoint now (a unit of work is done), then stop if a signal came."""
        parts = {name: part() for name, part in self.parts.items()}
        save_checkpoint({"config": self.config, "state": to_plain(state()), **parts}, self.path)
        for listener in self.on_save:
            listener()
        if self.signal is None:
            return
        name = signal.Signals(self.signal).name
        previous = self._previous.get(self.signal)
        if callable(previous) and previous is not signal.default_int_handler:
            log.warning("checkpoint saved; passing %s on to the handler that was there before", name)
            previous(self.signal, None)  # submitit's: requeue the job (and exit)
        raise Interrupted(
            f"stopped by {name}; checkpoint saved in {self.path}: "
            "rerun the same command in the same folder (or pass resume=<folder>) to continue"
        )
