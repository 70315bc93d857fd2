"""Backbones load through the real code paths from local folders (tiny random models saved first)."""

import pytest
import torch
from diffusers import DDPMScheduler
from helpers import tiny_pixel_unet

from fsa.diffusion.backbones import (
    CLIP_EOT,
    CLIP_SOT,
    empty_prompt_embedding,
    load_pixel_diffusion,
    load_stable_diffusion,
    tiny_latent_components,
)
from fsa.errors import WeightsUnavailableError


def test_stable_diffusion_layout_round_trips_through_a_local_folder(tmp_path):
    unet, vae, text_encoder = tiny_latent_components(seed=3)
    unet.save_pretrained(tmp_path / "unet")
    vae.save_pretrained(tmp_path / "vae")
    text_encoder.save_pretrained(tmp_path / "text_encoder")
    DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").save_pretrained(
        tmp_path / "scheduler"
    )
    model = load_stable_diffusion(str(tmp_path))
    assert model.latent_shape == (4, 8, 8) and model.vae_factor == 8
    assert model.scaling_factor == pytest.approx(0.18215)
    assert model.schedule.num_train_timesteps == 1000
    assert not any(p.requires_grad for p in model.parameters())
    z = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        cond = empty_prompt_embedding(text_encoder).expand(2, -1, -1)
        expected_eps = unet(z, torch.tensor([10, 10]), encoder_hidden_states=cond).sample
        torch.testing.assert_close(model.predict_noise(z, 10), expected_eps, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.decode(z), vae.decode(z / 0.18215).sample, rtol=1e-4, atol=1e-5)
        assert model.decode(z).shape == (2, 3, 64, 64)


def test_empty_prompt_is_sot_then_eot_padding():
    _, _, text_encoder = tiny_latent_components()
    ids = torch.full((1, 77), CLIP_EOT)
    ids[0, 0] = CLIP_SOT
    with torch.no_grad():
        torch.testing.assert_close(empty_prompt_embedding(text_encoder), text_encoder(ids).last_hidden_state)


def test_pixel_model_round_trips_and_grey_images_become_rgb(tmp_path):
    unet = tiny_pixel_unet(channels=1, size=8)
    unet.save_pretrained(tmp_path / "unet")
    DDPMScheduler(num_train_timesteps=100).save_pretrained(tmp_path / "scheduler")
    model = load_pixel_diffusion(str(tmp_path), subfolder="unet")
    assert model.latent_shape == (1, 8, 8) and model.schedule.num_train_timesteps == 100
    z = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_noise(z, 5), unet(z, torch.tensor([5, 5])).sample)
    assert model.decode(z).shape == (2, 3, 8, 8)


@pytest.mark.parametrize("loader", [load_stable_diffusion, load_pixel_diffusion])
def test_missing_model_names_what_and_how(tmp_path, loader):
    with pytest.raises(WeightsUnavailableError, match="model.path"):
        loader(str(tmp_path / "no-such-model"))


def test_hub_id_offline_fails_fast_with_advice():
    with pytest.raises(WeightsUnavailableError, match="CompVis/stable-diffusion-v1-4.*model.path"):
        load_stable_diffusion("CompVis/stable-diffusion-v1-4")
