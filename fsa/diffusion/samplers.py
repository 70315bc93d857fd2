"""Reverse-process samplers: which timesteps to visit and how to step between them.

All keep the paper's self-recurrence (Eq. 5, `fsa.diffusion.schedule.renoise`), which the
guided decoder applies between the recurrences of one timestep. A multistep sampler (DPM-Solver++)
also takes the data prediction of the previous visited timestep (`History`), which the decoder keeps:
every recurrence at t steps from the same history.
"""

from dataclasses import dataclass

from torch import Tensor

from fsa.diffusion.schedule import ddim_step, ddpm_step, dpm_solver_pp_step, predict_x0
from fsa.errors import ConfigError

History = tuple[Tensor, float]
"""A multistep sampler's memory: the data prediction x0 at the previous visited timestep, and its abar."""


def strided_timesteps(num_train_timesteps: int, num_steps: int | None) -> list[int]:
    """num_steps evenly strided timesteps from high to low ("leading" spacing, as diffusers); None: all."""
    if num_steps is None:
        return list(range(num_train_timesteps - 1, -1, -1))
    if not 1 <= num_steps <= num_train_timesteps:
        raise ConfigError(f"sampler.num_steps must be in 1..{num_train_timesteps} for this model, got {num_steps}")
    stride = num_train_timesteps // num_steps
    return [i * stride for i in range(num_steps - 1, -1, -1)]


@dataclass(frozen=True)
class StridedSampler:
    """What every sampler shares: `num_steps` evenly strided timesteps (None: all of them)."""

    num_steps: int | None = None
    multistep = False  # whether `step` needs the previous timestep's x0 (`History`)

    def __post_init__(self) -> None:
        if self.num_steps is not None and self.num_steps < 1:
            raise ConfigError(f"sampler.num_steps must be >= 1, got {self.num_steps}")

    def timesteps(self, num_train_timesteps: int) -> list[int]:
        return strided_timesteps(num_train_timesteps, self.num_steps)


@dataclass(frozen=True)
class DDPMSampler(StridedSampler):
    """The paper's sampler: ancestral step with variance beta_t (Eq. 4), every timestep by default."""

    stochastic = True

    def step(
        self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None, history: History | None
    ) -> Tensor:
        if noise is None:
            raise ValueError("the DDPM step needs noise")
        return ddpm_step(z_t, eps, abar_t, abar_prev, noise)


@dataclass(frozen=True)
class DDIMSampler(StridedSampler):
    """DDIM (Song et al.) over `num_steps` strided timesteps; eta = 0 is deterministic."""

    num_steps: int | None = 50
    eta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta < 0:
            raise ConfigError(f"sampler.eta must be >= 0, got {self.eta}")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(
        self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None, history: History | None
    ) -> Tensor:
        return ddim_step(z_t, eps, abar_t, abar_prev, self.eta, noise)


@dataclass(frozen=True)
class DPMSolverPPSampler(StridedSampler):
    """DPM-Solver++(2M) (Lu et al. 2022) over `num_steps` strided timesteps: deterministic, second order
    from the second step on (the first and the last step are first order, as diffusers')."""

    num_steps: int | None = 20
    stochastic = False
    multistep = True

    def step(
        self, z_t: Tensor, eps: Tensor, abar_t: float, abar_prev: float, noise: Tensor | None, history: History | None
    ) -> Tensor:
        x0_before, abar_before = history if history is not None else (None, None)
        return dpm_solver_pp_step(z_t, predict_x0(z_t, eps, abar_t), abar_t, abar_prev, x0_before, abar_before)


Sampler = DDPMSampler | DDIMSampler | DPMSolverPPSampler
