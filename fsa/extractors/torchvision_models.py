"""torchvision classifiers as f: ResNet-50 and ViT-H/14 in the paper, any model and layer otherwise."""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from fsa.errors import ExtractorError, WeightsUnavailableError
from fsa.extractors import layers
from fsa.extractors.base import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from fsa.hub import reachable
from fsa.weights import HOW_TO_PASS, Download, load_state_dict_file, require_file

log = logging.getLogger("fsa.extractors")


class TorchvisionExtractor(FeatureExtractor):
    """A torchvision model's output (or a named layer's, optionally pooled) as the feature.

    The paper's settings (docs/method.md, "The target feature"): ResNet-50 IMAGENET1K_V1 with
    ``fc`` replaced by Identity (2048-d average-pool output, 224 px); ViT-H/14
    IMAGENET1K_SWAG_E2E_V1 with ``heads.head`` replaced by Identity (1280-d class token after
    the final LayerNorm, 518 px). ImageNet mean/std for both.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None = "DEFAULT",
        weights: str | None = None,
        layer: str | None = None,
        pool: str = "none",
        replace_with_identity: str | None = None,
        input_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or model_name, input_size, mean, std)
        model = _build(model_name, pretrained, weights, dict(model_kwargs or {}))
        if replace_with_identity:
            layers.replace_with_identity(model, replace_with_identity)
        self.network = layers.LayerFeatures(model, layer, pool)
        self.freeze()


def _build(model_name: str, pretrained: str | None, weights: str | None, kwargs: dict[str, Any]) -> nn.Module:
    """The model with its weights: a local state dict (strict), a torchvision weights enum, or random."""
    available = torchvision.models.list_models()
    if model_name not in available:
        raise ExtractorError(
            f"torchvision has no model '{model_name}'; closest: {layers.close_names(model_name, available)}"
        )
    what = f"torchvision {model_name}"
    if weights:
        file = require_file(weights, what)
        model = torchvision.models.get_model(model_name, weights=None, **kwargs)
        state = load_state_dict_file(file, what)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise WeightsUnavailableError(f"{what}: '{file}' does not fit the model: {error}") from error
        return model
    if not pretrained:
        log.warning("%s: no pretrained weights requested; the network is RANDOMLY INITIALISED", what)
        return torchvision.models.get_model(model_name, weights=None, **kwargs)
    enum = torchvision.models.get_model_weights(model_name)
    try:
        chosen = enum[pretrained]
    except KeyError:
        tags = [*enum.__members__]
        raise ExtractorError(
            f"{what} has no weights '{pretrained}'; closest: {layers.close_names(pretrained, tags)}"
        ) from None
    try:
        # Downloads into torch.hub's cache unless the file is already there.
        return torchvision.models.get_model(model_name, weights=chosen, **kwargs)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash or file a RuntimeError
        cached = _cache_file(chosen.url)
        raise WeightsUnavailableError(
            f"{what}: weights {chosen} are not in the cache ({cached}) and could not be downloaded "
            f"from {chosen.url} ({error}); download the file elsewhere and {HOW_TO_PASS}"
        ) from error


def _cache_file(url: str) -> Path:
    """Where torchvision keeps a downloaded weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def download(
    target: str, model_name: str, pretrained: str | None = None, weights: str | None = None, **_: Any
) -> Download | None:
    """The file loading this extractor downloads (None: a local file, random weights, or a bad name the
    loader reports)."""
    if weights or not pretrained or model_name not in torchvision.models.list_models():
        return None
    chosen = torchvision.models.get_model_weights(model_name).__members__.get(pretrained)
    if chosen is None:
        return None
    cached = _cache_file(chosen.url).is_file()
    return Download(chosen.url, cached, cached or reachable(chosen.url))
