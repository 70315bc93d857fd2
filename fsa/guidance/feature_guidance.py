"""Feature guidance: Eq. 2 (distance), gradient normalisation and clipping, Eq. 3, the K schedule.

All functions work per sample on batched tensors: norms, means and stds are taken over
every dimension but the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from fsa.guidance.options import CLIP_MODES, GuidanceOptions

if TYPE_CHECKING:
    from fsa.diffusion.backbones import DiffusionBackbone
    from fsa.diffusion.samplers import Sampler
    from fsa.extractors.base import FeatureExtractor
    from fsa.guidance.decoder import DecodeResult, Targets


def _per_sample(x: Tensor) -> Tensor:
    return x.flatten(1)


def _expand(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def squared_distance(features: Tensor, target: Tensor) -> Tensor:
    """Eq. 2: l = ||f(x) - f_s||^2 per sample, in fp32 whatever precision f ran in."""
    return (features.float() - target.float()).pow(2).sum(dim=1)


def cosine_similarity(features: Tensor, target: Tensor) -> Tensor:
    """Cosine similarity to the target, per sample (logged beside the distance, as the authors do)."""
    return torch.nn.functional.cosine_similarity(features.float(), target.float(), dim=1)


def normalise_gradient(grad: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """g_hat = g * ||eps||_F / ||g||_F per sample (Sec. III-A), and ||g|| for logging.

    A zero or non-finite gradient (the NaN source known from re-implementations of this family)
    gives g_hat = 0 for that sample: no guidance at this iteration rather than a corrupted latent.
    """
    grad_norm = _per_sample(grad).norm(dim=1)
    usable = torch.isfinite(grad_norm) & (grad_norm > 0)
    scale = torch.where(usable, _per_sample(eps).norm(dim=1) / torch.where(usable, grad_norm, 1.0), 0.0)
    g_hat = torch.where(_expand(usable, grad), grad * _expand(scale, grad), torch.zeros_like(grad))
    return g_hat, grad_norm


def clip_gradient(g_hat: Tensor, c: float, mode: str = "mean") -> tuple[Tensor, Tensor]:
    """Clip element-wise at centre +- c * std(g_hat), recomputed from the current tensor (Fig. 2).

    mode "mean": centre = mean(g_hat), as the authors' code; "zero": centre = 0, as the paper's
    text ("+-grad_thres"); "off" (or c <= 0): no clipping. std is the unbiased one.
    Returns the clipped tensor and the fraction of clipped elements per sample.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"clip mode must be one of {CLIP_MODES}, got '{mode}'")
    if mode == "off" or c <= 0:
        return g_hat, torch.zeros(g_hat.shape[0], device=g_hat.device)
    flat = _per_sample(g_hat)
    std = flat.std(dim=1)
    centre = flat.mean(dim=1) if mode == "mean" else torch.zeros_like(std)
    low, high = _expand(centre - c * std, g_hat), _expand(centre + c * std, g_hat)
    clipped = torch.minimum(torch.maximum(g_hat, low), high)
    fraction = _per_sample((g_hat < low) | (g_hat > high)).float().mean(dim=1)
    return clipped, fraction


@dataclass(frozen=True)
class GuidanceStats:
    """Per-sample gradient statistics of one guided iteration: (B,) each, and the normalised
    gradient before clipping (B, C, H, W), whose value distribution is the paper's Fig. 2."""

    grad_norm: Tensor
    normalised_std: Tensor
    clipped_fraction: Tensor
    normalised: Tensor


@dataclass(frozen=True)
class FeatureGuidance(GuidanceOptions):
    """The paper's guidance: its hyper-parameters and K schedule (`GuidanceOptions`) and Eq. 3."""

    needs_target_latent: ClassVar[bool] = False  # Eq. 3 needs only f_s

    def decode(
        self,
        backbone: DiffusionBackbone,
        sampler: Sampler,
        extractor: FeatureExtractor,
        targets: Targets,
        generators: Sequence[torch.Generator],
        **options: Any,
    ) -> DecodeResult:
        """Algorithm 1 under this guidance: `guided_decode` (the decode signature every guidance shares)."""
        from fsa.guidance.decoder import guided_decode  # the decoder imports this module's Eq. 2 and 3

        return guided_decode(backbone, sampler, self, extractor, targets.feature, generators, **options)

    def baseline(self, name: str) -> Any:
        """`GuidanceOptions.baseline`, and `adversarial`: the distance minimised with no diffusion prior."""
        if name == "adversarial":
            from fsa.guidance.adversarial import AdversarialControl  # it imports the decoder, which imports this

            return AdversarialControl(self)
        return super().baseline(name)

    def guide(self, eps: Tensor, grad: Tensor) -> tuple[Tensor, GuidanceStats]:
        """Eq. 3 with normalisation and clipping: eps' = eps +- w_g * clip(normalise(g))."""
        grad = grad.float()
        if self.normalise:
            g_hat, grad_norm = normalise_gradient(grad, eps.float())
        else:
            g_hat, grad_norm = grad, _per_sample(grad).norm(dim=1)
        normalised, normalised_std = g_hat, _per_sample(g_hat).std(dim=1)
        g_hat, clipped_fraction = clip_gradient(g_hat, self.clip_c, self.clip_mode)
        eps_guided = eps + self.sign * self.w_g * g_hat.to(eps.dtype)
        return eps_guided, GuidanceStats(grad_norm, normalised_std, clipped_fraction, normalised)
