"""CLIP image (and text) encoders through open_clip: the paper's CLIP RN50, and any other CLIP."""

import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import Tensor, nn

from fsa.errors import ExtractorError, WeightsUnavailableError
from fsa.extractors.base import FeatureExtractor
from fsa.extractors.layers import close_names
from fsa.hub import fail_fast_offline, hub_cached, hub_downloads, reachable
from fsa.weights import HOW_TO_PASS, Download, load_state_dict_file, require_file

log = logging.getLogger("fsa.extractors")

HF_HUB = "hf-hub:"
# What a pretrained tag says about preprocessing; kept when its weights come from a local file.
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")


class OpenCLIPExtractor(FeatureExtractor):
    """CLIP's ``encode_image`` as the feature, NOT L2-normalised (docs/method.md, "The target feature").

    The paper ran OpenAI's ``clip`` package with RN50: open_clip's RN50 + "openai" weights is the
    same network (QuickGELU as the tag requires), giving 1024-d features at 224 px with CLIP's
    mean/std. Captions (Fig. 8) go through :meth:`encode_text` with open_clip's bundled tokenizer,
    which works offline (transformers' CLIPTokenizer silently breaks without the hub).
    """

    supports_text = True

    def __init__(
        self,
        model_name: str = "RN50",
        pretrained: str | None = "openai",
        weights: str | None = None,
        model_config: str | None = None,
        name: str | None = None,
    ) -> None:
        if model_config:
            config = Path(model_config).expanduser()
            if not config.is_file():
                raise ExtractorError(f"open_clip model config '{config}' does not exist")
            open_clip.add_model_config(config)
        model, source = _build(model_name, pretrained, weights)
        preprocess = open_clip.get_model_preprocess_cfg(model)
        size = preprocess["size"]
        size = size if isinstance(size, int) else max(size)
        super().__init__(name or model_name, size, preprocess["mean"], preprocess["std"])
        self.model = model
        with fail_fast_offline():
            self.tokenizer = open_clip.get_tokenizer(source)
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        return self.model.encode_image(x)

    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> unnormalised text features (B, D) in fp32, in the image features' space."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(list(captions)).to(device)
        return self.model.encode_text(tokens).float()


def _is_torchscript(file: Path) -> bool:
    """Whether ``file`` looks like a TorchScript archive (a zip holding ``constants.pkl``), as OpenAI's are."""
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def read_clip_weights(file: Path, what: str) -> dict[str, Tensor]:
    """A CLIP state dict from OpenAI's TorchScript archive (RN50.pt), through TorchScript's own loader,
    or from any other file through the safe readers (safetensors, `torch.load(weights_only=True)`).
    Nothing here unpickles arbitrary objects: a file that would run code on loading is refused."""
    if _is_torchscript(file):
        try:
            state = torch.jit.load(str(file), map_location="cpu").state_dict()
        except RuntimeError as error:
            raise WeightsUnavailableError(
                f"{what}: '{file}' looks like a TorchScript archive but TorchScript cannot load it "
                f"({str(error).strip().splitlines()[0]}); it is not read any other way"
            ) from None
        for key in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's, not weights
            state.pop(key, None)
    else:
        state = load_state_dict_file(file, what)
    if all(key.startswith("module.") for key in state):  # saved from a DistributedDataParallel wrapper
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return state


def _build(model_name: str, pretrained: str | None, weights: str | None) -> tuple[nn.Module, str]:
    """The CLIP model and the name its tokenizer is found by.

    Weights: a local file (with the tag's preprocessing and activation if ``pretrained`` names a
    tag), an open_clip tag or ``hf-hub:`` id (downloaded unless cached), or none (random).
    """
    from_hub = bool(pretrained) and str(pretrained).startswith(HF_HUB) and not weights
    source = str(pretrained) if from_hub else model_name
    if not from_hub and open_clip.get_model_config(model_name) is None:
        raise ExtractorError(
            f"open_clip has no model '{model_name}' (pass model_config=<json> for a custom one); "
            f"closest: {close_names(model_name, open_clip.list_models())}"
        )
    tag = {} if (not pretrained or from_hub) else open_clip.get_pretrained_cfg(model_name, pretrained)
    what = f"open_clip {source}" + (f" ({pretrained})" if pretrained and not from_hub else "")
    if pretrained and not from_hub and not tag:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ExtractorError(f"{what}: unknown pretrained tag; closest: {close_names(pretrained, tags)}")
    kwargs: dict[str, Any] = {"force_quick_gelu": bool(tag.get("quick_gelu", False))}
    if weights:
        # The network from its config, then the file's weights through fsa's safe readers.
        file = require_file(weights, what)
        state = read_clip_weights(file, what)
        preprocess = {key: tag[key] for key in PREPROCESS_KEYS if key in tag}
        model = open_clip.create_model(model_name, force_preprocess_cfg=preprocess, **kwargs)
        if "logit_scale" in state:  # a scalar in some files, shape (1,) in others
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise WeightsUnavailableError(f"{what}: '{file}' does not fit the model: {error}; {HOW_TO_PASS}") from None
        return model, source
    if not pretrained:
        log.warning("%s: no pretrained weights requested; the network is RANDOMLY INITIALISED", what)
        return open_clip.create_model(source, **kwargs), source
    try:
        with fail_fast_offline():
            return open_clip.create_model(
                source, pretrained=None if from_hub else pretrained, require_pretrained=True, **kwargs
            ), source
    except (OSError, RuntimeError, KeyError) as error:
        where = " or ".join(filter(None, (tag.get("hf_hub"), tag.get("url")))) or source
        problem = f"weights are not cached and could not be downloaded from {where} ({error})"
        raise WeightsUnavailableError(f"{what}: {problem}; {HOW_TO_PASS}") from error


# The file names open_clip looks for in a hub repository that names no file.
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def download(
    target: str, model_name: str, pretrained: str | None = None, weights: str | None = None, **_: Any
) -> Download | None:
    """What loading this extractor downloads: open_clip prefers a tag's hub copy to its URL."""
    if weights or not pretrained:
        return None
    if str(pretrained).startswith(HF_HUB):
        repo = str(pretrained).removeprefix(HF_HUB)
        return Download(repo, hub_cached(repo, *HUB_FILES), hub_downloads())
    tag = open_clip.get_pretrained_cfg(model_name, pretrained) if open_clip.get_model_config(model_name) else {}
    hub, url = tag.get("hf_hub", ""), tag.get("url", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/name/" names no file, "org/name/file.bin" one
        in_cache = hub_cached(repo, *((filename,) if filename else HUB_FILES))
        return Download(repo, in_cache, in_cache or hub_downloads())
    if url:
        in_cache = (Path("~/.cache/clip").expanduser() / Path(url).name).is_file()
        return Download(url, in_cache, in_cache or reachable(url))
    return None
