"""The deterministic DDIM generator f_theta(x_T) and three ways back from an image to its seeds
(Asperti et al., "Image embedding for denoising generative models"): inversion, gradient descent
and, in `networks.py`, an embedding network. Pure: tensors in, tensors out, a per-iteration callback.

Conventions: `timesteps` run from high to low, as `strided_timesteps` gives them; the seed x_T is
the state at the first (highest) of them; the last step (to t = -1, abar = 1) returns the predicted
clean sample, so f_theta(x_T) = z_0. Every tensor carries a batch dimension; samples never mix
(the UNet normalises per sample), so a batch of B seeds is B independent problems.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as recompute

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.diffusion.schedule import ddim_step, predict_x0


def generate(backbone: DiffusionBackbone, seed: Tensor, timesteps: Sequence[int], checkpoint: bool = False) -> Tensor:
    """f_theta(x_T): DDIM with eta = 0 (Song et al., Eq. 12 with sigma = 0) from x_T over `timesteps`.

    Differentiable in the seed. With `checkpoint`, each step's activations are recomputed in the
    backward pass instead of kept, so memory stays flat in the number of steps (one step's worth)."""
    abar = backbone.schedule.abar
    z = seed
    for i, t in enumerate(timesteps):
        previous = timesteps[i + 1] if i + 1 < len(timesteps) else -1

        def step(z: Tensor, t: int = t, previous: int = previous) -> Tensor:
            return ddim_step(z, backbone.predict_noise(z, t), abar(t), abar(previous), 0.0, None)

        z = recompute(step, z, use_reentrant=False) if checkpoint and z.requires_grad else step(z)
    return z


@torch.no_grad()
def invert(backbone: DiffusionBackbone, image: Tensor, timesteps: Sequence[int]) -> Tensor:
    """DDIM inversion: the same ODE run from the image up to x_T (the cheap baseline).

    The clean image stands for the state at the lowest timestep (an error of sqrt(1 - abar_t0),
    1e-2 at t = 0 of the linear schedule); each step up uses the noise predicted at the state it
    leaves, z_next = sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps, which is exact only as the
    steps shrink: the generator does not in general return the image from this seed."""
    abar = backbone.schedule.abar
    upward = list(reversed(timesteps))
    z = image
    for t, following in pairwise(upward):
        eps = backbone.predict_noise(z, t)
        z = abar(following) ** 0.5 * predict_x0(z, eps, abar(t)) + (1.0 - abar(following)) ** 0.5 * eps
    return z


@dataclass(frozen=True)
class DescentStep:
    """What one gradient-descent iteration did, per seed: the loss 1/2 ||f(x_T) - x_0||^2 and its MSE."""

    iteration: int
    loss: Tensor  # (B,)
    mse: Tensor  # (B,), per pixel


@dataclass(frozen=True)
class DescentState:
    """Where a descent stands between two iterations: enough to continue it exactly (a checkpoint)."""

    iteration: int  # iterations done
    seed: Tensor  # (B, C, H, W)
    optimiser: dict[str, Any]  # Adam's state_dict: its step counts and moment estimates


@dataclass(frozen=True)
class Embedding:
    seed: Tensor  # (B, C, H, W): the seeds found
    reconstruction: Tensor  # (B, C, H, W): f_theta(seed)
    mse: Tensor  # (B,): per-pixel squared error of the reconstruction against the image


def reconstruct(backbone: DiffusionBackbone, seed: Tensor, image: Tensor, timesteps: Sequence[int]) -> Embedding:
    """The seed, what the generator makes of it, and how far that is from the image."""
    with torch.no_grad():
        made = generate(backbone, seed, timesteps)
    return Embedding(seed, made, (made - image).pow(2).flatten(1).mean(1))


def descend(
    backbone: DiffusionBackbone,
    image: Tensor,
    start: Tensor,
    timesteps: Sequence[int],
    iterations: int,
    lr: float,
    checkpoint: bool = True,
    callback: Callable[[DescentStep], None] | None = None,
    resume: DescentState | None = None,
    on_iteration: Callable[[Callable[[], DescentState]], None] | None = None,
) -> Embedding:
    """Eq. 12 of the journal version: min over x_T of 1/2 ||f_theta(x_T) - x_0||^2, by Adam from `start`.

    `image` and `start` are (B, C, H, W): B problems at once (several starts per image make a cloud).
    The loss is summed over the batch, so each seed gets exactly its own gradient. `resume` continues
    a descent where its state was taken (`start` is then unused), to the same result as without a
    stop; `on_iteration` gets, after each iteration, a function that takes that state (a checkpoint)."""
    seed = (resume.seed.to(start.device) if resume else start).detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([seed], lr=lr)
    if resume:
        optimiser.load_state_dict(resume.optimiser)
    for iteration in range(resume.iteration if resume else 0, iterations):
        optimiser.zero_grad(set_to_none=True)
        error = (generate(backbone, seed, timesteps, checkpoint) - image).pow(2).flatten(1)
        loss = 0.5 * error.sum(1)
        loss.sum().backward()
        optimiser.step()
        if callback is not None:
            callback(DescentStep(iteration, loss.detach(), error.detach().mean(1)))
        if on_iteration is not None:
            on_iteration(
                lambda done=iteration + 1: DescentState(done, seed.detach().clone(), deepcopy(optimiser.state_dict()))
            )
    return reconstruct(backbone, seed.detach(), image, timesteps)
