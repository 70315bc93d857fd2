"""Eq. 1, 4, 5, the DDIM step and DPM-Solver++ against diffusers' scheduler quantities, on random tensors."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from fsa.diffusion.samplers import DDIMSampler, DDPMSampler, DPMSolverPPSampler, strided_timesteps
from fsa.diffusion.schedule import NoiseSchedule, ddpm_step, predict_x0, renoise
from fsa.errors import ConfigError

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)


@pytest.fixture
def schedule() -> NoiseSchedule:
    return NoiseSchedule.make(1000, 0.00085, 0.012, "scaled_linear")


def test_schedule_matches_diffusers(schedule):
    reference = DDPMScheduler(num_train_timesteps=1000, **SD)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), reference.alphas_cumprod, rtol=1e-6, atol=1e-7)
    assert schedule.abar(-1) == 1.0


@pytest.mark.parametrize("t", [999, 500, 1])
def test_eq1_predict_x0_inverts_forward_process(schedule, t):
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    z_t = DDPMScheduler(**SD).add_noise(x0, eps, torch.tensor([t]))
    torch.testing.assert_close(predict_x0(z_t, eps, schedule.abar(t)), x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", [999, 400, 3, 0])
def test_eq4_ddpm_step_matches_diffusers_fixed_large(schedule, t):
    reference = DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_large", **SD)
    reference.set_timesteps(1000)
    z_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    expected = reference.step(eps, t, z_t, generator=g).prev_sample
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = ddpm_step(z_t, eps, schedule.abar(t), schedule.abar(t - 1), noise)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_eq4_is_the_paper_formula(schedule):
    t = 600
    z_t, eps, noise = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    beta, abar = float(schedule.betas[t]), schedule.abar(t)
    expected = (z_t - beta / math.sqrt(1 - abar) * eps) / math.sqrt(1 - beta) + math.sqrt(beta) * noise
    torch.testing.assert_close(ddpm_step(z_t, eps, abar, schedule.abar(t - 1), noise), expected)


def test_eq5_renoise_is_one_forward_step(schedule):
    t = 321
    z_prev, noise = torch.randn(3, 4), torch.randn(3, 4)
    beta = float(schedule.betas[t])
    expected = math.sqrt(1 - beta) * z_prev + math.sqrt(beta) * noise
    torch.testing.assert_close(renoise(z_prev, schedule.abar(t), schedule.abar(t - 1), noise), expected)


def test_eq5_renoise_keeps_unit_variance(schedule):
    z = torch.randn(200_000)
    out = renoise(z, schedule.abar(500), schedule.abar(480), torch.randn(200_000))
    assert out.var().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_matches_diffusers(schedule, eta):
    num_steps = 20
    reference = DDIMScheduler(num_train_timesteps=1000, set_alpha_to_one=True, **SD)
    reference.set_timesteps(num_steps)
    ours = DDIMSampler(num_steps=num_steps, eta=eta)
    timesteps = ours.timesteps(1000)
    assert timesteps == reference.timesteps.tolist()
    for i, t in enumerate(timesteps):
        z_t, eps, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        expected = reference.step(eps, t, z_t, eta=eta, variance_noise=noise).prev_sample
        got = ours.step(z_t, eps, schedule.abar(t), schedule.abar(t_prev), noise, None)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_timesteps():
    assert DDPMSampler().timesteps(1000) == list(range(999, -1, -1))
    assert strided_timesteps(1000, 4) == [750, 500, 250, 0]
    with pytest.raises(ConfigError, match="num_steps"):
        DDIMSampler(num_steps=0)
    with pytest.raises(ConfigError, match="num_steps"):
        DDIMSampler(num_steps=2000).timesteps(1000)


@pytest.mark.parametrize("num_steps", [5, 20])
def test_dpm_solver_pp_trajectory_matches_diffusers(schedule, num_steps):
    """DPM-Solver++(2M) over our strided timesteps, its history kept as the decoder keeps it, against
    diffusers' multistep scheduler given the same timesteps; eps a fixed smooth function of z."""
    reference = DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        solver_order=2,
        algorithm_type="dpmsolver++",
        final_sigmas_type="zero",
    )
    ours = DPMSolverPPSampler(num_steps=num_steps)
    timesteps = ours.timesteps(1000)
    reference.set_timesteps(timesteps=timesteps)
    assert reference.timesteps.tolist() == timesteps

    def eps_of(z: torch.Tensor) -> torch.Tensor:
        return 0.3 * z + 0.2 * torch.sin(3 * z)

    z = expected = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    history = None
    for i, t in enumerate(timesteps):
        abar_t, abar_prev = schedule.abar(t), schedule.abar(timesteps[i + 1] if i + 1 < len(timesteps) else -1)
        eps = eps_of(z)
        z, history = ours.step(z, eps, abar_t, abar_prev, None, history), (predict_x0(z, eps, abar_t), abar_t)
        expected = reference.step(eps_of(expected), t, expected).prev_sample
        torch.testing.assert_close(z, expected, rtol=1e-4, atol=1e-4)


def test_dpm_solver_pp_first_order_is_the_ddim_step(schedule):
    """Without history (the first step) DPM-Solver++ is DDIM with eta = 0 (Lu et al., Sec. 4)."""
    z_t, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    abar_t, abar_prev = schedule.abar(600), schedule.abar(550)
    got = DPMSolverPPSampler().step(z_t, eps, abar_t, abar_prev, None, None)
    torch.testing.assert_close(got, DDIMSampler().step(z_t, eps, abar_t, abar_prev, None, None), rtol=1e-5, atol=1e-5)
