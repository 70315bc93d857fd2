"""fsa's embedded CNN digit classifiers; a penultimate layer is the feature space under analysis.

The plain CNN is trained by `scripts/train_digits_cnn.py` on the digits training split. Generated
images reach it through the same virtual save as the big extractors (0..255, straight-through
rounding, mean/std).

The others have a planted invariance: feature spaces whose answer is known, so that fsa's attribute
retention (docs/attributes.md) can be checked to find exactly what was built in. Each sees its input
through a normaliser that removes one attribute, or is built or trained so that the attribute cannot
reach its features:

- translation: stride-1 convolutions with circular padding, then a global maximum over positions. A
  cyclic shift of the input shifts every feature map, which the maximum does not see: f(roll(x)) = f(x)
  exactly, for whole-pixel shifts.
- slant: the ink is sheared upright by its own second moments before the CNN (the classic deskewing),
  so any horizontal shear of the input gives the same features, up to resampling.
- thickness and contrast: no normaliser; the CNN is trained to map a dilated or eroded digit, or one
  with fainter ink, to the features of the original (scripts/train_digits_invariant.py). Learned,
  hence approximate. (A contrast stretch before the CNN was tried: guidance then drives the images
  to saturated noise whose stretched version the CNN mistakes for the target.)

Their weights, fsa/assets/digits/invariant/<kind>.safetensors, are trained by
scripts/train_digits_invariant.py.
"""

from pathlib import Path

import torch
from torch import Tensor, nn

from fsa import ASSETS_DIR
from fsa.attributes.measures import moments
from fsa.errors import ExtractorError, WeightsUnavailableError
from fsa.extractors.base import HALF, FeatureExtractor
from fsa.weights import load_state_dict_file, require_file

DEFAULT_WEIGHTS = ASSETS_DIR / "digits" / "cnn.safetensors"
INVARIANCES = ("translation", "slant", "thickness", "contrast")


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


def _ink(x: Tensor) -> Tensor:
    """Normalised input (B, C, H, W) in [-1, 1] -> grey ink (B, 1, H, W) in [0, 1]."""
    return (x.mean(dim=1, keepdim=True) + 1) / 2


def deslant(x: Tensor) -> Tensor:
    """Shift each row of each image horizontally by s (v - c_y) pixels, s its slant (mu11 / mu02 of
    the ink, the `slant` attribute), v the row and c_y the centre of mass: the image sheared upright.
    (B, C, H, W) in [-1, 1] -> (B, 1, H, W) in [-1, 1], differentiable in x.

    The rows are shifted by their Fourier phase (a cyclic shift by any real number of pixels), not
    resampled: shifts compose exactly and keep each row's mass, so c_y stays and the slant of the
    sheared image is s plus the shear. Hence deslant(shear(x)) = deslant(x) for these shears, to
    0.5 % while no ink wraps round the border (the Nyquist frequency, which cannot carry a
    fractional shift, is dropped).
    """
    ink = _ink(x)
    height, width = ink.shape[-2:]
    _, cy, _, mu02, mu11 = moments(ink.expand(-1, 3, -1, -1))
    slope = mu11 / mu02.clamp_min(1e-8)
    rows = (torch.arange(height, dtype=x.dtype, device=x.device) + 0.5) / width  # image widths, as cy
    shift = slope[:, None] * (rows - cy[:, None]) * width  # (B, H) pixels to the left
    frequencies = torch.fft.rfftfreq(width, device=x.device)
    phase = torch.polar(torch.ones_like(shift[..., None]), 2 * torch.pi * frequencies * shift[..., None])
    spectrum = torch.fft.rfft(ink, dim=-1)
    if width % 2 == 0:  # the Nyquist bin cannot carry a fractional shift in a real signal: drop it
        spectrum = torch.cat([spectrum[..., :-1], torch.zeros_like(spectrum[..., -1:])], dim=-1)
    upright = torch.fft.irfft(spectrum * phase[:, None], n=width, dim=-1)
    return upright * 2 - 1


class PooledDigitsCNN(nn.Module):
    """Four stride-1 3x3 convolutions with circular padding (dilations 1, 1, 2, 4: a 17 px receptive
    field, the whole 16 px digit), a global maximum over positions, a `feature_dim`-wide penultimate
    layer and 10 logits. Exactly invariant to whole-pixel cyclic shifts."""

    def __init__(self, feature_dim: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for inputs, outputs, dilation in ((1, 32, 1), (32, 64, 1), (64, 64, 2), (64, 64, 4)):
            layers += [nn.Conv2d(inputs, outputs, 3, padding=dilation, dilation=dilation, padding_mode="circular")]
            layers += [nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        """Normalised (B, C, 16, 16) grey images -> (B, feature_dim)."""
        return self.body(x.mean(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class InvariantDigitsCNN(nn.Module):
    """A digit classifier with one planted invariance (`kind`, one of `INVARIANCES`); its features
    are the penultimate layer, as for `DigitsCNN`."""

    def __init__(self, kind: str, feature_dim: int = 64) -> None:
        super().__init__()
        if kind not in INVARIANCES:
            raise ExtractorError(f"extractor.invariance must be one of {', '.join(INVARIANCES)}, got '{kind}'")
        self.kind = kind
        self.network = PooledDigitsCNN(feature_dim) if kind == "translation" else DigitsCNN(feature_dim)

    @property
    def head(self) -> nn.Linear:
        return self.network.head

    def normalise(self, x: Tensor) -> Tensor:
        """The input as the network sees it: deslanted for `slant`, as it is for the others."""
        if self.kind == "slant":
            return deslant(x)
        return x

    def features(self, x: Tensor) -> Tensor:
        return self.network.features(self.normalise(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def default_weights(invariance: str | None = None) -> Path:
    """The shipped weights of the plain CNN, or of the one with a planted `invariance`."""
    return DEFAULT_WEIGHTS if invariance is None else ASSETS_DIR / "digits" / "invariant" / f"{invariance}.safetensors"


class DigitsCNNExtractor(FeatureExtractor):
    """The CNN's penultimate layer as f (input 16 px, grey, mean/std 0.5). With `invariance`, one of
    the classifiers with a planted invariance (`InvariantDigitsCNN`)."""

    def __init__(
        self,
        weights: str | None = None,
        feature_dim: int = 64,
        name: str = "digits_cnn",
        invariance: str | None = None,
    ) -> None:
        super().__init__(name, 16, HALF, HALF)
        self.classifier = DigitsCNN(feature_dim) if invariance is None else InvariantDigitsCNN(invariance, feature_dim)
        what = "digits CNN" if invariance is None else f"digits CNN ({invariance}-invariant)"
        file = require_file(weights or default_weights(invariance), what)
        try:
            self.classifier.load_state_dict(load_state_dict_file(file, what))
        except RuntimeError as error:
            raise WeightsUnavailableError(f"{what}: '{file}' does not fit this network: {error}") from error
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        return self.classifier.features(x)

    @torch.no_grad()
    def classify(self, x: Tensor) -> Tensor:
        """Class probabilities (B, 10) of normalised inputs: the CNN's own opinion, not the oracle's."""
        return self.classifier(x).softmax(dim=1)
