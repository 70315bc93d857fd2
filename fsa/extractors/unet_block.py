"""The denoiser's own representation (Kadkhodaie et al.): the spatial means of the output channels
of one block of a diffusion UNet, at a noise level, averaged over noise realisations.

phi_t(x) = E_z[ a(sqrt(abar_t) z_0 + sqrt(1 - abar_t) z, t) ],  a(z_t, t) = spatial mean of the
block's output channels, z_0 = the image in the model's space (itself for a pixel model, its VAE
latent for a latent one). The paper's E_z[a(x + sigma z)] is written for a variance-exploding
denoiser; a DDPM's noisy input at t is the variance-preserving form above (the same thing up to the
scale sqrt(abar_t)). The expectation is a mean over `noise_samples` fixed noise draws, the same for
every image (common random numbers): phi is a deterministic, differentiable function of x.
"""

import torch
from torch import Tensor, nn

from fsa.diffusion.backbones import DiffusionBackbone, LatentDiffusion
from fsa.errors import ExtractorError
from fsa.extractors.base import FeatureExtractor
from fsa.extractors.layers import module_output

SIGNED_MEAN, SIGNED_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # normalised input = the image in [-1, 1]


def block_names(unet: nn.Module) -> list[str]:
    """A diffusers UNet's blocks in the order the input meets them: encoder, middle, decoder."""
    names = [f"down_blocks.{i}" for i in range(len(getattr(unet, "down_blocks", [])))]
    if getattr(unet, "mid_block", None) is not None:
        names.append("mid_block")
    return names + [f"up_blocks.{i}" for i in range(len(getattr(unet, "up_blocks", [])))]


class BlockMeans(nn.Module):
    """a(z_t, t): the spatial means (B, C) of one UNet block's output channels for the noisy z_t at t.

    The forward stops after the block: an encoder or middle block never runs the decoder, so a
    gradient through it costs the first half of the network only (the paper's matching step)."""

    def __init__(self, backbone: DiffusionBackbone, block: str = "mid_block") -> None:
        super().__init__()
        unet = getattr(backbone, "unet", None)
        names = block_names(unet) if unet is not None else []
        if not names:
            raise ExtractorError(f"model '{backbone.name}' has no UNet blocks to read a representation from")
        if block not in names:
            raise ExtractorError(
                f"{type(unet).__name__} of model '{backbone.name}' has no block '{block}'; "
                f"its blocks: {', '.join(names)}"
            )
        self.backbone, self.block = backbone, block

    def forward(self, z_t: Tensor, t: int) -> Tensor:
        module = self.backbone.unet.get_submodule(self.block)
        output = module_output(module, lambda: self.backbone.predict_noise(z_t, t), f"block '{self.block}'")
        return output.float().mean(dim=(2, 3))


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
        channels, size, _ = model.latent_shape
        pixels = size * model.vae_factor if isinstance(model, LatentDiffusion) else size
        super().__init__(name or f"{model.name}:{block}@t{timestep}", pixels, SIGNED_MEAN, SIGNED_STD)
        self.means = BlockMeans(model, block)
        self.backbone, self.timestep = model, timestep
        generator = torch.Generator().manual_seed(noise_seed)
        self.register_buffer("noise", torch.randn((noise_samples, channels, size, size), generator=generator))
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, S, S) images, i.e. in [-1, 1] -> phi at the extractor's timestep (B, C)."""
        return self.represent(self.backbone.encode(x), self.timestep)

    def represent(self, z0: Tensor, t: int) -> Tensor:
        """phi_t of clean latents z0 (B, C, H, W): the block means of each noised copy, averaged (B, C)."""
        abar = self.backbone.schedule.abar(t)
        noise = self.noise.to(z0.dtype)
        noisy = abar**0.5 * z0[:, None] + (1 - abar) ** 0.5 * noise[None]  # (B, N, C, H, W)
        means = self.means(noisy.flatten(0, 1), t)
        return means.view(len(z0), len(noise), -1).mean(dim=1)
