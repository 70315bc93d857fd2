"""Speed options (fsa/speed.py): each gives the plain path's result within its stated tolerance."""

import copy

import pytest
import torch
import yaml
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from helpers import SmallConvExtractor, compose_config, tiny_pixel_unet

from fsa.diffusion.backbones import PixelDiffusion, build_tiny_latent_diffusion
from fsa.diffusion.samplers import DDIMSampler
from fsa.diffusion.schedule import NoiseSchedule
from fsa.guidance.decoder import POST, PRE, guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance
from fsa.job import run
from fsa.speed import SpeedOptions, apply_speed_options

GUIDANCE = FeatureGuidance(early_steps=1, early_k=3, k=2)  # 9 guided iterations over DDIM 4


def decode(backbone, extractor, target, guidance=GUIDANCE, steps=4, seeds=(0, 1), callback=None):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    sampler = DDIMSampler(num_steps=steps)
    return guided_decode(backbone, sampler, guidance, extractor, target, generators, callback=callback)


@pytest.fixture(scope="module")
def plain():
    """Tiny latent model and conv extractor, and their decode with every option off."""
    backbone, extractor = build_tiny_latent_diffusion(num_train_timesteps=1000), SmallConvExtractor()
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    target = extractor(extractor.prepare_generated(image))
    return backbone, extractor, target, decode(backbone, extractor, target)


def with_options(plain, **options):
    backbone, extractor, target, _ = plain
    backbone, extractor = copy.deepcopy(backbone), copy.deepcopy(extractor)
    apply_speed_options(backbone, extractor, SpeedOptions(**options))
    return decode(backbone, extractor, target)


def test_activation_checkpointing_is_bit_identical(plain):
    result = with_options(plain, vae_activation_checkpointing=True, unet_activation_checkpointing=True)
    assert torch.equal(result.final_image, plain[3].final_image)
    assert torch.equal(result.best_distance, plain[3].best_distance)


@pytest.mark.parametrize(
    "options",
    [
        {"channels_last": True},
        {"attention": "eager"},
        {"channels_last": True, "attention": "eager", "vae_activation_checkpointing": True},
    ],
)
def test_fast_kernels_match_within_rounding(plain, options):
    backbone, extractor, target, _ = plain
    expected = first_iteration(backbone, extractor, target)
    backbone, extractor = copy.deepcopy(backbone), copy.deepcopy(extractor)
    apply_speed_options(backbone, extractor, SpeedOptions(**options))
    # Measured here: 3e-5 relative in the distance, 8e-5 of the gradient's norm, 6e-5 in pixels.
    assert_same_iteration(first_iteration(backbone, extractor, target), expected, distance=1e-4, gradient=1e-3)


def test_options_reach_the_networks(plain):
    backbone, extractor = copy.deepcopy(plain[0]), copy.deepcopy(plain[1])
    attention = [m for m in backbone.modules() if isinstance(m, Attention)]
    options = SpeedOptions(attention="eager", channels_last=True, vae_activation_checkpointing=True)
    apply_speed_options(backbone, extractor, options)
    assert attention and all(type(m.processor) is AttnProcessor for m in attention)
    assert backbone.vae.decoder.gradient_checkpointing
    assert not any(getattr(m, "gradient_checkpointing", False) for m in backbone.unet.modules())
    weights = [p for p in [*backbone.parameters(), *extractor.parameters()] if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    apply_speed_options(backbone, extractor, SpeedOptions())
    assert all(type(m.processor) is AttnProcessor2_0 for m in attention)
    assert options.enabled() == ["channels_last=True", "attention=eager", "vae_activation_checkpointing=True"]


def small_pixel_model() -> PixelDiffusion:
    return PixelDiffusion(tiny_pixel_unet(channels=3, size=16, widths=(8, 16)), NoiseSchedule.make())


@pytest.mark.slow
def test_compile_matches_the_plain_path():
    """torch.compile of the UNet and the extractor, forward and backward (about 40 s of compiling on 2 cores)."""
    backbone, extractor = small_pixel_model(), SmallConvExtractor()
    target = torch.randn(1, extractor.feature_dim, generator=torch.Generator().manual_seed(3))
    guidance = FeatureGuidance(early_steps=0, k=2)
    expected = decode(backbone, extractor, target, guidance, steps=2, seeds=(0,))
    apply_speed_options(backbone, extractor, SpeedOptions(compile=True))
    assert backbone.unet._compiled_call_impl is not None and extractor._compiled_call_impl is not None
    result = decode(backbone, extractor, target, guidance, steps=2, seeds=(0,))
    torch.testing.assert_close(result.final_image, expected.final_image, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(result.best_distance, expected.best_distance, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("every,posts", [(1, [0, 1, 2, 3, 4]), (2, [1, 3, 4]), (10, [4])])
def test_post_check_every_thins_the_post_check_and_keeps_the_last(plain, every, posts):
    backbone, extractor, target, _ = plain
    phases: list[tuple[int, int, str]] = []
    guidance = FeatureGuidance(early_steps=0, k=5, post_check_every=every)
    decode(backbone, extractor, target, guidance, steps=2, seeds=(0,), callback=lambda e: phases.append(e))
    for step in (0, 1):
        assert [e.k for e in phases if e.phase == POST and e.step == step] == posts


def test_run_with_speed_options_end_to_end(tmp_path):
    options = ["speed.channels_last=true", "speed.attention=eager", "speed.vae_activation_checkpointing=true"]
    cfg = compose_config(["debug=tiny", "logger.mode=disabled", *options], tmp_path)
    summary = run(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())["speed"]
    assert {k: v for k, v in saved.items() if k != "_target_"} == {
        "channels_last": True,
        "compile": False,
        "attention": "eager",
        "vae_activation_checkpointing": True,
        "unet_activation_checkpointing": False,
    }
    assert summary["samples"] and all(s["best_distance"] < float("inf") for s in summary["samples"])


def test_fast_preset_composes_with_bf16_and_every_fast_option():
    cfg = compose_config(["speed=fast"])
    assert cfg.dtype == "bfloat16" and cfg.speed.channels_last and cfg.speed.compile
    assert cfg.speed.vae_activation_checkpointing and cfg.speed.attention == "sdpa"
    assert compose_config(["speed=fast", "dtype=float32"]).dtype == "float32"  # the command line still wins


def first_iteration(backbone, extractor, target) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One guided iteration (DDIM 1 step, K = 1): the pre-guidance distance, the normalised gradient and
    the image it leads to. One iteration, because later ones amplify float-order differences: the
    virtual save rounds to 8 bits and Eq. 3 adds a gradient as long as eps itself (w_g = 4). Over 9
    iterations, channels_last alone moved the final image by 0.06 on this machine's CPU (and by less
    than 0.02 on another's), while after one iteration the gradient differs by 1e-4 of its norm."""
    evaluations = []
    guidance = FeatureGuidance(early_steps=0, k=1)
    result = decode(backbone, extractor, target, guidance, steps=1, callback=evaluations.append)
    pre = next(e for e in evaluations if e.phase == PRE)
    return pre.distance, pre.stats.normalised, result.final_image


def assert_same_iteration(got, expected, distance: float, gradient: float, image: float | None = None) -> None:
    """Relative tolerance of the distance and of the gradient (by its norm); absolute one of the image."""
    torch.testing.assert_close(got[0], expected[0], rtol=distance, atol=0)
    assert float((got[1] - expected[1]).norm() / expected[1].norm()) < gradient
    torch.testing.assert_close(got[2], expected[2], rtol=0, atol=10 * gradient if image is None else image)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fast_options_on_cuda_match_the_plain_cuda_path(plain, monkeypatch):
    """speed=fast without bf16 (compared separately): channels_last + compile + SDPA + checkpointing on a GPU.

    Both paths in full fp32. With cuDNN's default TF32 convolutions (chosen differently per memory
    format and by the compiler) the gradient differed by 4 % of its norm on an H200 (2026-12-04), with
    the distance within tolerance; TF32 keeps 10 mantissa bits. Not yet run on a GPU with TF32 off."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    backbone, extractor, target, _ = plain
    cuda = torch.device("cuda")
    backbone, extractor, target = copy.deepcopy(backbone).to(cuda), copy.deepcopy(extractor).to(cuda), target.to(cuda)
    expected = first_iteration(backbone, extractor, target)
    apply_speed_options(
        backbone, extractor, SpeedOptions(channels_last=True, compile=True, vae_activation_checkpointing=True)
    )
    assert_same_iteration(first_iteration(backbone, extractor, target), expected, distance=5e-3, gradient=1e-2)
