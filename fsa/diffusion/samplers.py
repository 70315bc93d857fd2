"""Reverse-process samplers: which timesteps to visit and how to step between them.

Both keep the paper's self-recurrence (Eq. 5, `fsa.diffusion.schedule.renoise`), which the
guided decoder applies between the recurrences of one timestep.
"""

from dataclasses import dataclass

from torch import Tensor

from fsa.diffusion.schedule import ddim_step, ddpm_step
from fsa.errors import ConfigError


def strided_timesteps(num_train_timesteps: int, num_steps: int | None) -> list[int]:
    """num_steps evenly strided timesteps from high to low ("leading" spacing, as diffusers); None: all."""
    if num_steps is None:
        return list(range(num_train_timesteps - 1, -1, -1))
    if not 1 <= num_steps <= num_train_timesteps:
        raise ConfigError(f"sampler.num_steps must be in 1..{num_train_timesteps} for this model, got {num_steps}")
    stride = num_train_timesteps // num_steps
    return [i * stride for i in range(num_steps - 1, -1, -1)]


@dataclass(frozen=True)
class DDPMSampler:
    """The paper's sampler: ancestral step with variance beta_t (Eq. 4), every timestep by default."""

    num_steps: int | None = None
    stochastic = True

    def __post_init__(self) -> None:
        if self.num_steps is not None and self.num_steps < 1:
            raise ConfigError(f"sampler.num_steps must be >= 1, got {self.num_steps}")

    def timesteps(self, num_train_timesteps: int) -> list[int]:
        return strided_timesteps(num_train_timesteps, self.num_steps)

    def step(self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None) -> Tensor:
        if noise is None:
            raise ValueError("the DDPM step needs noise")
        return ddpm_step(z_t, eps, abar_t, abar_prev, noise)


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM (Song et al.) over `num_steps` strided timesteps; eta = 0 is deterministic."""

    num_steps: int = 50
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ConfigError(f"sampler.num_steps must be >= 1, got {self.num_steps}")
        if self.eta < 0:
            raise ConfigError(f"sampler.eta must be >= 0, got {self.eta}")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def timesteps(self, num_train_timesteps: int) -> list[int]:
        return strided_timesteps(num_train_timesteps, self.num_steps)

    def step(self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None) -> Tensor:
        return ddim_step(z_t, eps, abar_t, abar_prev, self.eta, noise)


Sampler = DDPMSampler | DDIMSampler
