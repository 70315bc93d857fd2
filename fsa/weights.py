"""Reading weight files from a user's path, safely, and saying what to do when one is missing.

Every family accepts a local file that takes precedence over downloads (`extractor.weights=`,
`model.path=`; `weights.<name>=` in a local config), so a machine without network runs with files
fetched elsewhere. Files are read by safe readers only: safetensors, or `torch.load(weights_only=True)`,
which builds nothing but tensors, numbers, strings and containers. A file that asks for any other
object (the way a malicious pickle runs code) is refused. The one exception is made harmless: the
original Stable Diffusion checkpoints hold a PyTorch Lightning `ModelCheckpoint` callback, which is
read as an empty placeholder, never as Lightning's class.
"""

import importlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from fsa.errors import MissingPiecesError, WeightsUnavailableError

HOW_TO_PASS = (
    "pass a local file with extractor.weights=/path/to/file (for a preset's extractor: weights.<name>, "
    "once per machine in a local config; docs/configuration.md)"
)


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


# ---------------------------------------------------------------------------------------- availability
# Before any model loads, the job asks for every file and download the run needs and reports all that are
# missing in one message: which piece, which key sets it (and where: the command line, a local config),
# what is wrong, and how to get it. The loaders keep their own errors for what only loading can tell
# (a file that does not fit, a download that fails half-way).

# Suffixes of weight files: a value with one is a path, never a hub id.
WEIGHT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin", ".yaml", ".json")
# What each `weights.<name>` key holds, for the messages.
WEIGHTS_NAMES = {
    "sd14": "Stable Diffusion v1.4",
    "clip_rn50": "CLIP RN50 (OpenAI)",
    "resnet50": "ResNet-50 (torchvision)",
    "vit_h14": "ViT-H/14 (torchvision SWAG)",
}
# The component keys that name a weights path, and whether it must be a file (else a file or a folder).
PATH_KEYS = {"weights": True, "architecture": True, "path": False, "second_model": False}
LOCAL_CONFIG_HOWTO = "docs/configuration.md, 'A local config'"


@dataclass(frozen=True)
class Download:
    """What loading a component fetches when no local file is given."""

    source: str  # the URL or hub id
    cached: bool  # already in the library's cache on this machine
    possible: bool  # the source can be reached from here (checked only when not cached)


def looks_local(value: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`)."""
    return (
        value.startswith(("/", ".", "~")) or Path(value).suffix in WEIGHT_SUFFIXES or Path(value).expanduser().exists()
    )


def _path_problem(value: str, must_be_file: bool) -> str | None:
    path = Path(value).expanduser()
    if not path.exists():
        return f"'{path}' does not exist"
    if must_be_file and not path.is_file():
        return f"'{path}' is a folder; the key expects a file"
    return None


def _local_value(file: Path, dotted: str) -> Any:
    """A key's value in a local config file (None where the file does not set it)."""
    content: Any = yaml.safe_load(file.read_text()) or {}
    for part in dotted.split("."):
        content = content.get(part) if isinstance(content, dict) else None
    return content


@dataclass(frozen=True)
class Setting:
    """The keys that set a component's path, the component's own first (`extractor.weights`, then the
    `weights.clip_rn50` it interpolates), and where the last one that is set was set."""

    keys: list[str]
    where: str  # "set on the command line", "set in <local config>", "fsa's default"

    def __str__(self) -> str:
        return f"{' <- '.join(self.keys)}, {self.where}"


def setting_of(
    node: DictConfig, key: str, label: str, overrides: Sequence[str], local_configs: Sequence[Path]
) -> Setting:
    """Which keys set a component's path and where (`local_configs`: the local config Hydra read, if any)."""
    raw = (OmegaConf.to_container(node, resolve=False) or {}).get(key)  # type: ignore[union-attr]
    keys = [f"{label}.{key}"]
    match = re.fullmatch(r"\$\{(weights\.\w+|data_dir)\}.*", str(raw))
    if match:
        keys.append(match.group(1))
    on_command_line = {entry.split("=", 1)[0].lstrip("+") for entry in overrides}
    for name in reversed(keys):
        if name in on_command_line:
            return Setting(keys, "set on the command line")
        for file in local_configs:
            if _local_value(file, name) is not None:
                return Setting(keys, f"set in {file}")
    return Setting(keys, "fsa's default")


def _fetch_hint(setting: Setting, download: Download | None) -> str:
    """How to make the piece available: the key to set (after fetching it elsewhere, for a download)."""
    fetch = "fetch it on a machine with network, copy it here and " if download else ""
    return f"{fetch}set {setting.keys[-1]}=/path/to/it"


def _what(label: str, node: DictConfig, setting: Setting) -> str:
    name = setting.keys[-1].removeprefix("weights.")
    if name in WEIGHTS_NAMES:
        return WEIGHTS_NAMES[name]
    return f"{label} {node.get('name') or node.get('model_name') or str(node._target_).rpartition('.')[2]}"


def missing_pieces(
    nodes: dict[str, Any], overrides: Sequence[str] = (), local_configs: Sequence[Path] = ()
) -> list[str]:
    """One line per file or download the components (`label -> config`) need that is not available."""
    problems = []
    for label, node in nodes.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        for key, must_be_file in PATH_KEYS.items():
            value = node.get(key)
            if isinstance(value, str) and value and (must_be_file or looks_local(value)):
                problem = _path_problem(value, must_be_file)
                if problem:
                    setting = setting_of(node, key, label, overrides, local_configs)
                    hint = _fetch_hint(setting, None)
                    problems.append(f"{_what(label, node, setting)} ({setting}): {problem}; {hint}")
        download = _download_of(node)
        if download is not None and not download.cached and not download.possible:
            setting = setting_of(node, "path" if "path" in node else "weights", label, overrides, local_configs)
            problems.append(
                f"{_what(label, node, setting)} ({setting}): not downloaded ({download.source}), and the source "
                f"cannot be reached from here; {_fetch_hint(setting, download)}"
            )
    return problems


def _download_of(node: DictConfig) -> Download | None:
    """What the component downloads, from its module's `download(target, **config)` where it has one."""
    module_name, _, target = str(node._target_).rpartition(".")
    download = getattr(importlib.import_module(module_name), "download", None)
    if download is None:
        return None
    config = OmegaConf.to_container(node, resolve=True)
    return download(target, **{k: v for k, v in config.items() if k != "_target_"})  # type: ignore[union-attr]


def check_available(
    nodes: dict[str, Any],
    problems: Sequence[str] = (),
    overrides: Sequence[str] = (),
    local_configs: Sequence[Path] = (),
) -> None:
    """Refuse the run, naming every missing piece at once (with `problems` found elsewhere: the targets)."""
    found = [*missing_pieces(nodes, overrides, local_configs), *problems]
    if found:
        lines = "\n".join(f"  - {problem}" for problem in found)
        raise MissingPiecesError(
            f"{len(found)} piece(s) this run needs are not on this machine:\n{lines}\n"
            f"A local config sets paths once per machine ({LOCAL_CONFIG_HOWTO}); the command line overrides it."
        )
