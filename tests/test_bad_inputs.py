"""Bad input: a clear error, no summary.json (no half-written success), and notes for fixable input."""

import json
import logging

import numpy as np
import pytest
import torch
from helpers import compose_config
from PIL import Image

from fsa.errors import ConfigError, ExtractorError, FsaError, WeightsUnavailableError
from fsa.runner import run

FAST = ["debug=tiny", "logger.mode=disabled"]


def run_with(overrides, tmp_path):
    return run(compose_config([*FAST, *overrides], tmp_path), tmp_path)


def fails(overrides, tmp_path, error=FsaError, match=None):
    with pytest.raises(error, match=match) as raised:
        run_with(overrides, tmp_path)
    assert not (tmp_path / "summary.json").exists()
    failure = json.loads((tmp_path / "failure.json").read_text())  # why, for the report and the user
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
