"""timm models as f: any of timm's architectures and pretrained tags, any layer."""

import logging
from typing import Any

import timm
from timm.data import resolve_data_config

from fsa.errors import ExtractorError, WeightsUnavailableError
from fsa.extractors import layers
from fsa.extractors.base import FeatureExtractor
from fsa.hub import fail_fast_offline, hub_cached, hub_downloads
from fsa.weights import HOW_TO_PASS, Download, require_file

log = logging.getLogger("fsa.extractors")


class TimmExtractor(FeatureExtractor):
    """A timm model's output (or a named layer's, optionally pooled) as the feature.

    Input size and mean/std come from the model's pretrained config, as timm evaluates it
    (the crop is the base class's resize + centre crop, not timm's ``crop_pct``). ``model_kwargs``
    go to ``timm.create_model``; ``{"num_classes": 0}`` gives the pooled pre-logits feature.
    """

    def __init__(
        self,
        model_name: str,
        pretrained: bool = True,
        weights: str | None = None,
        layer: str | None = None,
        pool: str = "none",
        model_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        model = _build(model_name, pretrained, weights, dict(model_kwargs or {}))
        config = resolve_data_config({}, model=model)
        _, height, width = config["input_size"]
        if height != width:
            raise ExtractorError(f"timm {model_name}: non-square input {height}x{width} is not supported")
        super().__init__(name or model_name, height, config["mean"], config["std"])
        self.network = layers.LayerFeatures(model, layer, pool)
        self.freeze()


def _build(model_name: str, pretrained: bool, weights: str | None, kwargs: dict[str, Any]) -> Any:
    """The model with its weights: a local file (strict, through timm's own checkpoint filters), the hub, or random."""
    if not timm.is_model(model_name):
        raise ExtractorError(
            f"timm has no model '{model_name}'; closest: {layers.close_names(model_name, timm.list_models())}"
        )
    what = f"timm {model_name}"
    if weights:
        file = require_file(weights, what)
        try:
            return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise WeightsUnavailableError(f"{what}: cannot load '{file}' into the model: {error}") from error
    if not pretrained:
        log.warning("%s: pretrained=false; the network is RANDOMLY INITIALISED", what)
        return timm.create_model(model_name, pretrained=False, **kwargs)
    if not timm.is_model_pretrained(model_name):
        raise WeightsUnavailableError(f"{what}: timm has no pretrained weights for this model; {HOW_TO_PASS}")
    try:
        with fail_fast_offline():
            return timm.create_model(model_name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as error:  # the hub's "not cached and offline" is an OSError
        source = timm.models.get_pretrained_cfg(model_name)
        where = getattr(source, "hf_hub_id", None) or getattr(source, "url", None) or "timm's hub"
        raise WeightsUnavailableError(
            f"{what}: pretrained weights are not cached and could not be downloaded from {where} "
            f"({type(error).__name__}: {error}); download them elsewhere and {HOW_TO_PASS}"
        ) from error


def download(
    target: str, model_name: str, pretrained: bool = True, weights: str | None = None, **_: Any
) -> Download | None:
    """The hub repository loading this extractor downloads from (None where timm's config names none)."""
    if weights or not pretrained or not timm.is_model(model_name) or not timm.is_model_pretrained(model_name):
        return None
    repo = getattr(timm.models.get_pretrained_cfg(model_name), "hf_hub_id", None)
    if not repo:
        return None
    in_cache = hub_cached(repo, "model.safetensors", "pytorch_model.bin")
    return Download(repo, in_cache, in_cache or hub_downloads())
