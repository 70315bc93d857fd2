"""The forward-process variance schedule and the update equations of the reverse process.

Notation as in the paper: alpha_t = 1 - beta_t, abar_t = prod_{i<=t} alpha_i, with 0-based
timesteps t = 0..T-1. Every function is pure: tensors in, tensors out.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class NoiseSchedule:
    """beta_1..beta_T, computed once in float64 (as the authors' code and diffusers do)."""

    betas: Tensor

    @classmethod
    def make(
        cls,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
    ) -> "NoiseSchedule":
        """`scaled_linear` is Stable Diffusion's (linspace of sqrt(beta), squared); `linear` is DDPM's."""
        if num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")
        if beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown beta_schedule '{beta_schedule}' (expected scaled_linear or linear)")
        return cls(betas)

    @classmethod
    def from_scheduler_config(cls, config: dict[str, Any]) -> "NoiseSchedule":
        """From a diffusers `scheduler_config.json` (what `model.path=` folders carry)."""
        return cls.make(
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
            beta_start=float(config.get("beta_start", 0.00085)),
            beta_end=float(config.get("beta_end", 0.012)),
            beta_schedule=str(config.get("beta_schedule", "scaled_linear")),
        )

    @property
    def num_train_timesteps(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas_cumprod(self) -> Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    def abar(self, t: int) -> float:
        """abar_t; abar_{t<0} = 1 (the clean image), so the last step returns the predicted x0."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])


def predict_x0(z_t: Tensor, eps: Tensor, abar_t: float) -> Tensor:
    """Eq. 1: z0_hat = (z_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)."""
    return (z_t - math.sqrt(1.0 - abar_t) * eps) / math.sqrt(abar_t)


def noise_for_x0(z_t: Tensor, x0: Tensor, abar_t: float) -> Tensor:
    """Eq. 1 solved for the noise: the eps whose z0_hat at z_t is `x0`."""
    return (z_t - math.sqrt(abar_t) * x0) / math.sqrt(1.0 - abar_t)


def ddpm_step(z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor) -> Tensor:
    """Eq. 4, the DDPM ancestral step with variance beta_t ("fixed large").

    z_{t-1} = (z_t - beta_t / sqrt(1 - abar_t) * eps) / sqrt(alpha_t) + sqrt(beta_t) * noise,
    and z_{-1} = z0_hat at t = 0. The paper prints (1 - alpha_t) / sqrt(1 - alpha_t): a typo.
    With abar_prev = abar_{t-1}, alpha_t = abar_t / abar_prev (so strided schedules work too).
    """
    if abar_prev >= 1.0:
        return predict_x0(z_t, eps, abar_t)
    alpha_t = abar_t / abar_prev
    beta_t = 1.0 - alpha_t
    mean = (z_t - beta_t / math.sqrt(1.0 - abar_t) * eps) / math.sqrt(alpha_t)
    return mean + math.sqrt(beta_t) * noise


def ddim_step(z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, eta: float, noise: Tensor | None) -> Tensor:
    """The DDIM update (Song et al., Eq. 12), as diffusers' `DDIMScheduler.step`.

    z_prev = sqrt(abar_prev) * z0_hat + sqrt(1 - abar_prev - sigma^2) * eps + sigma * noise,
    sigma = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev).
    """
    x0 = predict_x0(z_t, eps, abar_t)
    sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
    z_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
        z_prev = z_prev + sigma * noise
    return z_prev


def half_log_snr(abar: float) -> float:
    """lambda = log(alpha / sigma) = log(sqrt(abar) / sqrt(1 - abar)), DPM-Solver's time variable."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


def dpm_solver_pp_step(
    z_t: Tensor,
    x0: Tensor,
    abar_t: float,
    abar_prev: float,
    x0_before: Tensor | None = None,
    abar_before: float | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; diffusers' `DPMSolverMultistepScheduler`,
    midpoint form) from t to the next visited timestep, with data predictions x0.

    With h = lambda_prev - lambda_t: z_prev = sigma_prev / sigma_t * z_t - alpha_prev (e^-h - 1) D,
    D = x0 (first order: the DDIM step) or, given the prediction x0_before at the previous visited
    timestep (abar_before) and r = (lambda_t - lambda_before) / h, D = (1 + 1/(2r)) x0 - x0_before/(2r).
    The step to abar_prev = 1 (sigma = 0) lands on x0, first order, as diffusers' final step."""
    if abar_prev >= 1.0:
        return x0
    h = half_log_snr(abar_prev) - half_log_snr(abar_t)
    data = x0
    if x0_before is not None and abar_before is not None:
        r = (half_log_snr(abar_t) - half_log_snr(abar_before)) / h
        data = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_before
    sigma_ratio = math.sqrt((1.0 - abar_prev) / (1.0 - abar_t))
    return sigma_ratio * z_t - math.sqrt(abar_prev) * math.expm1(-h) * data


def renoise(z_prev: Tensor, abar_t: float, abar_prev: float, noise: Tensor) -> Tensor:
    """Eq. 5, self-recurrence: back from t_prev to t by the forward process.

    z_t = sqrt(alpha_t) * z_{t-1} + sqrt(beta_t) * noise, with alpha_t = abar_t / abar_prev
    (for DDPM's consecutive steps exactly alpha_t; for strided DDIM steps the product over the stride).
    """
    alpha = abar_t / abar_prev
    return math.sqrt(alpha) * z_prev + math.sqrt(1.0 - alpha) * noise
