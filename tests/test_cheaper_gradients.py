"""The cheaper gradients beside the paper's (guidance.gradient=z0_hat, guidance.backward_steps): each
checked against its definition, step by step, on tiny random models."""

import pytest
import torch
from helpers import tiny_latent_setup

from fsa.diffusion.samplers import DDIMSampler
from fsa.diffusion.schedule import predict_x0
from fsa.guidance.decoder import guided_decode, initial_noise
from fsa.guidance.feature_guidance import FeatureGuidance, normalise_gradient, squared_distance

ONE_STEP = DDIMSampler(1)  # one visited timestep; its z_prev is the predicted x0 of the guided noise


@pytest.fixture(scope="module")
def setup():
    return tiny_latent_setup()


def one_iteration(setup, **options):
    backbone, extractor, target = setup
    guidance = FeatureGuidance(early_steps=0, k=1, post_check=False, **options)
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    return guided_decode(backbone, ONE_STEP, guidance, extractor, target, generators), guidance


def by_hand(setup):
    """z_T, t, abar_t, eps_theta(z_T, t) and the distance of a latent x0, as Algorithm 1 defines them."""
    backbone, extractor, target = setup
    t = ONE_STEP.timesteps(1000)[0]
    z = initial_noise([torch.Generator().manual_seed(s) for s in (0, 1)], backbone.latent_shape, torch.device("cpu"))
    with torch.no_grad():
        eps = backbone.predict_noise(z, t)

    def distance(x0: torch.Tensor) -> torch.Tensor:
        return squared_distance(extractor(extractor.prepare_generated(backbone.decode(x0))), target)

    return z, backbone.schedule.abar(t), eps, distance


def test_the_z0_hat_gradient_is_taken_at_z0_hat_with_the_noise_held_fixed(setup):
    result, guidance = one_iteration(setup, gradient="z0_hat")
    z, abar_t, eps, distance = by_hand(setup)
    x0 = predict_x0(z, eps, abar_t).requires_grad_()
    (grad,) = torch.autograd.grad(distance(x0).sum(), x0)
    eps_guided, _ = guidance.guide(eps, grad)  # Eq. 3 with this g
    expected = setup[0].decode(predict_x0(z, eps_guided, abar_t))
    torch.testing.assert_close(result.final_image, expected, rtol=1e-4, atol=1e-4)
    # ...which is not the paper's gradient: the UNet's Jacobian matters.
    paper, _ = one_iteration(setup)
    assert (paper.final_image - result.final_image).abs().max() > 1e-3


def test_the_z0_hat_gradient_runs_no_backward_pass_through_the_unet(setup):
    first_layer = setup[0].unet.conv_in  # the whole UNet's output is not a tensor, which hooks need
    calls = []
    hook = first_layer.register_full_backward_hook(lambda *_: calls.append(1))
    try:
        one_iteration(setup, gradient="z0_hat", backward_steps=2)
        assert calls == []
        one_iteration(setup)  # the paper's: one backward pass per iteration
        assert len(calls) == 1
    finally:
        hook.remove()


@pytest.mark.parametrize("direction", ["descend", "ascend"])
def test_backward_guidance_steps_on_z0_hat_and_returns_the_noise_of_the_result(setup, direction):
    """descend: the authors' sign; ascend: the paper's printed sign, which flips these steps too."""
    steps, lr = 3, 0.05
    result, guidance = one_iteration(setup, backward_steps=steps, backward_lr=lr, direction=direction)
    z, abar_t, eps, distance = by_hand(setup)
    z_in = z.clone().requires_grad_()
    eps_in = setup[0].predict_noise(z_in, ONE_STEP.timesteps(1000)[0])
    (grad,) = torch.autograd.grad(distance(predict_x0(z_in, eps_in, abar_t)).sum(), z_in)
    eps_guided, _ = guidance.guide(eps, grad)  # the paper's Eq. 3 first
    start = predict_x0(z, eps_guided, abar_t)
    sign = 1.0 if direction == "descend" else -1.0
    delta = torch.zeros_like(start)
    for _ in range(steps):  # delta <- delta -+ lr ||z0'|| g / ||g||
        delta.requires_grad_()
        (grad,) = torch.autograd.grad(distance(start + delta).sum(), delta)
        delta = (delta - sign * lr * normalise_gradient(grad, start)[0]).detach()
    # One DDIM step to t = -1 returns the z0_hat of the final noise: z0' + delta.
    torch.testing.assert_close(result.final_image, setup[0].decode(start + delta), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # the steps lowered (descend) or raised (ascend) the distance
        assert (sign * (distance(start) - distance(start + delta)) > 0).all()
