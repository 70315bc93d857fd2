"""Target features f_s: every source, the Fig. 8 transforms, every error, and the dataset configs."""

import inspect
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TinyImageExtractor
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue
from PIL import Image
from torch import Tensor, nn

from fsa.data.targets import (
    DEFAULT_SKIMAGE_NAMES,
    CaptionTargets,
    FeatureTargets,
    ImageTargets,
    SkimageTargets,
    Target,
    TargetError,
    TargetTransform,
)
from fsa.extractors.base import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor

CONF = Path(__file__).resolve().parents[1] / "fsa" / "conf" / "dataset"
SIZE = 16
DIM = 8


class TinyExtractor(TinyImageExtractor):
    def __init__(self) -> None:
        super().__init__(SIZE, DIM)


class TinyTextExtractor(TinyExtractor):
    """The same, with a text tower that maps every caption to one fixed vector."""

    supports_text = True
    text_feature = torch.arange(1.0, DIM + 1)

    def encode_text(self, captions: list[str]) -> Tensor:
        return self.text_feature.expand(len(captions), DIM).clone()


@pytest.fixture(scope="module")
def extractor() -> TinyExtractor:
    return TinyExtractor()


def save_image(path: Path, mode: str = "RGB", colour: object = (200, 30, 90), size=(24, 20)) -> Path:
    Image.new(mode, size, colour).save(path)
    return path


def cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


# --- images -----------------------------------------------------------------------------------


def test_image_files_png_and_jpeg(tmp_path, extractor):
    png = save_image(tmp_path / "red.png")
    jpg = save_image(tmp_path / "blue.jpg", colour=(10, 20, 230))
    targets = ImageTargets([str(png), str(jpg)]).load(extractor)

    assert [t.name for t in targets] == ["red", "blue"]
    assert [t.source for t in targets] == [str(png), str(jpg)]
    for t in targets:
        assert isinstance(t, Target)
        assert t.feature.shape == (DIM,) and t.feature.dtype == torch.float32
        assert t.image is not None and t.image.shape == (3, SIZE, SIZE)
        assert t.image.min() >= 0 and t.image.max() <= 1
    # The feature is f(preprocessed image), exactly what the extractor computes itself.
    expected = extractor(extractor.preprocess_image(Image.open(png)).unsqueeze(0))[0]
    torch.testing.assert_close(targets[0].feature, expected)
    # The kept image is the picture the extractor saw, back in [0, 1].
    torch.testing.assert_close(targets[0].image[:, 5, 5], torch.tensor([200, 30, 90]) / 255, atol=1e-3, rtol=0)


def test_folder_is_sorted_filtered_and_mixed_with_files(tmp_path, extractor):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ["b.png", "a.JPEG", "c.bmp", "d.webp", "e.TIFF"]:
        save_image(folder / name)
    (folder / "notes.txt").write_text("not an image")
    (folder / "sub").mkdir()
    single = save_image(tmp_path / "z.png")

    targets = ImageTargets([str(folder), str(single)]).load(extractor)
    assert [t.name for t in targets] == ["a", "b", "c", "d", "e", "z"]


def test_single_path_string_and_limit(tmp_path, extractor):
    for name in ["1.png", "2.png", "3.png"]:
        save_image(tmp_path / name)
    assert len(ImageTargets(str(tmp_path)).load(extractor)) == 3
    assert [t.name for t in ImageTargets([str(tmp_path)], limit=2).load(extractor)] == ["1", "2"]
    with pytest.raises(TargetError, match="limit"):
        ImageTargets([str(tmp_path)], limit=0)


@pytest.mark.parametrize(
    ("mode", "colour", "level"),
    [("L", 128, logging.INFO), ("P", 3, logging.INFO), ("RGBA", (10, 200, 30, 100), logging.WARNING)],
)
def test_non_rgb_images_are_converted_with_a_note(tmp_path, extractor, caplog, mode, colour, level):
    path = save_image(tmp_path / f"odd_{mode}.png", mode=mode, colour=colour)
    caplog.set_level(logging.INFO, logger="fsa.data")
    (target,) = ImageTargets([str(path)]).load(extractor)

    assert target.image.shape == (3, SIZE, SIZE)
    notes = [r for r in caplog.records if r.name == "fsa.data" and path.name in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == level
    assert f"mode {mode} to RGB" in notes[0].getMessage()
    if mode == "L":  # grey stays grey
        assert torch.allclose(target.image[0], target.image[1]) and torch.allclose(target.image[1], target.image[2])


def test_extractor_without_parameters_runs_on_cpu(tmp_path):
    class PoolOnly(FeatureExtractor):
        def __init__(self) -> None:
            super().__init__("pool", SIZE, IMAGENET_MEAN, IMAGENET_STD)
            self.network = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    (target,) = ImageTargets([str(save_image(tmp_path / "x.png"))]).load(PoolOnly())
    assert target.feature.shape == (3,)


# --- transforms (Fig. 8) ----------------------------------------------------------------------


def test_transform_norm_then_scale_keeps_direction():
    feature = torch.tensor([3.0, -4.0, 12.0])  # norm 13
    assert TargetTransform()(feature).equal(feature)
    torch.testing.assert_close(TargetTransform(scale=1.2)(feature), feature * 1.2)
    normed = TargetTransform(norm=2.1776)(feature)
    assert float(normed.norm()) == pytest.approx(2.1776)
    both = TargetTransform(scale=0.8, norm=2.0)(feature)
    assert float(both.norm()) == pytest.approx(1.6)  # rescaled to 2, then times 0.8
    for out in (normed, both):
        assert cosine(out, feature) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"scale": 0}, {"scale": -1.0}, {"norm": 0}, {"norm": -2.0}, {"norm": float("nan")}])
def test_transform_rejects_non_positive(kwargs):
    with pytest.raises(TargetError, match="positive"):
        TargetTransform(**kwargs)


def test_transform_rejects_zero_feature_with_norm():
    with pytest.raises(TargetError, match="rescale"):
        TargetTransform(norm=1.0)(torch.zeros(4))


def test_image_targets_apply_the_transform(tmp_path, extractor):
    path = str(save_image(tmp_path / "x.png"))
    (plain,) = ImageTargets([path]).load(extractor)
    (scaled,) = ImageTargets([path], scale=1.2).load(extractor)
    (normed,) = ImageTargets([path], norm=5.0, scale=0.8).load(extractor)
    torch.testing.assert_close(scaled.feature, plain.feature * 1.2)
    assert float(normed.feature.norm()) == pytest.approx(4.0, rel=1e-5)
    assert cosine(normed.feature, plain.feature) == pytest.approx(1.0, abs=1e-6)


# --- captions ---------------------------------------------------------------------------------


def test_captions_use_the_text_tower_and_the_transform():
    text = TinyTextExtractor()
    targets = CaptionTargets(["a cat", "a dog"]).load(text)
    assert [t.name for t in targets] == ["a cat", "a dog"]
    assert [t.source for t in targets] == ["a cat", "a dog"]
    assert all(t.image is None for t in targets)
    torch.testing.assert_close(targets[0].feature, TinyTextExtractor.text_feature)

    (normed,) = CaptionTargets(["a cat"], norm=2.1776).load(text)
    assert float(normed.feature.norm()) == pytest.approx(2.1776)
    assert cosine(normed.feature, TinyTextExtractor.text_feature) == pytest.approx(1.0)


def test_captions_need_a_text_tower(extractor):
    with pytest.raises(TargetError, match=r"extractor=clip_rn50 or extractor=openclip"):
        CaptionTargets(["a cat"]).load(extractor)


@pytest.mark.parametrize("captions", [[], ["a cat", "  "]])
def test_empty_captions_are_rejected(captions):
    with pytest.raises(TargetError, match="caption"):
        CaptionTargets(captions)


# --- feature files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".npy"])
@pytest.mark.parametrize("rows", [None, 3])
def test_feature_files(tmp_path, extractor, suffix, rows):
    data = torch.randn(DIM) if rows is None else torch.randn(rows, DIM)
    path = tmp_path / f"feats{suffix}"
    if suffix == ".pt":
        torch.save(data, path)
    else:
        np.save(path, data.numpy().astype(np.float64))

    targets = FeatureTargets(str(path), scale=1.2).load(extractor)
    expected = [data] if rows is None else list(data)
    names = ["feats"] if rows is None else [f"feats[{i}]" for i in range(rows)]
    assert [t.name for t in targets] == names
    for t, e in zip(targets, expected, strict=True):
        assert t.image is None and t.source == str(path) and t.feature.dtype == torch.float32
        torch.testing.assert_close(t.feature, e * 1.2)


def test_feature_file_size_must_match_the_extractor(tmp_path, extractor):
    path = tmp_path / "wrong.pt"
    torch.save(torch.randn(2, DIM + 4), path)
    with pytest.raises(TargetError, match=rf"size {DIM + 4}.*size {DIM}"):
        FeatureTargets(str(path)).load(extractor)


@pytest.mark.parametrize(("suffix", "bad"), [(".pt", float("nan")), (".npy", float("inf"))])
def test_non_finite_feature_file(tmp_path, extractor, suffix, bad):
    data = torch.ones(2, DIM)
    data[1, 3] = bad
    path = tmp_path / f"bad{suffix}"
    if suffix == ".pt":
        torch.save(data, path)
    else:
        np.save(path, data.numpy())
    with pytest.raises(TargetError, match=r"bad\[1\].*NaN or inf"):
        FeatureTargets(str(path)).load(extractor)


def test_non_finite_after_transform(tmp_path, extractor):
    path = tmp_path / "huge.pt"
    torch.save(torch.full((DIM,), 1e38), path)
    with pytest.raises(TargetError, match="NaN or inf"):
        FeatureTargets(str(path), scale=1e6).load(extractor)


def test_bad_feature_files(tmp_path, extractor):
    with pytest.raises(TargetError, match="does not exist"):
        FeatureTargets(str(tmp_path / "missing.pt"))
    (tmp_path / "feats.txt").write_text("1 2 3")
    with pytest.raises(TargetError, match=r"\.pt.*\.npy"):
        FeatureTargets(str(tmp_path / "feats.txt"))
    (tmp_path / "corrupt.npy").write_bytes(b"not numpy")
    with pytest.raises(TargetError, match="cannot read"):
        FeatureTargets(str(tmp_path / "corrupt.npy")).load(extractor)
    torch.save({"feature": torch.randn(DIM)}, tmp_path / "dict.pt")
    with pytest.raises(TargetError, match="one real tensor"):
        FeatureTargets(str(tmp_path / "dict.pt")).load(extractor)
    torch.save(torch.randn(2, 2, DIM), tmp_path / "cube.pt")
    with pytest.raises(TargetError, match=r"\(D,\) or \(N, D\)"):
        FeatureTargets(str(tmp_path / "cube.pt")).load(extractor)


# --- image errors -----------------------------------------------------------------------------


def test_image_errors(tmp_path, extractor):
    with pytest.raises(TargetError, match="does not exist"):
        ImageTargets([str(tmp_path / "nope.png")])
    with pytest.raises(TargetError, match="no image paths"):
        ImageTargets([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TargetError, match="no image files"):
        ImageTargets([str(tmp_path / "empty")])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(TargetError, match=r"cannot read image file.*corrupt\.png"):
        ImageTargets([str(corrupt)]).load(extractor)
    assert issubclass(TargetError, ValueError)


# --- scikit-image -----------------------------------------------------------------------------


def test_skimage_defaults_load_offline(extractor):
    targets = SkimageTargets().load(extractor)
    assert [t.name for t in targets] == list(DEFAULT_SKIMAGE_NAMES)
    assert len(targets) >= 3
    for t in targets:
        assert t.feature.shape == (extractor.feature_dim,)
        assert t.image.shape == (3, SIZE, SIZE)
        assert t.source == f"skimage.data.{t.name}"
    assert len(SkimageTargets(limit=2).load(extractor)) == 2


def test_unknown_skimage_name():
    with pytest.raises(TargetError, match=r"unknown scikit-image.*camera_man.*astronaut"):
        SkimageTargets(["astronaut", "camera_man"])


# --- the dataset configs ----------------------------------------------------------------------

CONFIGS = {
    "images": ("paths", lambda tmp: [str(save_image(tmp / "x.png"))], ImageTargets),
    "caption": ("captions", lambda tmp: ["a photo of a cat"], CaptionTargets),
    "feature": ("path", lambda tmp: _saved_feature(tmp), FeatureTargets),
    "skimage": (None, None, SkimageTargets),
}


def _saved_feature(tmp: Path) -> str:
    torch.save(torch.randn(DIM), tmp / "f.pt")
    return str(tmp / "f.pt")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_dataset_configs_instantiate(tmp_path, extractor, name):
    key, value, cls = CONFIGS[name]
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    # Every constructor argument is spelt out, so struct mode catches a misspelt override.
    params = set(inspect.signature(cls).parameters)
    assert set(cfg.keys()) - {"_target_"} == params
    OmegaConf.set_struct(cfg, True)
    with pytest.raises(ConfigKeyError):
        OmegaConf.merge(cfg, {"limt": 3})
    if key is not None:
        with pytest.raises(MissingMandatoryValue):
            getattr(cfg, key)
        cfg = OmegaConf.merge(cfg, {key: value(tmp_path)})

    source = instantiate(cfg)
    assert isinstance(source, cls)
    text = TinyTextExtractor() if name == "caption" else extractor
    targets = source.load(text)
    assert targets and all(t.feature.shape == (DIM,) for t in targets)
