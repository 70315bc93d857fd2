"""Algorithm 1 of the paper: the guided decoder, as the authors' code runs it.

Pure: tensors in, tensors out. No config, logging or files here: every evaluation is reported
through `callback(Evaluation)`, and listeners (tables, W&B, progress bar) do the rest.
docs/method.md explains each step; the comments name the paper's equations.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.samplers import Sampler
from fsa.diffusion.schedule import predict_x0, renoise
from fsa.extractors.base import FeatureExtractor
from fsa.guidance.feature_guidance import FeatureGuidance, GuidanceStats, cosine_similarity, squared_distance

PRE, POST = "pre", "post"


@dataclass(frozen=True)
class Evaluation:
    """One scoring of decoded images against the target, for every sample of the batch.

    phase "pre" scores z0_hat from eps (Algorithm 1, line 8); "post" scores z0' from the guided
    eps' (the authors' extra check, logged as k + 0.5). Tensors are (B,) or (B, 3, H, W), detached.
    """

    iteration: int
    step: int
    t: int
    k: int
    phase: str
    distance: Tensor
    cosine: Tensor
    image: Tensor
    best_distance: Tensor  # the best so far per sample, this evaluation included (kept across a resume)
    stats: GuidanceStats | None = None


@dataclass
class DecodeResult:
    """Best and final images with where they were found; per-sample tensors are (B,) on the CPU."""

    final_image: Tensor
    final_distance: Tensor
    final_cosine: Tensor
    best_image: Tensor
    best_distance: Tensor
    best_t: Tensor
    best_k: Tensor
    best_phase: list[str]
    guided_iterations: int
    unet_evaluations: int
    feature_evaluations: int


@dataclass
class DecodeState:
    """Where the reverse process stands between two guided iterations: enough to continue it exactly.

    `step` and `k` name the next iteration; `generators` are the per-sample generator states.
    """

    step: int
    k: int
    z: Tensor
    counts: dict[str, int]
    best: dict[str, Any]
    generators: list[Tensor]


class _Best:
    """The best image so far per sample: the minimum over every evaluation (pre and post)."""

    def __init__(self, batch: int) -> None:
        self.distance = torch.full((batch,), float("inf"))
        self.t = torch.full((batch,), -1, dtype=torch.long)
        self.k = torch.full((batch,), -1, dtype=torch.long)
        self.phase = [""] * batch
        self.image: Tensor | None = None

    def update(self, distance: Tensor, image: Tensor, t: int, k: int, phase: str) -> None:
        distance = distance.detach().cpu()
        improved = distance < self.distance  # NaN never improves
        if self.image is None:
            self.image = image.detach().clone()
        mask = improved.to(image.device).view(-1, 1, 1, 1)
        self.image = torch.where(mask, image.detach(), self.image)
        self.distance = torch.where(improved, distance, self.distance)
        self.t[improved], self.k[improved] = t, k
        for i in improved.nonzero().flatten().tolist():
            self.phase[i] = phase

    def state(self) -> dict[str, Any]:
        return {"distance": self.distance, "t": self.t, "k": self.k, "phase": list(self.phase), "image": self.image}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.distance, self.t, self.k = state["distance"], state["t"], state["k"]
        self.phase = list(state["phase"])
        self.image = None if state["image"] is None else state["image"].to(device)


def initial_noise(generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device) -> Tensor:
    """N(0, I) of shape (B, *shape), one generator per sample, drawn on the CPU.

    A sample's noise depends only on its own generator, so its result does not depend on the
    batch it ran in, nor on the device.
    """
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)


def guided_decode(
    backbone: DiffusionBackbone,
    sampler: Sampler,
    guidance: FeatureGuidance,
    extractor: FeatureExtractor,
    target: Tensor,
    generators: Sequence[torch.Generator],
    *,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[Evaluation], None] | None = None,
    resume: DecodeState | None = None,
    on_iteration: Callable[[Callable[[], DecodeState]], None] | None = None,
) -> DecodeResult:
    """Generate len(generators) images whose features approach `target` (B, D) or (1, D).

    Per visited timestep t (line 2) and recurrence k < K (lines 3-4):
      eps = eps_theta(z_t, t); z0_hat (Eq. 1); x_hat = D(z0_hat) with virtual save (line 6);
      l = ||f(x_hat) - f_s||^2 (Eq. 2) and g = dl/dz_t through UNet, VAE decoder and f (line 8);
      g_hat = clip(normalise(g)) (line 9); eps' = eps + w_g g_hat (Eq. 3, line 10);
      z_{t-1} from eps' (Eq. 4, line 11); unless k is the last, z_t re-noised from z_{t-1} (Eq. 5).

    After every iteration, `on_iteration(snapshot)` may call `snapshot()` for a `DecodeState`; passing
    that state back as `resume` (with the same generators, models and target) continues the run so
    that it ends exactly as an uninterrupted one.
    """
    device = target.device
    batch = len(generators)
    target = target.float().expand(batch, -1)
    schedule = backbone.schedule
    timesteps = sampler.timesteps(schedule.num_train_timesteps)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    best = _Best(batch)
    counts = {"iterations": 0, "unet": 0, "features": 0}

    def score(image: Tensor) -> tuple[Tensor, Tensor]:
        counts["features"] += 1
        with autocast:
            features = extractor(extractor.prepare_generated(image))
        return squared_distance(features, target), cosine_similarity(features, target)

    def report(
        step: int,
        t: int,
        k: int,
        phase: str,
        image: Tensor,
        distance: Tensor,
        cosine: Tensor,
        stats: GuidanceStats | None,
    ) -> None:
        best.update(distance, image, t, k, phase)
        if callback is not None:
            callback(
                Evaluation(
                    counts["iterations"],
                    step,
                    t,
                    k,
                    phase,
                    distance.detach().cpu(),
                    cosine.detach().cpu(),
                    image.detach(),
                    best.distance.clone(),
                    stats,
                )
            )

    if resume is None:
        z, start_step, start_k = initial_noise(generators, backbone.latent_shape, device), 0, 0
    else:
        z, start_step, start_k = resume.z.to(device), resume.step, resume.k
        counts.update(resume.counts)
        best.load(resume.best, device)
        for generator, generator_state in zip(generators, resume.generators, strict=True):
            generator.set_state(generator_state)

    def snapshot(step: int, k: int) -> Callable[[], DecodeState]:
        return lambda: DecodeState(
            step, k, z.detach().cpu(), dict(counts), best.state(), [g.get_state() for g in generators]
        )

    for step, t in enumerate(timesteps):
        if step < start_step:
            continue
        t_prev = timesteps[step + 1] if step + 1 < len(timesteps) else -1
        abar_t, abar_prev = schedule.abar(t), schedule.abar(t_prev)
        recurrences = guidance.recurrences(step, len(timesteps))
        for k in range(start_k if step == start_step else 0, recurrences):
            counts["unet"] += 1
            if guidance.enabled:
                z_in = z.detach().requires_grad_()
                with torch.enable_grad():
                    with autocast:
                        eps = backbone.predict_noise(z_in, t)  # the gradient flows through the UNet
                        image = backbone.decode(predict_x0(z_in, eps, abar_t))  # Eq. 1, line 6
                    distance, cosine = score(image)  # Eq. 2
                    (grad,) = torch.autograd.grad(distance.sum(), z_in)  # per sample: samples are independent
                eps = eps.detach().float()
                eps_guided, stats = guidance.guide(eps, grad)  # normalise, clip, Eq. 3
            else:
                with torch.no_grad():
                    with autocast:
                        eps = backbone.predict_noise(z, t)
                        image = backbone.decode(predict_x0(z, eps, abar_t))
                    distance, cosine = score(image)
                eps_guided, stats = eps.float(), None
            report(step, t, k, PRE, image, distance, cosine, stats)

            if guidance.checks_post(k, recurrences):
                with torch.no_grad():
                    with autocast:
                        image = backbone.decode(predict_x0(z, eps_guided, abar_t))
                    distance, cosine = score(image)
                report(step, t, k, POST, image, distance, cosine, None)

            z = z.detach()
            step_noise = initial_noise(generators, z.shape[1:], device) if sampler.stochastic else None
            z_prev = sampler.step(z, eps_guided, abar_t, abar_prev, step_noise)  # Eq. 4
            if k < recurrences - 1:  # Eq. 5: back to t; after the last k, move on without re-noising
                z = renoise(z_prev, abar_t, abar_prev, initial_noise(generators, z.shape[1:], device))
            else:
                z = z_prev
            counts["iterations"] += 1
            if on_iteration is not None:
                on_iteration(snapshot(step, k + 1) if k + 1 < recurrences else snapshot(step + 1, 0))

    with torch.no_grad():
        with autocast:
            final_image = backbone.decode(z)
        final_distance, final_cosine = score(final_image)
    assert best.image is not None
    return DecodeResult(
        final_image=final_image.float(),
        final_distance=final_distance.cpu(),
        final_cosine=final_cosine.cpu(),
        best_image=best.image.float(),
        best_distance=best.distance,
        best_t=best.t,
        best_k=best.k,
        best_phase=best.phase,
        guided_iterations=counts["iterations"],
        unet_evaluations=counts["unet"],
        feature_evaluations=counts["features"],
    )
