"""Algorithm 1 of the paper: the guided decoder, as the authors' code runs it.

Pure: tensors in, tensors out. No config, logging or files here: every evaluation is reported
through `callback(Evaluation)`, and listeners (tables, W&B, progress bar) do the rest.
docs/method.md explains each step; the comments name the paper's equations.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.profiler import record_function

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.samplers import History, Sampler
from fsa.diffusion.schedule import noise_for_x0, predict_x0, renoise
from fsa.extractors.base import FeatureExtractor
from fsa.guidance.feature_guidance import (
    FeatureGuidance,
    GuidanceStats,
    cosine_similarity,
    normalise_gradient,
    squared_distance,
)

PRE, POST = "pre", "post"


def region(part: str) -> AbstractContextManager[Any]:
    """A named part of the iteration (`fsa.<part>`) for torch.profiler, which times each part of a real
    iteration (scripts/profile_iteration.py); nothing at all when no profiler runs."""
    return record_function(f"fsa.{part}") if torch.autograd._profiler_enabled() else nullcontext()


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


@dataclass(frozen=True)
class Targets:
    """What a batch's samples aim at: f_s per sample (B, D), and the target images as the model's
    clean latents (B, C, H, W) where the guidance reads them (`needs_target_latent`), else None."""

    feature: Tensor
    latent: Tensor | None = None


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

    `step` and `k` name the next iteration; `generators` are the per-sample generator states;
    `history` is a multistep sampler's memory (None for DDPM and DDIM).
    """

    step: int
    k: int
    z: Tensor
    counts: dict[str, int]
    best: dict[str, Any]
    generators: list[Tensor]
    history: History | None = None


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
      l = ||f(x_hat) - f_s||^2 (Eq. 2) and g = dl/dz_t through UNet, VAE decoder and f (line 8;
      `guidance.gradient=z0_hat`: dl/dz0_hat, see `guidance_gradient`);
      g_hat = clip(normalise(g)) (line 9); eps' = eps + w_g g_hat (Eq. 3, line 10; then
      `backward_guidance` when `guidance.backward_steps` > 0);
      z_{t-1} from eps' (Eq. 4, line 11); unless k is the last, z_t re-noised from z_{t-1} (Eq. 5).

    After every iteration, `on_iteration(snapshot)` may call `snapshot()` for a `DecodeState`; passing
    that state back as `resume` (with the same generators, models and target) continues the run so
    that it ends exactly as an uninterrupted one.
    """
    schedule = backbone.schedule
    timesteps = sampler.timesteps(schedule.num_train_timesteps)
    run = DecodeRun(backbone, extractor, target, generators, dtype, callback)
    z, start_step, start_k = run.start(resume)
    device = run.device

    for step, t in enumerate(timesteps):
        if step < start_step:
            continue
        t_prev = timesteps[step + 1] if step + 1 < len(timesteps) else -1
        abar_t, abar_prev = schedule.abar(t), schedule.abar(t_prev)
        recurrences = guidance.recurrences(step, len(timesteps))
        for k in range(start_k if step == start_step else 0, recurrences):
            run.counts["unet"] += 1
            if guidance.enabled:
                eps, image, distance, cosine, grad = guidance_gradient(run, z, t, abar_t, guidance.gradient)
                with region("guide"):
                    eps_guided, stats = guidance.guide(eps, grad)  # normalise, clip, Eq. 3
                if guidance.backward_steps:  # the printed sign (direction=ascend) flips these steps too
                    lr = guidance.sign * guidance.backward_lr
                    with region("backward_guidance"):
                        eps_guided = backward_guidance(run, z, eps_guided, abar_t, guidance.backward_steps, lr)
            else:
                with torch.no_grad(), run.autocast, region("unet"):
                    eps = backbone.predict_noise(z, t)
                image, distance, cosine = run.score_x0(z, eps, abar_t)
                eps_guided, stats = eps.float(), None
            run.report(step, t, k, PRE, image, distance, cosine, stats)
            if guidance.checks_post(k, recurrences):  # the authors' extra check of z0' from eps'
                with region("post_check"):
                    scored = run.score_x0(z, eps_guided, abar_t)
                run.report(step, t, k, POST, *scored, None)

            with region("sampler"):
                z = z.detach()
                step_noise = initial_noise(generators, z.shape[1:], device) if sampler.stochastic else None
                z_prev = sampler.step(z, eps_guided, abar_t, abar_prev, step_noise, run.history)  # Eq. 4
                if k < recurrences - 1:  # Eq. 5: back to t; after the last k, move on without re-noising
                    z = renoise(z_prev, abar_t, abar_prev, initial_noise(generators, z.shape[1:], device))
                else:
                    run.remember(sampler, z, eps_guided, abar_t)
                    z = z_prev
            run.counts["iterations"] += 1
            if on_iteration is not None:
                on_iteration(run.snapshot(z, step, k + 1) if k + 1 < recurrences else run.snapshot(z, step + 1, 0))

    return run.result(z)


def guidance_gradient(
    run: "DecodeRun", z: Tensor, t: int, abar_t: float, wrt: str = "z_t"
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """eps_theta(z_t, t), the decoded z0_hat (Eq. 1, line 6), its distance and cosine (Eq. 2), and the
    gradient g of the distance (line 8), per sample: samples are independent.

    wrt "z_t" (the paper): g = dl/dz_t, through the UNet, the decoder and f. wrt "z0_hat": g =
    dl/dz0_hat with eps held fixed, so the UNet runs forward only. As dz0_hat/dz_t = (I - sqrt(1 -
    abar_t) deps/dz_t) / sqrt(abar_t), this drops the UNet's Jacobian; the scalar 1 / sqrt(abar_t)
    left over vanishes in Eq. 3's normalisation."""
    backbone = run.backbone
    if wrt == "z_t":
        z_in = z.detach().requires_grad_()
        with torch.enable_grad():
            with run.autocast:
                with region("unet"):
                    eps = backbone.predict_noise(z_in, t)  # the gradient flows through the UNet
                with region("decode"):
                    image = backbone.decode(predict_x0(z_in, eps, abar_t))
            distance, cosine = run.score(image)
            with region("backward"):
                (grad,) = torch.autograd.grad(distance.sum(), z_in)
        return eps.detach().float(), image, distance, cosine, grad
    with torch.no_grad(), run.autocast, region("unet"):
        eps = backbone.predict_noise(z, t)
    image, distance, cosine, grad = run.score_with_gradient(predict_x0(z, eps, abar_t))
    return eps.float(), image, distance, cosine, grad


def backward_guidance(run: "DecodeRun", z: Tensor, eps: Tensor, abar_t: float, steps: int, lr: float) -> Tensor:
    """Universal Guidance's backward guidance after Eq. 3: from z0' = z0_hat(z_t, eps'), `steps`
    steps delta <- delta - lr * ||z0'|| * g / ||g|| with g = d/d delta ||f(D(z0' + delta)) - f_s||^2,
    then the noise whose z0_hat is z0' + delta (Eq. 1 solved for eps). Per sample; a zero or
    non-finite gradient makes no step; a negative lr ascends."""
    x0 = predict_x0(z, eps, abar_t).detach()
    delta = torch.zeros_like(x0)
    for _ in range(steps):
        *_, grad = run.score_with_gradient(x0 + delta)  # d/d delta = d/d(z0' + delta)
        direction, _ = normalise_gradient(grad.float(), x0.float())  # g rescaled to ||z0'||
        delta = (delta - lr * direction.to(delta.dtype)).detach()
    return noise_for_x0(z, x0 + delta, abar_t).float()


class DecodeRun:
    """What every decode loop shares: scoring images against the target (Eq. 2), the best image so
    far, the evaluation callback, the counts, the start (fresh or from a `DecodeState`), snapshots
    for checkpoints, and the final image's result. The loop itself (which step does what) is the
    caller's: `guided_decode` (the paper) or `self_guided_decode` (Kadkhodaie et al.)."""

    def __init__(
        self,
        backbone: DiffusionBackbone,
        extractor: FeatureExtractor,
        target: Tensor,
        generators: Sequence[torch.Generator],
        dtype: torch.dtype,
        callback: Callable[[Evaluation], None] | None,
    ) -> None:
        self.backbone, self.extractor, self.generators, self.callback = backbone, extractor, generators, callback
        self.device = target.device
        self.target = target.float().expand(len(generators), -1)
        self.autocast = torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)
        self.best = _Best(len(generators))
        self.counts = {"iterations": 0, "unet": 0, "features": 0}
        self.history: History | None = None

    def start(self, resume: DecodeState | None) -> tuple[Tensor, int, int]:
        """The initial z_T, step and k: fresh noise from the generators, or where `resume` stood."""
        if resume is None:
            return initial_noise(self.generators, self.backbone.latent_shape, self.device), 0, 0
        self.counts.update(resume.counts)
        self.best.load(resume.best, self.device)
        if resume.history is not None:
            self.history = (resume.history[0].to(self.device), resume.history[1])
        for generator, generator_state in zip(self.generators, resume.generators, strict=True):
            generator.set_state(generator_state)
        return resume.z.to(self.device), resume.step, resume.k

    def remember(self, sampler: Sampler, z: Tensor, eps: Tensor, abar_t: float) -> None:
        """After a timestep's last step: a multistep sampler's history becomes this timestep's x0 (Eq. 1)."""
        if sampler.multistep:
            self.history = (predict_x0(z, eps, abar_t).detach(), abar_t)

    def score(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 2 (and the cosine) of decoded images against the target, per sample."""
        self.counts["features"] += 1
        with self.autocast, region("extract"):
            features = self.extractor(self.extractor.prepare_generated(image))
            return squared_distance(features, self.target), cosine_similarity(features, self.target)

    def score_x0(self, z: Tensor, eps: Tensor, abar_t: float) -> tuple[Tensor, Tensor, Tensor]:
        """z0_hat of z_t and eps (Eq. 1) decoded (line 6) and scored (Eq. 2), without a gradient:
        the image, its distance and its cosine."""
        with torch.no_grad():
            with self.autocast, region("decode"):
                image = self.backbone.decode(predict_x0(z, eps, abar_t))
            distance, cosine = self.score(image)
        return image, distance, cosine

    def score_with_gradient(self, x0: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """D(x0), its distance and cosine (Eq. 2), and the distance's gradient with respect to x0."""
        x0 = x0.detach().requires_grad_()
        with torch.enable_grad():
            with self.autocast, region("decode"):
                image = self.backbone.decode(x0)
            distance, cosine = self.score(image)
            with region("backward"):
                (grad,) = torch.autograd.grad(distance.sum(), x0)
        return image, distance, cosine, grad

    def report(
        self,
        step: int,
        t: int,
        k: int,
        phase: str,
        image: Tensor,
        distance: Tensor,
        cosine: Tensor,
        stats: GuidanceStats | None,
    ) -> None:
        with region("report"):  # the best image so far and the listeners (their host reads included)
            self.best.update(distance, image, t, k, phase)
            if self.callback is not None:
                self.callback(
                    Evaluation(
                        self.counts["iterations"],
                        step,
                        t,
                        k,
                        phase,
                        distance.detach().cpu(),
                        cosine.detach().cpu(),
                        image.detach(),
                        self.best.distance.clone(),
                        stats,
                    )
                )

    def snapshot(self, z: Tensor, step: int, k: int) -> Callable[[], DecodeState]:
        """A function that takes the state before iteration (step, k), for `on_iteration`."""
        history = self.history
        return lambda: DecodeState(
            step,
            k,
            z.detach().cpu(),
            dict(self.counts),
            self.best.state(),
            [g.get_state() for g in self.generators],
            None if history is None else (history[0].cpu(), history[1]),
        )

    def result(self, z: Tensor) -> DecodeResult:
        """The final image (z decoded) scored, beside the best one."""
        with torch.no_grad():
            with self.autocast:
                final_image = self.backbone.decode(z)
            final_distance, final_cosine = self.score(final_image)
        best = self.best
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
            guided_iterations=self.counts["iterations"],
            unet_evaluations=self.counts["unet"],
            feature_evaluations=self.counts["features"],
        )
