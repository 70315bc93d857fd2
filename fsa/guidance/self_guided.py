"""Self-guided stochastic reconstruction (Kadkhodaie et al., Algorithms 1 and 2): the diffusion
model decodes its own representation of a target image.

Per visited timestep t:
  matching step (Algorithm 2): z_t <- z_t - eta grad_z ||phi_t(z_t) - phi_t(x_c)||^2, repeated until
    the distance is within the tolerance or the iteration cap; phi_t(z_t) is the UNet block's
    spatial means at the sample's own t (no extra noise: z_t is already noisy), phi_t(x_c) the
    target image's at the same t, E_z over the extractor's fixed draws;
  score step (Algorithm 1): eps = eps_theta(z_t, t), z_{t-1} by the sampler (DDPM or DDIM).
Pure like `guided_decode`, with which it shares scoring, best image, callbacks and resume
(`DecodeRun`): the images are scored with the extractor as in the paper's guidance, so both
guidance methods are judged by the same distance.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.samplers import Sampler
from fsa.extractors.unet_block import UNetBlockExtractor
from fsa.guidance.decoder import PRE, DecodeResult, DecodeRun, DecodeState, Evaluation, Targets, initial_noise
from fsa.guidance.options import SelfGuidedOptions


@dataclass(frozen=True)
class Matching:
    """What one matching step did, per sample (B,): iterations run, relative squared distance
    ||phi_t(z_t) - phi_t(x_c)||^2 / ||phi_t(x_c)||^2 before and after."""

    iterations: Tensor
    start: Tensor
    end: Tensor


@dataclass(frozen=True)
class SelfGuidance(SelfGuidedOptions):
    """`SelfGuidedOptions` with the matching step (Algorithm 2)."""

    needs_target_latent: ClassVar[bool] = True  # matching reads phi of the target images themselves

    def decode(
        self,
        backbone: DiffusionBackbone,
        sampler: Sampler,
        extractor: UNetBlockExtractor,
        targets: Targets,
        generators: Sequence[torch.Generator],
        **options: Any,
    ) -> DecodeResult:
        """Algorithms 1 and 2 under this guidance: `self_guided_decode` (the decode signature every
        guidance shares); `targets.latent` holds the target images in the model's space."""
        if targets.latent is None:
            raise ValueError("self-guided decoding needs the target images (targets.latent)")
        return self_guided_decode(
            backbone, sampler, self, extractor, targets.feature, targets.latent, generators, **options
        )

    def match(self, represent: Callable[[Tensor], Tensor], z: Tensor, target: Tensor) -> tuple[Tensor, Matching]:
        """Move each sample's z (B, C, H, W) until represent(z) (B, D) is within the tolerance of
        target (B, D), by at most `max_iterations` gradient steps; converged samples stay put."""
        scale = target.pow(2).sum(1).clamp_min(1e-12)
        iterations = torch.zeros(len(z), dtype=torch.long, device=z.device)
        start = None
        for i in range(self.max_iterations + 1):
            z_in = z.detach().requires_grad_()
            with torch.enable_grad():
                distance = (represent(z_in) - target).pow(2).sum(1)
            relative = distance.detach() / scale
            start = relative if start is None else start
            active = relative > self.tolerance
            if i == self.max_iterations or not active.any():
                break
            (grad,) = torch.autograd.grad(distance.sum(), z_in)  # per sample: samples are independent
            step = grad
            if self.normalise:  # eta is a fraction of ||z_t|| per sample; a zero gradient moves nothing
                grad_norm = grad.flatten(1).norm(dim=1)
                size = torch.where(grad_norm > 0, z.flatten(1).norm(dim=1) / grad_norm.clamp_min(1e-30), 0.0)
                step = grad * size.view(-1, 1, 1, 1)
            z = z.detach() - self.lr * step * active.view(-1, 1, 1, 1)
            iterations += active
        assert start is not None
        return z.detach(), Matching(iterations.cpu(), start.cpu(), relative.cpu())


def self_guided_decode(
    backbone: DiffusionBackbone,
    sampler: Sampler,
    guidance: SelfGuidance,
    extractor: UNetBlockExtractor,
    target: Tensor,
    target_latent: Tensor,
    generators: Sequence[torch.Generator],
    *,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[Evaluation], None] | None = None,
    on_matching: Callable[[int, int, Matching], None] | None = None,
    resume: DecodeState | None = None,
    on_iteration: Callable[[Callable[[], DecodeState]], None] | None = None,
) -> DecodeResult:
    """len(generators) samples whose own-representation matches that of `target_latent` (B, C, H, W),
    the target images in the model's space; `target` (B, D) is their feature under `extractor`, for
    scoring. `on_matching(step, t, matching)` hears of each matching step; resume as `guided_decode`."""
    if extractor.backbone.latent_shape != backbone.latent_shape:
        raise ValueError("self-guided decoding needs the extractor's UNet to work in the model's latent space")
    timesteps = sampler.timesteps(backbone.schedule.num_train_timesteps)
    run = DecodeRun(backbone, extractor, target, generators, dtype, callback)
    z, start_step, _ = run.start(resume)
    target_latent = target_latent.expand(len(generators), -1, -1, -1)
    for step, t in enumerate(timesteps):
        if step < start_step:
            continue
        abar_t = backbone.schedule.abar(t)
        abar_prev = backbone.schedule.abar(timesteps[step + 1] if step + 1 < len(timesteps) else -1)
        if guidance.enabled:  # Algorithm 2 at the sample's own noise level
            with torch.no_grad():
                wanted = extractor.represent(target_latent, t)
            z, matching = guidance.match(lambda z_in, t=t: extractor.means(z_in, t), z, wanted)
            if on_matching is not None:
                on_matching(step, t, matching)
        with torch.no_grad():  # the score step, and the predicted clean image scored as in the paper
            run.counts["unet"] += 1
            with run.autocast:
                eps = backbone.predict_noise(z, t).float()
            run.report(step, t, 0, PRE, *run.score_x0(z, eps, abar_t), None)
            step_noise = initial_noise(generators, z.shape[1:], run.device) if sampler.stochastic else None
            z_prev = sampler.step(z, eps, abar_t, abar_prev, step_noise, run.history)
            run.remember(sampler, z, eps, abar_t)
            z = z_prev
        run.counts["iterations"] += 1
        if on_iteration is not None:
            on_iteration(run.snapshot(z, step + 1, 0))
    return run.result(z)
