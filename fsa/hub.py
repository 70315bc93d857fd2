"""The Hugging Face hub without network: fail at once instead of retrying for minutes."""

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlparse

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


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
