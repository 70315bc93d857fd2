"""Virtual save, gradient normalisation and clipping, Eq. 3 and the K schedule."""

import pytest
import torch
import torch.nn.functional as F

from fsa.diffusion.samplers import DDPMSampler
from fsa.errors import ConfigError
from fsa.extractors.virtual_save import ste_round, virtual_save
from fsa.guidance.feature_guidance import FeatureGuidance, clip_gradient, normalise_gradient, squared_distance


def test_ste_round_forward_rounds_backward_is_identity():
    x = (torch.randn(4, 3, 5, 5) * 100).requires_grad_()
    y = ste_round(x)
    assert torch.equal(y, torch.round(x.detach()))
    upstream = torch.randn_like(x)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_virtual_save_equals_saving_and_reading_an_8bit_image():
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = virtual_save(image, 16, mean, std)
    pixels = torch.round((image + 1) / 2 * 255)  # what a PNG holds (no resize at the same size)
    expected = (pixels / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


def test_virtual_save_resizes_bicubic_without_antialias_and_without_clamp():
    image = torch.rand(1, 3, 32, 32) * 3 - 1.5  # beyond [-1, 1]: no clamp anywhere
    out = virtual_save(image, 8, (0.0,) * 3, (1.0,) * 3)
    x = torch.round((image + 1) / 2 * 255)
    expected = torch.round(F.interpolate(x, size=(8, 8), mode="bicubic", antialias=False)) / 255
    torch.testing.assert_close(out, expected)
    assert out.max() > 1.0 and out.min() < 0.0


def test_virtual_save_gradient_is_that_of_the_unrounded_path():
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    virtual_save(image, 8, (0.1,) * 3, (0.5,) * 3).sum().backward()
    reference = image.detach().clone().requires_grad_()
    x = (reference + 1) / 2 * 255
    ((F.interpolate(x, size=(8, 8), mode="bicubic") / 255 - 0.1) / 0.5).sum().backward()
    torch.testing.assert_close(image.grad, reference.grad)


def test_normalised_gradient_has_the_norm_of_eps_per_sample():
    eps, grad = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8) * torch.tensor([1e-6, 1.0, 1e4]).view(3, 1, 1, 1)
    g_hat, grad_norm = normalise_gradient(grad, eps)
    torch.testing.assert_close(g_hat.flatten(1).norm(dim=1), eps.flatten(1).norm(dim=1))
    torch.testing.assert_close(grad_norm, grad.flatten(1).norm(dim=1))


def test_zero_or_nonfinite_gradient_gives_no_guidance_and_no_nan():
    eps = torch.randn(3, 4, 8, 8)
    grad = torch.randn(3, 4, 8, 8)
    grad[0] = 0
    grad[1, 0, 0, 0] = float("nan")
    guidance = FeatureGuidance()
    eps_guided, stats = guidance.guide(eps, grad)
    assert torch.isfinite(eps_guided).all()
    torch.testing.assert_close(eps_guided[:2], eps[:2])
    assert not torch.equal(eps_guided[2], eps[2])
    assert torch.isfinite(stats.normalised_std).all()


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_clipping_bounds(mode):
    g = torch.randn(2, 4, 16, 16) + torch.tensor([3.0, -1.0]).view(2, 1, 1, 1)
    g[0, 0, 0, 0], g[1, 0, 0, 0] = 100.0, -100.0
    clipped, fraction = clip_gradient(g, 2.0, mode)
    for i in range(2):
        flat = g[i].flatten()
        centre = flat.mean() if mode == "mean" else 0.0
        low, high = centre - 2.0 * flat.std(), centre + 2.0 * flat.std()
        assert clipped[i].min() >= low - 1e-6 and clipped[i].max() <= high + 1e-6
        inside = (flat >= low) & (flat <= high)
        assert torch.equal(clipped[i].flatten()[inside], flat[inside])
        assert fraction[i] == pytest.approx((~inside).float().mean().item())


def test_clipping_off():
    g = torch.randn(2, 10)
    for mode, c in (("off", 3.0), ("mean", 0.0)):
        clipped, fraction = clip_gradient(g, c, mode)
        assert torch.equal(clipped, g) and fraction.sum() == 0


def test_eq3_sign_descends_the_distance():
    """Along eps' = eps + w_g g_hat, z0_hat moves against the gradient of l: l goes down."""
    target = torch.randn(1, 16)
    z = torch.randn(2, 16, requires_grad=True)
    eps = torch.randn(2, 16)
    sqrt_1m_abar, sqrt_abar = 0.6, 0.8

    def loss(e: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
        return squared_distance((zz - sqrt_1m_abar * e) / sqrt_abar, target)

    (grad,) = torch.autograd.grad(loss(eps, z).sum(), z)
    before = loss(eps, z.detach())
    for direction, expect_lower in (("descend", True), ("ascend", False)):
        guidance = FeatureGuidance(w_g=0.05, clip_mode="off", direction=direction)
        eps_guided, _ = guidance.guide(eps, grad)
        after = loss(eps_guided, z.detach())
        assert bool((after < before).all()) is expect_lower


def test_paper_k_schedule_counts_12960_iterations():
    guidance = FeatureGuidance()  # the paper's defaults: K = 1000 for 5 steps, then 8
    steps = len(DDPMSampler().timesteps(1000))
    assert guidance.total_iterations(steps) == 5 * 1000 + 995 * 8 == 12_960
    assert [guidance.recurrences(i, steps) for i in (0, 4, 5, 999)] == [1000, 1000, 8, 8]


def test_late_steps_take_late_k_and_early_steps_win_where_they_overlap():
    guidance = FeatureGuidance(early_steps=2, early_k=5, k=1, late_steps=3, late_k=4)
    assert [guidance.recurrences(i, 6) for i in range(6)] == [5, 5, 1, 4, 4, 4]
    assert guidance.total_iterations(6) == 5 + 5 + 1 + 3 * 4
    assert [guidance.recurrences(i, 3) for i in range(3)] == [5, 5, 4]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(k=0),
        dict(early_k=0),
        dict(late_k=0),
        dict(early_steps=-1),
        dict(late_steps=-1),
        dict(clip_mode="sym"),
        dict(w_g=-1.0),
        dict(direction="up"),
        dict(post_check_every=0),
        dict(gradient="x0"),
        dict(backward_steps=-1),
        dict(backward_lr=0.0),
    ],
)
def test_invalid_guidance_values(kwargs):
    with pytest.raises(ConfigError):
        FeatureGuidance(**kwargs)
