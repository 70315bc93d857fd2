"""Reverse-process samplers: which timesteps to visit and how to step between them (Eq. 4).

Both keep the paper's self-recurrence (Eq. 5, in `fsa.diffusion.schedule.renoise`), which the
guided decoder applies between the recurrences of one timestep.
"""

from dataclasses import dataclass

from torch import Tensor

from fsa.diffusion.schedule import ddim_step, ddpm_step


@dataclass(frozen=True)
class DDPMSampler:
    """The paper's sampler: every training timestep, ancestral step with variance beta_t (Eq. 4)."""

    stochastic = True

    def timesteps(self, num_train_timesteps: int) -> list[int]:
        return list(range(num_train_timesteps - 1, -1, -1))

    def step(self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None) -> Tensor:
        assert noise is not None
        return ddpm_step(z_t, eps, abar_t, abar_prev, noise)


@dataclass(frozen=True)
class DDIMSampler:
    """DDIM over `num_steps` evenly strided timesteps ("leading" spacing, as diffusers)."""

    num_steps: int = 50
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"sampler.num_steps must be >= 1, got {self.num_steps}")
        if self.eta < 0:
            raise ValueError(f"sampler.eta must be >= 0, got {self.eta}")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def timesteps(self, num_train_timesteps: int) -> list[int]:
        if self.num_steps > num_train_timesteps:
            raise ValueError(
                f"sampler.num_steps={self.num_steps} exceeds the model's {num_train_timesteps} timesteps"
            )
        stride = num_train_timesteps // self.num_steps
        return [i * stride for i in range(self.num_steps - 1, -1, -1)]

    def step(self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None) -> Tensor:
        return ddim_step(z_t, eps, abar_t, abar_prev, self.eta, noise)


Sampler = DDPMSampler | DDIMSampler
