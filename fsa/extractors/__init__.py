"""Target feature extractors f: one small class per family, each frozen, each (B, 3, S, S) -> (B, D)."""

from fsa.errors import ExtractorError, WeightsUnavailableError
from fsa.extractors.base import FeatureExtractor
from fsa.extractors.layers import LayerFeatures
from fsa.extractors.openclip_models import OpenCLIPExtractor
from fsa.extractors.timm_models import TimmExtractor
from fsa.extractors.tiny import TinyExtractor
from fsa.extractors.torchvision_models import TorchvisionExtractor

__all__ = [
    "ExtractorError",
    "FeatureExtractor",
    "LayerFeatures",
    "OpenCLIPExtractor",
    "TimmExtractor",
    "TinyExtractor",
    "TorchvisionExtractor",
    "WeightsUnavailableError",
]
