"""Checkpoint files: written atomically, checked on reading, so a crash never leaves a bad one in use.

Layout: 8 magic bytes, the SHA-256 of the payload, the payload (a `torch.save` of plain data and
tensors). A truncated or altered file fails the check and is reported, never loaded.
"""

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from fsa.errors import FsaError

MAGIC = b"FSACKPT1"
DIGEST = 32


class CheckpointError(FsaError):
    """A checkpoint that cannot be trusted (truncated, corrupted) or does not fit this run."""


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
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
