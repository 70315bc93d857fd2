"""Embedding networks: an image x_0 in, a seed x_T out, such that f_theta(x_T) is close to x_0.

The three sizes follow the journal version's Table 1: one 5x5 convolution (the seed as a filtered,
rescaled image), three 5x5 convolutions (16-16-out channels), and a U-Net. They are trained by
`scripts/train_digits_embedders.py` on pairs (f_theta(x_T), x_T) that the diffusion model generates
itself, for one DDIM step count: a network is only valid with the generator it was trained for.
"""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fsa.embedding.options import GENERATOR, KINDS
from fsa.embedding.options import NETWORKS as NAMES
from fsa.errors import ConfigError
from fsa.weights import load_state_dict_file, require_file


def conv(inputs: int, outputs: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2)


class ConvEmbedder(nn.Module):
    """`len(widths) + 1` convolutions of `kernel` x `kernel`, SiLU between them: image -> seed."""

    def __init__(self, channels: int, widths: tuple[int, ...] = (), kernel: int = 5) -> None:
        super().__init__()
        sizes = [channels, *widths, channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(pairwise(sizes)):
            layers.append(conv(a, b, kernel))
            if i < len(sizes) - 2:
                layers.append(nn.SiLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(image)


class UNetEmbedder(nn.Module):
    """A small U-Net (two scales down and up, skip connections): image -> seed."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()

        def block(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(
                conv(a, b, 3), nn.GroupNorm(8, b), nn.SiLU(), conv(b, b, 3), nn.GroupNorm(8, b), nn.SiLU()
            )

        self.down1, self.down2 = block(channels, width), block(width, 2 * width)
        self.middle = block(2 * width, 2 * width)
        self.up2, self.up1 = block(4 * width, 2 * width), block(3 * width, width)
        self.out = conv(width, channels, 3)
        self.pool, self.upsample = nn.AvgPool2d(2), nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, image: Tensor) -> Tensor:
        first = self.down1(image)
        second = self.down2(self.pool(first))
        middle = self.middle(self.pool(second))
        up = self.up2(torch.cat([self.upsample(middle), second], 1))
        return self.out(self.up1(torch.cat([self.upsample(up), first], 1)))


def build(kind: str, channels: int) -> nn.Module:
    """A new, randomly initialised embedding network of one of the `KINDS`."""
    if kind == "conv1":
        return ConvEmbedder(channels)
    if kind == "conv3":
        return ConvEmbedder(channels, (16, 16))
    if kind == "unet":
        return UNetEmbedder(channels)
    raise ConfigError(f"embedding network kind must be one of {KINDS}, got '{kind}'")


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def save(network: nn.Module, folder: Path, info: dict[str, Any]) -> Path:
    """`<folder>/<name>.safetensors` and `<name>.json` (name, kind, channels, the generator's DDIM steps,
    ...); the name is the kind's unless `info` gives one (`<kind>_generator`)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    name = info.get("name", info["kind"])
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, folder / f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps(info, indent=1) + "\n")
    return folder / f"{name}.safetensors"


def load(folder: str | Path, name: str) -> tuple[nn.Module, dict[str, Any]]:
    """The trained network `name` (one of `NAMES`) from `folder`, and what it was trained for (its json)."""
    folder = Path(folder)
    if name not in NAMES:
        raise ConfigError(f"embedding network must be one of {NAMES}, got '{name}'")
    info_file = require_file(folder / f"{name}.json", f"embedding network '{name}'")
    info = json.loads(info_file.read_text())
    network = build(name.removesuffix(GENERATOR), int(info["channels"]))
    weights = require_file(folder / f"{name}.safetensors", f"embedding network '{name}'")
    network.load_state_dict(load_state_dict_file(weights, f"embedding network '{name}'"))
    return network.eval().requires_grad_(False), info
