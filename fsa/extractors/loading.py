"""Getting pretrained weights: local files, caches and the hub, failing fast and saying what to do.

Every family accepts ``weights`` (a local file that takes precedence over downloads), so a
machine without network access runs with ``extractor.weights=/path/to/file``.
"""

import os
from pathlib import Path
from typing import Any

import torch

from fsa.errors import WeightsUnavailableError

HOW_TO_PASS = "pass a local file with extractor.weights=/path/to/file"


def require_file(path: str | os.PathLike, what: str) -> Path:
    """The local weights file, or an error naming it (a typo here must not fall back to a download)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise WeightsUnavailableError(f"{what}: weights file '{file}' does not exist; {HOW_TO_PASS}")
    return file


def load_state_dict_file(path: Path, what: str) -> dict[str, Any]:
    """A state dict from a .safetensors or torch file (also inside a {"state_dict"|"model": ...} checkpoint)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and format errors come in many types
        raise WeightsUnavailableError(f"{what}: cannot read '{path}' as a state dict ({error})") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{what}: '{path}' holds a {type(state).__name__}, not a state dict")
    return state
