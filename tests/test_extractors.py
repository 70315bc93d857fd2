"""Extractor families on tiny random models: weights round-trip through the real loading code.

Nothing is downloaded: every "pretrained" network is a random one saved to tmp_path and loaded
back with ``weights=<file>``, which is also how an offline machine runs the paper's models.
"""

import inspect
import json
import logging
from pathlib import Path
from urllib.error import URLError

import open_clip
import pytest
import timm
import torch
import torchvision
from helpers import TINY_CLIP, compose_config
from hydra.utils import get_class, instantiate
from PIL import Image

from fsa import hub
from fsa.extractors import (
    ExtractorError,
    FeatureExtractor,
    OpenCLIPExtractor,
    TimmExtractor,
    TinyExtractor,
    TorchvisionExtractor,
    WeightsUnavailableError,
)
from fsa.extractors.base import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN

CONF = Path(__file__).resolve().parents[1] / "fsa" / "conf" / "extractor"


def _saved(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    return model, _saved(model, tmp_path_factory.mktemp("tv") / "resnet18.pt")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[open_clip.CLIP, Path, Path]:
    """A tiny CLIP (the real vocabulary, so the bundled tokenizer works) as config JSON + state dict."""
    folder = tmp_path_factory.mktemp("clip")
    config = folder / "TinyCLIP-fsa-test.json"
    config.write_text(json.dumps(TINY_CLIP))
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=TINY_CLIP["embed_dim"],
        vision_cfg=open_clip.CLIPVisionCfg(**TINY_CLIP["vision_cfg"]),
        text_cfg=open_clip.CLIPTextCfg(**TINY_CLIP["text_cfg"]),
    ).eval()
    return model, config, _saved(model, folder / "tiny_clip.pt")


# --- torchvision ---------------------------------------------------------------------------------


def test_torchvision_weights_round_trip(resnet18_file: tuple[torch.nn.Module, Path]) -> None:
    model, file = resnet18_file
    extractor = TorchvisionExtractor(model_name="resnet18", pretrained=None, weights=str(file), input_size=64)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(extractor(x), model(x), atol=1e-5)
    assert extractor.feature_dim == 1000


def test_torchvision_identity_layer_and_pool(resnet18_file: tuple[torch.nn.Module, Path]) -> None:
    model, file = resnet18_file
    x = torch.randn(2, 3, 64, 64)
    pooled = TorchvisionExtractor("resnet18", pretrained=None, weights=str(file), replace_with_identity="fc")
    assert pooled(x).shape == (2, 512)
    layer3 = TorchvisionExtractor("resnet18", pretrained=None, weights=str(file), layer="layer3", pool="mean")
    trunk = torch.nn.Sequential(*list(model.children())[:-3])  # conv1 ... layer3
    assert torch.allclose(layer3(x), trunk(x).mean(dim=(2, 3)), atol=1e-5)
    flat = TorchvisionExtractor("resnet18", pretrained=None, weights=str(file), layer="layer3")
    assert flat(x).shape == (2, 256 * 4 * 4)


def test_unknown_layer_names_close_ones() -> None:
    with pytest.raises(ExtractorError, match="'layer3'"):
        TorchvisionExtractor("resnet18", pretrained=None, layer="layr3")
    with pytest.raises(ExtractorError, match="heads.head"):
        TorchvisionExtractor("resnet18", pretrained=None, replace_with_identity="heads.head")
    with pytest.raises(ExtractorError, match="pool"):
        TorchvisionExtractor("resnet18", pretrained=None, pool="max")
    with pytest.raises(ExtractorError, match="resnet18"):
        TorchvisionExtractor("resnet81", pretrained=None)
    with pytest.raises(ExtractorError, match="IMAGENET1K_V1"):
        TorchvisionExtractor("resnet18", pretrained="IMAGENET1K_V3")


def test_missing_weights_file_says_how_to_pass_one(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match=r"extractor\.weights") as error:
        TorchvisionExtractor("resnet18", weights=str(tmp_path / "nope.pt"))
    assert "nope.pt" in str(error.value)


def test_wrong_weights_file(tmp_path: Path, resnet18_file: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not fit"):
        TorchvisionExtractor("resnet34", pretrained=None, weights=str(resnet18_file[1]))
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        TorchvisionExtractor("resnet18", pretrained=None, weights=str(garbage))


def test_hub_weights_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise URLError("no network in tests")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"IMAGENET1K_V1.*extractor\.weights"):
        TorchvisionExtractor("resnet18", pretrained="IMAGENET1K_V1")


# --- open_clip -----------------------------------------------------------------------------------


def test_openclip_image_and_text_round_trip(tiny_clip: tuple[open_clip.CLIP, Path, Path]) -> None:
    model, config, file = tiny_clip
    extractor = OpenCLIPExtractor(model_name=config.stem, pretrained=None, weights=str(file), model_config=str(config))
    assert (extractor.input_size, extractor.feature_dim) == (16, 16)
    assert extractor.mean == pytest.approx(CLIP_MEAN) and extractor.std == pytest.approx(CLIP_STD)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(extractor(x), model.encode_image(x), atol=1e-6)  # not L2-normalised
    captions = ["a photo of a cat", "a red car"]
    tokens = open_clip.get_tokenizer(config.stem)(captions)
    text = extractor.encode_text(captions)
    assert text.dtype == torch.float32 and text.shape == (2, 16)
    assert torch.allclose(text, model.encode_text(tokens), atol=1e-6)
    assert not torch.allclose(text.norm(dim=1), torch.ones(2))


@pytest.mark.filterwarnings("ignore:.*TorchScript:UserWarning", "ignore::FutureWarning")
def test_openclip_torchscript_archive(tmp_path: Path, tiny_clip: tuple[open_clip.CLIP, Path, Path]) -> None:
    """OpenAI ships CLIP as TorchScript archives (RN50.pt); those load through the same path."""
    model, config, _ = tiny_clip
    # OpenAI's archives hold no attention-mask buffer (theirs is a plain attribute): do the same.
    scripted_source = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.CLIPVisionCfg(**TINY_CLIP["vision_cfg"]),
        text_cfg=open_clip.CLIPTextCfg(**TINY_CLIP["text_cfg"]),
    ).eval()
    scripted_source.load_state_dict(model.state_dict())
    scripted_source.attn_mask = scripted_source._buffers.pop("attn_mask")
    archive = tmp_path / "tiny_openai.pt"
    torch.jit.save(torch.jit.script(scripted_source), archive)
    extractor = OpenCLIPExtractor(config.stem, pretrained=None, weights=str(archive), model_config=str(config))
    x = torch.randn(1, 3, 16, 16)
    assert torch.allclose(extractor(x), model.encode_image(x), atol=1e-6)


def test_openclip_local_file_keeps_the_tags_preprocessing_and_activation(
    monkeypatch: pytest.MonkeyPatch, tiny_clip: tuple[open_clip.CLIP, Path, Path]
) -> None:
    """``pretrained`` still names the tag when the weights come from a file: its mean/std and QuickGELU."""
    _, config, file = tiny_clip
    open_clip.add_model_config(config)
    tag = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "quick_gelu": True}
    monkeypatch.setattr(open_clip, "get_pretrained_cfg", lambda name, tag_name: tag)
    extractor = OpenCLIPExtractor(config.stem, pretrained="some_tag", weights=str(file))
    assert extractor.mean == (0.5, 0.5, 0.5) and extractor.std == (0.5, 0.5, 0.5)
    assert isinstance(extractor.model.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)


def test_openclip_errors(tmp_path: Path) -> None:
    with pytest.raises(ExtractorError, match="'RN50'"):
        OpenCLIPExtractor(model_name="RN05")
    with pytest.raises(ExtractorError, match="'openai'"):
        OpenCLIPExtractor(model_name="RN50", pretrained="opena")
    with pytest.raises(WeightsUnavailableError, match=r"extractor\.weights"):
        OpenCLIPExtractor(model_name="RN50", weights=str(tmp_path / "RN50.pt"))
    # HF_HUB_OFFLINE=1 (conftest): the hub download fails at once.
    with pytest.raises(WeightsUnavailableError, match=r"resnet50_clip\.openai.*extractor\.weights"):
        OpenCLIPExtractor(model_name="RN50", pretrained="openai")


# --- timm ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["test_vit", "resnet10t"])
def test_timm_weights_round_trip(tmp_path: Path, model_name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(model_name).eval()
    extractor = TimmExtractor(model_name, weights=str(_saved(model, tmp_path / "w.pt")))
    config = model.pretrained_cfg
    assert extractor.input_size == config["input_size"][-1]
    assert extractor.mean == pytest.approx(config["mean"])
    x = torch.randn(2, 3, extractor.input_size, extractor.input_size)
    assert torch.allclose(extractor(x), model(x), atol=1e-5)


def test_timm_layer_pool_and_errors(tmp_path: Path) -> None:
    model = timm.create_model("test_vit").eval()
    file = str(_saved(model, tmp_path / "w.pt"))
    tokens = TimmExtractor("test_vit", weights=file, layer="blocks.0", pool="mean")
    assert tokens(torch.randn(2, 3, 160, 160)).shape == (2, model.embed_dim)
    with pytest.raises(ExtractorError, match="'blocks.0'"):
        TimmExtractor("test_vit", weights=file, layer="block.0")
    with pytest.raises(WeightsUnavailableError, match="cannot load"):
        TimmExtractor("resnet10t", weights=file)
    with pytest.raises(WeightsUnavailableError, match=r"extractor\.weights"):
        TimmExtractor("test_vit", pretrained=True)  # HF_HUB_OFFLINE=1: fails at once
    with pytest.raises(ExtractorError, match="'test_vit'"):
        TimmExtractor("test_vitt", pretrained=False)


def test_unreachable_hub_switches_to_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda endpoint: False)
    with hub.fail_fast_offline():
        assert constants.HF_HUB_OFFLINE
    assert not constants.HF_HUB_OFFLINE


# --- common behaviour ----------------------------------------------------------------------------


def test_tiny_is_seeded_and_loud(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="fsa.extractors"):
        a, b = TinyExtractor(seed=1), TinyExtractor(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert "RANDOM" in caplog.text
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), TinyExtractor(seed=2)(x))
    assert TinyExtractor(feature_dim=8).feature_dim == 8
    c = TinyExtractor(seed=3, weights=str(_saved(a.network, tmp_path / "tiny.pt")))
    assert torch.equal(c(x), a(x))


def test_frozen_and_gradient_reaches_input(resnet18_file: tuple[torch.nn.Module, Path]) -> None:
    extractors = [
        TinyExtractor(),
        TorchvisionExtractor("resnet18", pretrained=None, weights=str(resnet18_file[1]), layer="layer2", pool="mean"),
    ]
    for extractor in extractors:
        assert not extractor.training
        assert not any(p.requires_grad for p in extractor.parameters())
        x = torch.randn(2, 3, 32, 32, requires_grad=True)
        features = extractor(x)
        assert features.dtype == torch.float32 and features.ndim == 2
        features.square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_text_needs_a_clip_extractor() -> None:
    with pytest.raises(ExtractorError, match="text encoder"):
        TinyExtractor().encode_text(["a cat"])


def test_preprocess_and_prepare_generated() -> None:
    extractor = TinyExtractor(input_size=24)
    image = Image.new("RGB", (50, 30), (255, 0, 0))
    x = extractor.preprocess_image(image)
    assert x.shape == (3, 24, 24)
    assert x[0, 0, 0] == pytest.approx((1 - IMAGENET_MEAN[0]) / 0.229, abs=1e-5)
    generated = extractor.prepare_generated(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert generated.shape == (2, 3, 24, 24)


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_arguments_match_the_class(path: Path) -> None:
    node = compose_config([f"extractor={path.stem}"]).extractor
    target = get_class(node._target_)
    if "weights" in inspect.signature(target).parameters:  # no local config here: the weights map is empty
        assert "weights" in node and node.weights is None
    elif "model" in node:  # unet_block: its weights are the diffusion model's, which it reads
        assert "_target_" in node.model
    else:  # pixels: nothing to load
        assert list(instantiate(node).parameters()) == []
    kwargs = {k: v for k, v in node.items() if not str(k).startswith("_")}
    inspect.signature(target).bind(**kwargs)


def test_vit_h14_preset_structure() -> None:
    """The 632 M-parameter ViT-H/14 is built on the meta device: shapes only, no memory, no weights."""
    assert (CONF / "vit_h14.yaml").read_text().startswith("# @package _global_")
    cfg = compose_config(["extractor=vit_h14"])
    assert cfg.guidance.clip_c == 2.0  # the paper's threshold for ViT-H/14
    assert (cfg.extractor.model_name, cfg.extractor.pretrained) == ("vit_h_14", "IMAGENET1K_SWAG_E2E_V1")
    with torch.device("meta"):
        extractor = instantiate(cfg.extractor, pretrained=None)
        assert (extractor.input_size, extractor.feature_dim) == (518, 1280)


def test_clip_rn50_preset_builds_a_1024d_extractor() -> None:
    extractor = instantiate(compose_config(["extractor=clip_rn50"]).extractor, pretrained=None)  # random weights
    assert (extractor.name, extractor.input_size, extractor.feature_dim) == ("clip_rn50", 224, 1024)
    assert extractor.mean == pytest.approx(CLIP_MEAN)
    assert extractor.encode_text(["a photo of a dog"]).shape == (1, 1024)


def test_resnet50_preset_builds_a_2048d_extractor(tmp_path: Path) -> None:
    file = _saved(torchvision.models.resnet50(), tmp_path / "resnet50.pt")
    extractor = instantiate(compose_config(["extractor=resnet50", f"weights.resnet50={file}"]).extractor)
    assert isinstance(extractor, FeatureExtractor)
    assert (extractor.name, extractor.input_size, extractor.feature_dim) == ("resnet50", 224, 2048)
    assert extractor.mean == IMAGENET_MEAN
