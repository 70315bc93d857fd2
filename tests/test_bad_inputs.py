"""Bad input: a clear error, no summary.json (no half-written success), and notes for fixable input."""

import json
import logging

import numpy as np
import pytest
import torch
from helpers import compose_config
from PIL import Image

from fsa.data.targets import ImageTargets
from fsa.errors import ConfigError, ExtractorError, FsaError, WeightsUnavailableError
from fsa.extractors import TinyExtractor
from fsa.job import run

FAST = ["debug=tiny", "logger.mode=disabled"]


def run_with(overrides, tmp_path):
    """A run in tmp_path/run (tmp_path holds the test's input files: a run folder must not)."""
    return run(compose_config([*FAST, *overrides], tmp_path / "run"), tmp_path / "run")


def fails(overrides, tmp_path, error=FsaError, match=None):
    with pytest.raises(error, match=match) as raised:
        run_with(overrides, tmp_path)
    assert not (tmp_path / "run" / "summary.json").exists()
    failure = json.loads((tmp_path / "run" / "failure.json").read_text())  # why, for the report and the user
    assert (failure["status"], failure["error"]) == ("failed", type(raised.value).__name__)
    assert failure["message"] == str(raised.value)


def test_missing_image(tmp_path):
    fails(["dataset=images", f"dataset.paths=[{tmp_path}/nope.png]"], tmp_path, match="nope.png")


def test_unreadable_image(tmp_path):
    (tmp_path / "broken.png").write_text("not an image")
    fails(["dataset=images", f"dataset.paths=[{tmp_path}/broken.png]"], tmp_path, match="broken.png")


def test_feature_file_of_the_wrong_size(tmp_path):
    torch.save(torch.randn(7), tmp_path / "f.pt")
    fails(["dataset=feature", f"dataset.path={tmp_path}/f.pt"], tmp_path, match="7")


def test_non_finite_target(tmp_path):
    np.save(tmp_path / "f.npy", np.full(32, np.nan, dtype=np.float32))
    fails(["dataset=feature", f"dataset.path={tmp_path}/f.npy"], tmp_path, match="NaN")


def test_caption_needs_a_clip_extractor(tmp_path):
    fails(["dataset=caption", "dataset.captions=[a dog]"], tmp_path, match="clip")


def test_unknown_extractor_layer(tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pt")
    overrides = [
        "extractor=torchvision",
        "extractor.model_name=resnet18",
        "extractor.pretrained=null",
        f"extractor.weights={tmp_path}/r18.pt",
        "extractor.layer=layer9",
    ]
    fails(overrides, tmp_path, ExtractorError, match="layer9")


@pytest.mark.parametrize(
    "override,match",
    [
        ("sampler.num_steps=0", "num_steps"),
        ("guidance.k=0", "guidance.k"),
        ("guidance.early_k=0", "early_k"),
        ("batch_size=0", "batch_size"),
    ],
)
def test_invalid_values(tmp_path, override, match):
    fails([override], tmp_path, ConfigError, match=match)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["model=sd14"], "model.path"),
        (["extractor=clip_rn50"], "extractor.weights"),
        (["extractor=resnet50"], "extractor.weights"),
    ],
)
def test_weights_not_available_offline_say_how_to_pass_a_file(tmp_path, overrides, match):
    fails(overrides, tmp_path, WeightsUnavailableError, match=match)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grey_and_rgba_images_are_converted_with_a_note(tmp_path, caplog, mode):
    path = tmp_path / f"img_{mode}.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, len(mode)), dtype=np.uint8).squeeze()).convert(
        mode
    ).save(path)
    with caplog.at_level(logging.INFO, logger="fsa.data"):
        summary = run_with(["dataset=images", f"dataset.paths=[{path}]", "batch_size=1"], tmp_path)
    assert summary["status"] == "complete"
    assert any(path.name in r.getMessage() and "RGB" in r.getMessage() for r in caplog.records)


def test_a_16_bit_grey_image_is_the_same_target_as_its_8_bit_version(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (48, 48), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "eight.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # 16-bit PNG, mode I;16
    assert Image.open(tmp_path / "sixteen.png").mode == "I;16"
    extractor = TinyExtractor()
    eight, sixteen = (ImageTargets([str(tmp_path / f"{n}.png")]).load(extractor)[0] for n in ("eight", "sixteen"))
    assert torch.equal(sixteen.feature, eight.feature)  # not the all-white image PIL's own convert gives


def test_float_images_are_refused(tmp_path):
    Image.fromarray(np.random.default_rng(1).random((48, 48), dtype=np.float32)).save(tmp_path / "f.tif")
    fails(["dataset=images", f"dataset.paths=[{tmp_path}/f.tif]"], tmp_path, match="floating-point")


def test_an_image_too_small_for_the_extractor_is_refused(tmp_path):
    Image.fromarray(np.zeros((6, 9, 3), dtype=np.uint8)).save(tmp_path / "small.png")  # tiny extractor: 32 px
    fails(["dataset=images", f"dataset.paths=[{tmp_path}/small.png]"], tmp_path, match=r"9x6 px.*under 8 px")


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's limit, lowered: 4,096 pixels is a "bomb"
    fails(["dataset=images", f"dataset.paths=[{tmp_path}/bomb.png]"], tmp_path, match="decompression bomb")


@pytest.mark.parametrize("override", ["+foo=1", "+logger.colour=red", "+guidance.w_gg=1", "+dataset.lmit=2"])
def test_unknown_keys_added_with_plus_are_refused(tmp_path, override):
    fails([override], tmp_path, ConfigError, match=override.lstrip("+").split("=")[0].split(".")[-1])


@pytest.mark.parametrize(
    "override", ["guidance.w_g=nan", "guidance.clip_c=inf", "sampler.eta=nan", "guidance.backward_lr=-inf"]
)
def test_non_finite_numbers_are_refused(tmp_path, override):
    fails([override], tmp_path, ConfigError, match="every number must be finite")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_a_device_this_machine_has_not_is_refused(tmp_path, device):
    fails([f"device={device}"], tmp_path, ConfigError, match="no CUDA GPU")


def test_a_run_whose_guidance_failed_ends_with_a_warning_and_progress_names_the_variant(tmp_path, caplog):
    """Ten DDIM steps with K up to 20 and w_g = 4 overshoot on the digits: the guided images end farther
    from the targets than their unguided twins (measured: 1.68 x). The log says so at WARNING."""
    overrides = ["sampler.num_steps=10", "max_targets=4", "max_samples=2", "baselines=[unguided]", "~attributes"]
    overrides += ["~judges", "robustness=null", "~logger", "progress=true", "device=cpu"]
    with caplog.at_level(logging.INFO, logger="fsa"):
        summary = run(compose_config(overrides, tmp_path / "run"), tmp_path / "run")
    assert summary["proof"]["distance_ratio"] > 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("guidance did not work") and "sampler.num_steps" in w for w in warnings)
    lines = [r.getMessage() for r in caplog.records if "iteration" in r.getMessage()]
    assert any(line.startswith("unguided: iteration 240/240") for line in lines)  # counted over both variants


def test_a_failed_runs_log_ends_with_why(tmp_path):
    (tmp_path / "broken.png").write_text("not an image")  # found by the pre-flight check, unreadable when read
    fails(["dataset=images", f"dataset.paths=[{tmp_path}/broken.png]"], tmp_path, match="broken.png")
    last = (tmp_path / "run" / "fsa.log").read_text().splitlines()[-1]
    assert "[ERROR] - failed: TargetError:" in last and "broken.png" in last
