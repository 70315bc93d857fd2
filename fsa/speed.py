"""Speed and memory options: how the networks run, not what the guided decoder computes.

The paper-faithful mode is every option off (fp32 autocast off, SDPA attention, nothing compiled):
the defaults. Each option keeps the result of a guided iteration equal to the plain path within the
tolerance stated here and asserted in tests/test_speed.py:
  - activation checkpointing (VAE decoder, UNet) recomputes activations in the backward pass: less
    memory, one more forward; bit-identical gradients;
  - channels_last stores 4-D tensors as NHWC (faster convolutions on tensor cores): the same maths
    in another summation order; over a 9-iteration decode, within 2e-3 relative in distance (the
    virtual save's 8-bit rounding and the normalised gradient amplify last-bit differences);
  - compile (torch.compile of the UNet, the VAE decoder and the extractor): fused kernels, another
    summation order (1e-4 relative after a 2-step decode);
  - attention "sdpa" is torch's fused scaled_dot_product_attention (diffusers' default and fsa's);
    "eager" is the explicit softmax(QK^T / sqrt(d)) V of diffusers' AttnProcessor, the path the
    paper's 2022-era code ran (as channels_last: 2e-3 relative over 9 iterations).
Precision (bf16/fp16 autocast, distance in fp32) is the top-level `dtype`, and thinning the
post-guidance check is `guidance.post_check_every`: those two change results beyond rounding, and
their effect on best distance is measured (docs/speed.md, "Speed and memory").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsa.errors import ConfigError

if TYPE_CHECKING:  # this module is read at startup by the config schema: torch loads when options apply
    import torch

    from fsa.diffusion.backbones import DiffusionBackbone
    from fsa.extractors.base import FeatureExtractor

log = logging.getLogger(__name__)

ATTENTION = ("sdpa", "eager")
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # the `dtype` option: autocast precision (distances stay fp32)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `dtype` option value."""
    import torch

    if name not in DTYPE_NAMES:
        raise ConfigError(f"dtype must be one of {DTYPE_NAMES}, got '{name}'")
    return getattr(torch, name)


@dataclass(frozen=True)
class SpeedOptions:
    """channels_last, compile, attention: speed; *_activation_checkpointing: memory (see module doc)."""

    channels_last: bool = False
    compile: bool = False
    attention: str = "sdpa"
    vae_activation_checkpointing: bool = False
    unet_activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION:
            raise ConfigError(f"speed.attention must be one of {ATTENTION}, got '{self.attention}'")

    def enabled(self) -> list[str]:
        """The options that differ from the paper-faithful defaults, for logs and summaries."""
        defaults = SpeedOptions()
        return [f"{name}={value}" for name, value in vars(self).items() if value != getattr(defaults, name)]


def apply_speed_options(backbone: DiffusionBackbone, extractor: FeatureExtractor, options: SpeedOptions) -> None:
    """Set the options on the (frozen, already placed) networks, in place. Call once, before decoding."""
    import torch
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

    from fsa.diffusion.backbones import LatentDiffusion

    processor = AttnProcessor2_0() if options.attention == "sdpa" else AttnProcessor()
    for module in backbone.modules():
        if isinstance(module, Attention):
            module.set_processor(processor)
    if options.unet_activation_checkpointing:
        backbone.unet.enable_gradient_checkpointing()
    if options.vae_activation_checkpointing:
        if isinstance(backbone, LatentDiffusion):
            backbone.vae.enable_gradient_checkpointing()
        else:
            log.info("speed.vae_activation_checkpointing: %s is a pixel model, without a VAE", backbone.name)
    if options.channels_last:
        backbone.to(memory_format=torch.channels_last)
        extractor.to(memory_format=torch.channels_last)
    if options.compile:
        # Module.compile compiles each network's forward in place: the modules stay what they were
        # (configs, hooks, state dicts), and the decoder's autograd.grad runs through the compiled graphs.
        # The networks the guided iteration runs: the UNet, a latent model's VAE decoder, the extractor.
        vae = [backbone.vae.decoder] if isinstance(backbone, LatentDiffusion) else []
        for module in [backbone.unet, *vae, extractor]:
            module.compile(dynamic=False)
