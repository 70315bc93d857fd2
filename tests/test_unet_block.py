"""The denoiser's own representation (extractor=unet_block) and self-guided decoding
(guidance=self_guided, Kadkhodaie et al.), on the embedded digits DDPM and tiny random models."""

import json

import pytest
import torch
from helpers import compose_config

from fsa import ASSETS_DIR
from fsa.config import validate
from fsa.data.digits import digits_images
from fsa.diffusion.backbones import build_tiny_latent_diffusion, load_pixel_diffusion
from fsa.diffusion.samplers import DDIMSampler
from fsa.errors import ConfigError, ExtractorError
from fsa.extractors.unet_block import UNetBlockExtractor, block_means, block_names, check_blocks
from fsa.guidance.self_guided import SelfGuidance, self_guided_decode


@pytest.fixture(scope="module")
def digits():
    backbone = load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), "unet")
    images, labels = digits_images("test")
    return backbone, images[:6] * 2 - 1, labels[:6]


def test_blocks_are_named_in_the_order_the_input_meets_them_and_a_wrong_name_lists_them(digits):
    backbone, _, _ = digits
    names = block_names(backbone.unet)
    assert names == [*(f"down_blocks.{i}" for i in range(3)), "mid_block", *(f"up_blocks.{i}" for i in range(3))]
    for wrong in ("middle", "up_blocks.3"):  # a misspelt block, and one this model does not have
        with pytest.raises(ExtractorError, match="its blocks: down_blocks.0, .*mid_block, .*up_blocks.2$"):
            check_blocks(backbone, [wrong])


def test_phi_is_the_noise_averaged_spatial_mean_of_the_block_output(digits):
    backbone, images, _ = digits
    extractor = UNetBlockExtractor(backbone, "down_blocks.1", timestep=250, noise_samples=3, noise_seed=7)
    phi = extractor(images[:2].expand(-1, 3, -1, -1))  # normalised input = the image in [-1, 1]
    # By hand: noise each image with the extractor's 3 fixed draws, run the whole UNet, read the block.
    abar = backbone.schedule.abar(250)
    draws = torch.randn((3, 1, 16, 16), generator=torch.Generator().manual_seed(7))
    expected = []
    for image in images[:2]:
        noisy = abar**0.5 * image[None] + (1 - abar) ** 0.5 * draws
        seen: list[torch.Tensor] = []
        handle = backbone.unet.down_blocks[1].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o[0]))
        with torch.no_grad():
            backbone.predict_noise(noisy, 250)
        handle.remove()
        expected.append(seen[0].mean(dim=(2, 3)).mean(dim=0))
    torch.testing.assert_close(phi, torch.stack(expected), rtol=1e-5, atol=1e-6)
    assert torch.equal(extractor(images[:2].expand(-1, 3, -1, -1)), phi)  # fixed draws: deterministic


def test_an_encoder_block_never_runs_the_decoder(digits):
    backbone, images, _ = digits
    calls = []
    handle = backbone.unet.conv_out.register_forward_hook(lambda *_: calls.append(1))
    try:
        block_means(backbone, images[:1], 10, ["down_blocks.1", "mid_block"])
        assert calls == []
        backbone.predict_noise(images[:1], 10)
        assert calls == [1]
    finally:
        handle.remove()


def test_phi_of_a_latent_model_reads_the_vae_latent_and_passes_gradients_to_the_image():
    backbone = build_tiny_latent_diffusion(num_train_timesteps=1000)
    extractor = UNetBlockExtractor(backbone, "mid_block", timestep=500, noise_samples=2)
    assert extractor.input_size == backbone.latent_shape[1] * backbone.vae_factor
    image = (torch.rand(2, 3, extractor.input_size, extractor.input_size) * 2 - 1).requires_grad_()
    phi = extractor(image)
    assert phi.shape == (2, extractor.feature_dim)
    (grad,) = torch.autograd.grad(phi.pow(2).sum(), image)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "override,message",
    [("extractor.timestep=1000", "timestep"), ("extractor.noise_samples=0", "noise_samples")],
)
def test_bad_extractor_settings_are_refused(override, message):
    from fsa.runner import build

    with pytest.raises(ExtractorError, match=message):
        build(compose_config(["extractor=unet_block", override]).extractor)


def test_matching_moves_only_unconverged_samples_and_lowers_their_distance(digits):
    backbone, images, _ = digits
    extractor = UNetBlockExtractor(backbone, "mid_block", timestep=300)
    t = 300
    target = extractor.represent(images[:2], t)
    abar = backbone.schedule.abar(t)
    z = abar**0.5 * images[2:4] + (1 - abar) ** 0.5 * torch.randn(
        2, 1, 16, 16, generator=torch.Generator().manual_seed(1)
    )
    represent = lambda z_in: extractor.means(z_in, t)  # noqa: E731
    _, matching = SelfGuidance(lr=0.02, max_iterations=8, tolerance=0.0).match(represent, z, target)
    assert (matching.iterations == 8).all() and (matching.end < matching.start / 2).all()
    # A sample already within the tolerance stays where it is.
    tolerance = float(matching.start[0]) * 1.01
    kept, partial = SelfGuidance(lr=0.02, max_iterations=8, tolerance=tolerance).match(represent, z, target)
    assert int(partial.iterations[0]) == 0 and torch.equal(kept[0], z[0])
    unmoved, none = SelfGuidance(max_iterations=0).match(represent, z, target)
    assert torch.equal(unmoved, z) and (none.iterations == 0).all()


def test_self_guided_decoding_resumed_from_any_step_ends_exactly_as_without_a_stop(digits):
    backbone, images, _ = digits
    extractor = UNetBlockExtractor(backbone, "mid_block", timestep=100, noise_samples=2)
    sampler, guidance = DDIMSampler(6, eta=1.0), SelfGuidance(max_iterations=3)
    target_latent = images[:1]
    target = extractor(target_latent.expand(-1, 3, -1, -1))

    def decode(**kwargs):
        fresh = [torch.Generator().manual_seed(s) for s in (3, 4)]
        return self_guided_decode(backbone, sampler, guidance, extractor, target, target_latent, fresh, **kwargs)

    states, matchings = [], []
    whole = decode(on_iteration=lambda snapshot: states.append(snapshot()), on_matching=lambda *m: matchings.append(m))
    assert [s for s, _, _ in matchings] == list(range(6)) and whole.guided_iterations == 6
    for state in (states[0], states[3]):
        resumed = decode(resume=state)
        assert torch.equal(resumed.final_image, whole.final_image)
        assert torch.equal(resumed.best_distance, whole.best_distance)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["guidance=self_guided"], "needs extractor=unet_block"),
        (["guidance=self_guided", "extractor=unet_block", "guidance.max_iterations=-1"], "max_iterations"),
    ],
)
def test_bad_self_guided_settings_are_refused_before_any_model_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(overrides))
        from fsa.runner import build

        build(compose_config(overrides).guidance)


SELF_GUIDED = [  # CI size: 3 digits x 3 seeds, DDIM 20, about 20 s here; printed_sign does not apply
    "extractor=unet_block",
    "guidance=self_guided",
    "sampler.num_steps=20",
    "max_targets=3",
    "logger.mode=disabled",
    "progress=false",
    "device=cpu",
]


@pytest.mark.slow
def test_self_guided_reconstructions_keep_the_class_and_beat_unguided_samples(tmp_path):
    from fsa.runner import run

    summary = run(compose_config(SELF_GUIDED, tmp_path), tmp_path)
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "complete"
    assert summary["guided_iterations_per_sample"] == 20
    assert list(summary["baselines"]) == ["unguided"]  # printed_sign (the default's) is skipped: no Eq. 3
    unguided = summary["baselines"]["unguided"]
    assert summary["mean_best_distance"] < unguided["mean_best_distance"] / 5
    proof = summary["proof"]
    assert proof["final_oracle_agreement"]["guided"] >= 0.75 > 0.5 > proof["final_oracle_agreement"]["unguided"]
