"""Every config composes; typos and bad values are errors before any model loads."""

import pytest
from helpers import CONF_DIR, compose_config
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from fsa.config import check_targets, validate
from fsa.errors import ConfigError
from fsa.job import build

FILLS = {  # mandatory values of some options
    ("dataset", "images"): ["dataset.paths=[x.png]"],
    ("dataset", "caption"): ["dataset.captions=[a photo of a dog]"],
    ("dataset", "feature"): ["dataset.path=f.pt"],
    ("guidance", "self_guided"): ["extractor=unet_block"],  # it matches the UNet's own representation
}


GROUPS = (
    "model",
    "sampler",
    "guidance",
    "extractor",
    "dataset",
    "logger",
    "debug",
    "oracle",
    "smoke",
    "speed",
)  # experiment/: test_experiments.py


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group,name",
    [(g, n) for g in GROUPS for n in options(g)],
)
def test_every_config_composes_and_names_real_arguments(group, name):
    cfg = compose_config([f"{group}={name}", *FILLS.get((group, name), [])])
    check_targets(cfg)
    validate(cfg)


def test_paper_guidance_config():
    cfg = compose_config(["guidance=paper", "sampler=ddpm"])
    assert cfg.guidance.w_g == 4.0 and cfg.guidance.clip_c == 3.0 and cfg.guidance.clip_mode == "mean"
    assert (cfg.guidance.early_steps, cfg.guidance.early_k, cfg.guidance.k) == (5, 1000, 8)
    assert cfg.guidance.post_check and cfg.guidance.normalise and cfg.guidance.direction == "descend"
    assert cfg.sampler.num_steps is None  # DDPM over all 1000 timesteps
    assert compose_config(["guidance=none"]).guidance.w_g == 0.0


def test_defaults_are_the_embedded_digits_setup_with_the_proof():
    cfg = compose_config([])
    assert (cfg.model.path.endswith("assets/digits/ddpm"), cfg.extractor.name) == (True, "digits_cnn")
    assert cfg.dataset._target_.endswith("DigitsTargets") and cfg.oracle is not None
    assert list(cfg.baselines) == ["unguided", "printed_sign", "adversarial"]
    assert list(cfg.judges) == ["pixels", "digits_cnn_translation", "digits_cnn_seed1"] and cfg.robustness.jpeg == 75
    quick = cfg.guidance  # the paper's guidance with a short K schedule for DDIM 50
    paper = compose_config(["guidance=paper"]).guidance
    assert {k: v for k, v in quick.items() if k not in ("early_k", "k")} == {
        k: v for k, v in paper.items() if k not in ("early_k", "k")
    }


def test_vit_h14_brings_its_clip_threshold_and_the_command_line_still_wins():
    assert compose_config(["extractor=vit_h14"]).guidance.clip_c == 2.0
    assert compose_config(["extractor=vit_h14", "guidance.clip_c=3"]).guidance.clip_c == 3.0
    assert compose_config(["experiment=paper", "extractor=vit_h14", "dataset.paths=[x]"]).guidance.clip_c == 2.0


def test_paper_experiment_is_the_papers_setting():
    cfg = compose_config(["experiment=paper", "extractor=clip_rn50", "dataset.paths=[x.png]"])
    assert cfg.model.path == "CompVis/stable-diffusion-v1-4" and cfg.sampler.num_steps is None
    assert (cfg.guidance.w_g, cfg.guidance.early_k, cfg.guidance.k, cfg.guidance.clip_c) == (4.0, 1000, 8, 3.0)
    assert (cfg.batch_size, cfg.oracle, list(cfg.baselines), cfg.dtype) == (3, None, [], "float32")


@pytest.mark.parametrize(
    "override", ["sedd=1", "guidance.w_gg=1", "speed.compil=true", "extractor.layerr=x", "sampler.step=3"]
)
def test_misspelt_key_is_an_error(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


@pytest.mark.parametrize("override", ["seed=abc", "batch_size=two", "guidance.w_g=strong", "guidance.k=1.5"])
def test_wrong_type_is_an_error(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config([override])


@pytest.mark.parametrize(
    "override,message",
    [
        ("batch_size=0", "batch_size"),
        ("dtype=float8", "dtype"),
        ("logger.mode=loud", "logger.mode"),
        ("device=tpu", "device"),
        ("speed.attention=flash", "speed.attention"),
        ("guidance.post_check_every=0", "post_check_every"),
    ],
)
def test_invalid_value_is_a_config_error(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg = compose_config([override])
        validate(cfg)
        build(cfg.speed), build(cfg.guidance)
