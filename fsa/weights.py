"""Reading weight files from a user's path, safely, and saying what to do when one is missing.

Every family accepts a local file that takes precedence over downloads (`extractor.weights=`,
`model.path=`; `weights.<name>=` in a local config), so a machine without network runs with files
fetched elsewhere. Files are read by safe readers only: safetensors, or `torch.load(weights_only=True)`,
which builds nothing but tensors, numbers, strings and containers. A file that asks for any other
object (the way a malicious pickle runs code) is refused. The one exception is made harmless: the
original Stable Diffusion checkpoints hold a PyTorch Lightning `ModelCheckpoint` callback, which is
read as an empty placeholder, never as Lightning's class.
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


class _Ignored:
    """What a training checkpoint's bookkeeping objects (a Lightning callback) become: nothing."""

    def __setstate__(self, state: object) -> None:
        pass


# Names that training checkpoints carry beside their weights, read as `_Ignored`.
PLACEHOLDERS = [(_Ignored, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")]


def load_state_dict_file(path: Path, what: str) -> dict[str, Any]:
    """A state dict from a .safetensors or torch file (also inside a {"state_dict"|"model": ...} checkpoint)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with torch.serialization.safe_globals(PLACEHOLDERS):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling and format errors come in many types
        raise WeightsUnavailableError(f"{what}: cannot read '{path}' as a state dict ({error})") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{what}: '{path}' holds a {type(state).__name__}, not a state dict")
    return state
