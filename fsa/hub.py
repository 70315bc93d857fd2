"""The Hugging Face hub without network: fail at once instead of retrying for minutes."""

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlparse

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@lru_cache(maxsize=16)
def reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to a URL's host opens (assumed yes behind a proxy, which we cannot probe)."""
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

    if constants.HF_HUB_OFFLINE or reachable(constants.ENDPOINT):
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def hub_downloads() -> bool:
    """Whether the Hugging Face hub can be downloaded from: not in offline mode, and reachable."""
    from huggingface_hub import constants

    return not constants.HF_HUB_OFFLINE and reachable(constants.ENDPOINT)


def hub_cached(repo_id: str, *filenames: str) -> bool:
    """Whether one of a hub repository's files is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)
