"""Nothing fsa loads from a user's path can run code: every loader, given a crafted file whose
unpickling would create a marker file, refuses it with a clear error, and the marker never appears."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_CLIP, compose_config, tiny_pixel_unet

from fsa.data.targets import FeatureTargets, TargetError
from fsa.diffusion.backbones import load_pixel_diffusion
from fsa.errors import FsaError, WeightsUnavailableError
from fsa.extractors import OpenCLIPExtractor, TimmExtractor, TinyExtractor, TorchvisionExtractor
from fsa.extractors.digits_cnn import DigitsCNNExtractor
from fsa.job import run
from fsa.report.figures import load_gradients
from fsa.tracking.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class CreatesFile:
    """Unpickling this calls open(path, "w"): any full unpickle of a file holding it creates `path`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "marker"
    yield path
    assert not path.exists(), "a crafted file ran code while fsa loaded it"


def crafted_torch_file(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"weight": torch.zeros(1)}, "payload": CreatesFile(marker)}, path)
    return path


def test_the_crafted_file_does_run_code_when_fully_unpickled(tmp_path):
    """Without this the other tests could pass with a harmless file."""
    path = crafted_torch_file(tmp_path / "evil.pt", tmp_path / "ran")
    torch.load(path, weights_only=False)
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "build",
    [
        lambda file: TorchvisionExtractor("resnet18", pretrained=None, weights=str(file)),
        lambda file: TimmExtractor("test_vit", weights=str(file)),
        lambda file: DigitsCNNExtractor(weights=str(file)),
        lambda file: TinyExtractor(weights=str(file)),
    ],
    ids=["torchvision", "timm", "digits_cnn", "tiny"],
)
def test_extractor_weights(tmp_path, marker, build):
    with pytest.raises(WeightsUnavailableError, match="evil.pt"):
        build(crafted_torch_file(tmp_path / "evil.pt", marker))


@pytest.fixture
def clip_config(tmp_path: Path) -> Path:
    config = tmp_path / "TinyCLIP-safe-test.json"
    config.write_text(json.dumps(TINY_CLIP))
    return config


def test_openclip_weights(tmp_path, marker, clip_config):
    file = crafted_torch_file(tmp_path / "evil.pt", marker)
    with pytest.raises(WeightsUnavailableError, match="evil.pt"):
        OpenCLIPExtractor(clip_config.stem, pretrained=None, weights=str(file), model_config=str(clip_config))


def test_openclip_archive_posing_as_torchscript(tmp_path, marker, clip_config):
    """A plain torch.save archive with a `constants.pkl` below its top level: it looks like TorchScript
    to a name check, and torch.load (which only treats a top-level one as TorchScript) would unpickle
    it in full. fsa reads anything that looks like TorchScript only through TorchScript's loader."""
    file = crafted_torch_file(tmp_path / "evil.pt", marker)
    with zipfile.ZipFile(file, "a") as archive:
        archive.writestr("evil/extra/constants.pkl", b"")
    with pytest.raises(WeightsUnavailableError, match="TorchScript cannot load it"):
        OpenCLIPExtractor(clip_config.stem, pretrained=None, weights=str(file), model_config=str(clip_config))


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_feature_files(tmp_path, marker, suffix):
    path = tmp_path / f"evil{suffix}"
    if suffix == ".npy":
        np.save(path, np.array([CreatesFile(marker)], dtype=object), allow_pickle=True)
    else:
        crafted_torch_file(path, marker)
    with pytest.raises(TargetError, match="cannot read feature file"):
        FeatureTargets(str(path)).load(TinyExtractor())


def test_checkpoint_with_a_valid_checksum(tmp_path, marker):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"config": {}, "payload": CreatesFile(marker)}, path)  # the checksum is right
    with pytest.raises(CheckpointError, match="more than plain data"):
        load_checkpoint(path)


def test_checkpoint_in_a_run_folder_fails_the_run_cleanly(tmp_path, marker):
    save_checkpoint({"config": {}, "payload": CreatesFile(marker)}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError):
        run(compose_config(["debug=tiny", "logger.mode=disabled"], tmp_path), tmp_path)
    assert json.loads((tmp_path / "failure.json").read_text())["error"] == "CheckpointError"


def test_report_gradients(tmp_path, marker):
    assert load_gradients(crafted_torch_file(tmp_path / "gradients.pt", marker)) is None


def test_diffusion_model_folder(tmp_path, marker):
    folder = tmp_path / "model"
    tiny_pixel_unet(channels=3, size=8).save_pretrained(folder, safe_serialization=False)
    crafted_torch_file(folder / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(FsaError, match=r"Unable to load weights.*model\.path"):
        load_pixel_diffusion(str(folder))
