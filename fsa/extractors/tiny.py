"""A tiny random CNN as f: the whole pipeline runs in seconds on a CPU, with no weights to fetch."""

import logging

import torch
from torch import nn

from fsa.errors import WeightsUnavailableError
from fsa.extractors.base import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from fsa.weights import load_state_dict_file, require_file

log = logging.getLogger("fsa.extractors")


class TinyExtractor(FeatureExtractor):
    """Two convolutions, global average pool and a linear map, randomly initialised from ``seed``
    (or loaded from ``weights``, a state dict of this network).

    For tests and debugging only: its features are random projections of the image, so what
    guidance towards them preserves says nothing about any trained network.
    """

    def __init__(
        self,
        seed: int = 0,
        feature_dim: int = 32,
        input_size: int = 32,
        weights: str | None = None,
        name: str = "tiny",
    ) -> None:
        super().__init__(name, input_size, IMAGENET_MEAN, IMAGENET_STD)
        with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's random state
            torch.manual_seed(seed)
            self.network = nn.Sequential(
                nn.Conv2d(3, 16, kernel_size=3, padding=1),
                nn.GELU(),
                nn.Conv2d(16, 32, kernel_size=3, stride=2, padding=1),
                nn.GELU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(32, feature_dim),
            )
        if weights:  # e.g. a copy saved from another run; still not a trained network
            file = require_file(weights, "tiny extractor")
            try:
                self.network.load_state_dict(load_state_dict_file(file, "tiny extractor"))
            except RuntimeError as error:
                raise WeightsUnavailableError(f"tiny extractor: '{file}' does not fit: {error}") from error
        log.warning(
            "TinyExtractor: RANDOM features (seed %d, weights %s); results are meaningless, "
            "for tests and debugging only",
            seed,
            weights,
        )
        self.freeze()
