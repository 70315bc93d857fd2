"""fsa's embedded CNN digit classifier; its penultimate layer is the feature space under analysis.

Trained by `scripts/train_digits_cnn.py` on the digits training split. Generated images reach it
through the same virtual save as the big extractors (0..255, straight-through rounding, mean/std).
"""

import torch
from torch import Tensor, nn

from fsa import ASSETS_DIR
from fsa.errors import WeightsUnavailableError
from fsa.extractors.base import HALF, FeatureExtractor
from fsa.weights import load_state_dict_file, require_file

DEFAULT_WEIGHTS = ASSETS_DIR / "digits" / "cnn.safetensors"


class DigitsCNN(nn.Module):
    """Two conv blocks (16 -> 8 -> 4 px), a `feature_dim`-wide penultimate layer, 10 logits."""

    def __init__(self, feature_dim: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, 16, 16) grey images (all channels equal) -> (B, feature_dim)."""
        return self.body(x.mean(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class DigitsCNNExtractor(FeatureExtractor):
    """The CNN's penultimate layer as f (input 16 px, grey, mean/std 0.5)."""

    def __init__(self, weights: str | None = None, feature_dim: int = 64, name: str = "digits_cnn") -> None:
        super().__init__(name, 16, HALF, HALF)
        self.classifier = DigitsCNN(feature_dim)
        file = require_file(weights or DEFAULT_WEIGHTS, "digits CNN")
        try:
            self.classifier.load_state_dict(load_state_dict_file(file, "digits CNN"))
        except RuntimeError as error:
            raise WeightsUnavailableError(f"digits CNN: '{file}' does not fit this network: {error}") from error
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)

    @torch.no_grad()
    def classify(self, x: Tensor) -> Tensor:
        """Class probabilities (B, 10) of normalised inputs: the CNN's own opinion, not the oracle's."""
        return self.classifier(x).softmax(dim=1)
