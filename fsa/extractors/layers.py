"""Which activation is the feature: a named layer's output, optionally pooled.

One piece of code shared by the torchvision and timm families, so "layer3 + mean" means the
same thing for both. The paper analyses final features (the avg-pool output of ResNet-50, the
class token of ViT-H/14); an intermediate layer is the same analysis one level down.
"""

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fsa.errors import ExtractorError

POOLS = ("none", "mean")


def close_names(name: str, choices: Iterable[str], n: int = 5) -> str:
    """The valid names nearest to a misspelt one, for error messages."""
    choices = list(choices)
    matches = difflib.get_close_matches(name, choices, n=n, cutoff=0.5) or choices[:n]
    return ", ".join(f"'{m}'" for m in matches)


def get_named_module(network: nn.Module, path: str) -> nn.Module:
    """``network``'s submodule at a dotted path ("layer3", "heads.head"), or an error naming close ones."""
    modules = dict(network.named_modules())
    if path not in modules or not path:
        raise ExtractorError(
            f"{type(network).__name__} has no layer '{path}'; closest: {close_names(path, list(modules)[1:])}"
        )
    return modules[path]


def replace_with_identity(network: nn.Module, path: str) -> None:
    """Swap the submodule at ``path`` for ``nn.Identity`` (e.g. ResNet's ``fc`` -> the 2048-d pooled feature)."""
    get_named_module(network, path)  # validates the path
    parent_path, _, child = path.rpartition(".")
    parent = network.get_submodule(parent_path) if parent_path else network
    setattr(parent, child, nn.Identity())


def pool_features(output: Tensor, pool: str) -> Tensor:
    """Spatial mean of (B, C, H, W) maps or token mean of (B, N, C) sequences; "none" keeps all values."""
    if pool == "none" or output.ndim == 2:
        return output
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    raise ExtractorError(f"cannot mean-pool an output of shape {tuple(output.shape)}")


class _LayerReached(Exception):
    """Raised by the forward hook to stop the network once the chosen layer has run."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


@dataclass
class ModuleCall:
    """What a module was given and what it gave back in one forward pass."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Tensor

    def input_maps(self) -> Tensor:
        """Every feature map the module read, along channels: the 4-d tensors among its arguments
        (tuples opened) of the first one's spatial size. A diffusers decoder block reads the block
        below and its skips (`res_hidden_states_tuple`) this way; a plain block, its one input."""
        flat = [a for arg in (*self.args, *self.kwargs.values()) for a in (arg if isinstance(arg, tuple) else (arg,))]
        maps = [a for a in flat if isinstance(a, Tensor) and a.ndim == 4]
        if not maps:
            raise ExtractorError("the module read no feature map")
        return torch.cat([m for m in maps if m.shape[2:] == maps[0].shape[2:]], dim=1)


def module_calls(modules: Sequence[nn.Module], run: Callable[[], object], what: str) -> list[ModuleCall]:
    """How each of `modules` was called while `run()` calls the network they are in (its arguments and
    first output tensor); the network stops once all have run, since the rest of it would cost time and
    memory (and, under guidance, a backward pass) for values that are thrown away."""
    calls: dict[int, ModuleCall] = {}

    def keep(index: int) -> Callable[[nn.Module, tuple, dict, object], None]:
        def hook(_module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            calls[index] = ModuleCall(args, kwargs, _first_tensor(output, what))
            if len(calls) == len(modules):
                raise _LayerReached(output=calls[index].output)

        return hook

    handles = [module.register_forward_hook(keep(i), with_kwargs=True) for i, module in enumerate(modules)]
    try:
        run()
    except _LayerReached:
        return [calls[i] for i in range(len(modules))]
    finally:
        for handle in handles:
            handle.remove()
    raise ExtractorError(f"{what} is not used in the forward pass")


def module_outputs(modules: Sequence[nn.Module], run: Callable[[], object], what: str) -> list[Tensor]:
    """The (first) tensor each of `modules` outputs while `run()` calls the network (`module_calls`)."""
    return [call.output for call in module_calls(modules, run, what)]


class LayerFeatures(nn.Module):
    """A network whose output is one named layer's activation (default: the network's output), pooled.

    The layer is reached with a forward hook (`module_outputs`), so any architecture works without
    tracing, and the forward stops at that layer.
    """

    def __init__(self, network: nn.Module, layer: str | None = None, pool: str = "none") -> None:
        super().__init__()
        if pool not in POOLS:
            raise ExtractorError(f"pool must be one of {POOLS}, got '{pool}'")
        if layer:
            get_named_module(network, layer)  # fail at construction, not at the first forward
        self.network = network
        self.layer = layer or None
        self.pool = pool

    def forward(self, x: Tensor) -> Tensor:
        if self.layer is None:
            return pool_features(_first_tensor(self.network(x), "the network"), self.pool)
        layer = self.network.get_submodule(self.layer)
        (output,) = module_outputs([layer], lambda: self.network(x), f"layer '{self.layer}'")
        return pool_features(output, self.pool)


def _first_tensor(output: object, what: str) -> Tensor:
    """A layer's tensor output; modules returning (tensor, extras) tuples give their first element."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, Tensor):
        raise ExtractorError(f"{what} returns {type(output).__name__}, not a tensor")
    return output
