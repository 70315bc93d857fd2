"""The denoiser's own representation (Kadkhodaie et al.): the spatial means of the output channels
of one block of a diffusion UNet, at a noise level, averaged over noise realisations.

phi_t(x) = E_z[ a(sqrt(abar_t) z_0 + sqrt(1 - abar_t) z, t) ],  a(z_t, t) = spatial mean of the
block's output channels, z_0 = the image in the model's space (itself for a pixel model, its VAE
latent for a latent one). The paper's E_z[a(x + sigma z)] is written for a variance-exploding
denoiser; a DDPM's noisy input at t is the variance-preserving form above (the same thing up to the
scale sqrt(abar_t)). The expectation is a mean over `noise_samples` fixed noise draws, the same for
every image (common random numbers): phi is a deterministic, differentiable function of x.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.errors import ExtractorError
from fsa.extractors.base import HALF, FeatureExtractor
from fsa.extractors.layers import ModuleCall, module_calls


def block_names(unet: nn.Module) -> list[str]:
    """A diffusers UNet's blocks in the order the input meets them: encoder, middle, decoder."""
    names = [f"down_blocks.{i}" for i in range(len(getattr(unet, "down_blocks", [])))]
    if getattr(unet, "mid_block", None) is not None:
        names.append("mid_block")
    return names + [f"up_blocks.{i}" for i in range(len(getattr(unet, "up_blocks", [])))]


def check_blocks(backbone: DiffusionBackbone, blocks: Sequence[str]) -> None:
    """Each name must be a block of the backbone's UNet; the error lists the blocks it has."""
    unet = getattr(backbone, "unet", None)
    names = block_names(unet) if unet is not None else []
    if not names:
        raise ExtractorError(f"model '{backbone.name}' has no UNet blocks to read a representation from")
    for block in blocks:
        if block not in names:
            raise ExtractorError(
                f"{type(unet).__name__} of model '{backbone.name}' has no block '{block}'; "
                f"its blocks: {', '.join(names)}"
            )


def _block_calls(backbone: DiffusionBackbone, z_t: Tensor, t: int, blocks: Sequence[str]) -> list[ModuleCall]:
    modules = [backbone.unet.get_submodule(block) for block in blocks]
    return module_calls(modules, lambda: backbone.predict_noise(z_t, t), f"block(s) {', '.join(blocks)}")


def block_means(backbone: DiffusionBackbone, z_t: Tensor, t: int, blocks: Sequence[str]) -> list[Tensor]:
    """a(z_t, t) for each block: the spatial means (B, C_block) of its output channels for the noisy
    z_t at t. The forward stops after the last of them: an encoder or middle block never runs the
    decoder, so a gradient through it costs the first half of the network only (the matching step)."""
    return [call.output.float().mean(dim=(2, 3)) for call in _block_calls(backbone, z_t, t, blocks)]


def _noised(backbone: DiffusionBackbone, z0: Tensor, t: int, noise: Tensor) -> Tensor:
    """z0 (B, C, H, W) noised at t with each draw of `noise` (N, C, H, W): (B * N, C, H, W)."""
    abar = backbone.schedule.abar(t)
    return (abar**0.5 * z0[:, None] + (1 - abar) ** 0.5 * noise.to(z0.dtype)[None]).flatten(0, 1)


def represent(backbone: DiffusionBackbone, z0: Tensor, t: int, noise: Tensor, blocks: Sequence[str]) -> list[Tensor]:
    """phi_t of clean latents z0 (B, C, H, W) for each block: the block means of z0 noised with each
    draw of `noise` (N, C, H, W) at t, averaged over the draws (B, C_block)."""
    means = block_means(backbone, _noised(backbone, z0, t, noise), t, blocks)
    return [m.view(len(z0), len(noise), -1).mean(dim=1) for m in means]


def represent_input_output(
    backbone: DiffusionBackbone, z0: Tensor, t: int, noise: Tensor, blocks: Sequence[str]
) -> tuple[list[Tensor], list[Tensor]]:
    """phi_t as `represent` computes it, of each block's input channels (every feature map the block
    reads: a decoder block's skips too) and of its output channels, from one forward pass."""
    calls = _block_calls(backbone, _noised(backbone, z0, t, noise), t, blocks)

    def averaged(maps: Tensor) -> Tensor:
        return maps.float().mean(dim=(2, 3)).view(len(z0), len(noise), -1).mean(dim=1)

    return [averaged(call.input_maps()) for call in calls], [averaged(call.output) for call in calls]


class UNetBlockExtractor(FeatureExtractor):
    """phi_t(x) of one block of a diffusion model's UNet as the feature extractor f.

    model: the diffusion backbone (by default the run's own `model`); block: a name from
    `block_names` (the middle block by default); timestep: the noise level t at which images are
    represented; noise_samples, noise_seed: the fixed draws z of the expectation.
    """

    def __init__(
        self,
        model: DiffusionBackbone,
        block: str = "mid_block",
        timestep: int = 100,
        noise_samples: int = 4,
        noise_seed: int = 0,
        name: str | None = None,
    ) -> None:
        if not 0 <= timestep < model.schedule.num_train_timesteps:
            raise ExtractorError(
                f"extractor.timestep must be in [0, {model.schedule.num_train_timesteps - 1}], got {timestep}"
            )
        if noise_samples < 1:
            raise ExtractorError(f"extractor.noise_samples must be >= 1, got {noise_samples}")
        super().__init__(name or f"{model.name}:{block}@t{timestep}", model.image_size, HALF, HALF)
        check_blocks(model, [block])
        self.backbone, self.block, self.timestep = model, block, timestep
        generator = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("noise", torch.randn((noise_samples, *model.latent_shape), generator=generator))
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, S, S) images, i.e. in [-1, 1] -> phi at the extractor's timestep (B, C)."""
        return self.represent(self.backbone.encode(x), self.timestep)

    def represent(self, z0: Tensor, t: int) -> Tensor:
        """phi_t of clean latents z0 (B, C, H, W), with the extractor's fixed noise draws (B, C)."""
        return represent(self.backbone, z0, t, self.noise, [self.block])[0]

    def means(self, z_t: Tensor, t: int) -> Tensor:
        """a(z_t, t) of already noisy latents (the self-guided matching step's own representation)."""
        return block_means(self.backbone, z_t, t, [self.block])[0]
