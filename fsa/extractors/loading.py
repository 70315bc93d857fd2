"""Getting pretrained weights: local files, caches and the hub, failing fast and saying what to do.

Every family accepts ``weights`` (a local file that takes precedence over downloads), so a
machine without network access runs with ``extractor.weights=/path/to/file``.
"""

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from fsa.errors import WeightsUnavailableError

HOW_TO_PASS = "pass a local file with extractor.weights=/path/to/file"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


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


@lru_cache(maxsize=4)
def _endpoint_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens (assumed yes behind a proxy, which we cannot probe)."""
    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return True
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def fail_fast_offline() -> Iterator[None]:
    """Hugging Face hub offline mode for the block when the hub cannot be reached.

    Without it, huggingface_hub retries a missing file five times with back-off (about 45 s per
    file here) before failing; in offline mode cached files still load and missing ones fail at once.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _endpoint_reachable(constants.ENDPOINT):
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False
