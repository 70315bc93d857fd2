"""A UNet built like Kadkhodaie et al.'s (their appendix A.1): fully convolutional, every layer a 3x3
convolution with zero padding, a layer norm and a ReLU, so every block's output is non-negative and
its spatial means are the paper's representation a_b (their Sec. 2.1).

Layout: encoder blocks of 2 layers at full, 1/2 and 1/4 size; a middle block of 3 layers at 1/8;
decoder blocks of 6 layers at 1/4, 1/2 and full size. The width doubles at each down-sampling and
halves at each up-sampling (the paper: 64-128-256, 512, 256-128-64; fsa's digits model a quarter of
that). A decoder block reads the up-sampled block below concatenated with the encoder block of its
size (the skip). A 1x1 convolution after the last block gives the prediction, the only signed output.

Conditioning as the paper has it: none. The network is a *blind* denoiser, told neither the noise
level nor the timestep; it infers them from the noisy input. `timestep` is accepted and ignored so
that fsa's samplers call it like any diffusers UNet.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import Tensor, nn


class ConvNormReLU(nn.Sequential):
    """One layer: 3x3 convolution (zero boundary), layer norm over (C, H, W), ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(1, out_channels),  # one group: a layer norm of each image's (C, H, W)
            nn.ReLU(),
        )


class Block(nn.Sequential):
    """`layers` ConvNormReLU layers: the first maps in_channels to out_channels, the rest keep it."""

    def __init__(self, in_channels: int, out_channels: int, layers: int) -> None:
        super().__init__(*(ConvNormReLU(in_channels if i == 0 else out_channels, out_channels) for i in range(layers)))


class ReLUUNet(ModelMixin, ConfigMixin):
    """Kadkhodaie et al.'s UNet layout; blocks `down_blocks.<i>`, `mid_block`, `up_blocks.<i>` as in
    diffusers (so `extractor=unet_block` and `task=represent` read it like any diffusers UNet)."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,
        in_channels: int = 1,
        out_channels: int = 1,
        block_out_channels: tuple[int, ...] = (16, 32, 64),
        mid_channels: int = 128,
        encoder_layers: int = 2,
        mid_layers: int = 3,
        decoder_layers: int = 6,
    ) -> None:
        super().__init__()
        widths = list(block_out_channels)
        self.down_blocks = nn.ModuleList(
            Block(in_channels if i == 0 else widths[i - 1], width, encoder_layers) for i, width in enumerate(widths)
        )
        self.mid_block = Block(widths[-1], mid_channels, mid_layers)
        self.pool = nn.MaxPool2d(2)
        below = [mid_channels, *reversed(widths[1:])]  # what each decoder block receives from below
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(channels, width, 2, stride=2)
            for channels, width in zip(below, reversed(widths), strict=True)
        )
        self.up_blocks = nn.ModuleList(Block(2 * width, width, decoder_layers) for width in reversed(widths))
        self.conv_out = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, sample: Tensor, timestep: Tensor | int | None = None, return_dict: bool = True) -> UNet2DOutput:
        """The noise prediction for a noisy batch (B, C, S, S); `timestep` is ignored (a blind denoiser)."""
        skips, h = [], sample
        for block in self.down_blocks:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.mid_block(h)
        for upsample, block, skip in zip(self.upsamplers, self.up_blocks, reversed(skips), strict=True):
            h = block(torch.cat([upsample(h), skip], dim=1))  # the skip beside the block below
        out = self.conv_out(h)
        return UNet2DOutput(sample=out) if return_dict else (out,)
