"""The target feature extractor f: one frozen network plus how images reach it."""

from collections.abc import Sequence

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2 as T

from fsa.errors import ExtractorError, WeightsUnavailableError
from fsa.extractors.virtual_save import virtual_save

__all__ = ["ExtractorError", "FeatureExtractor", "WeightsUnavailableError", "features_of"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)  # as mean and std: the normalised input is the image in [-1, 1]


class FeatureExtractor(nn.Module):
    """A frozen feature extractor f with its input size and normalisation.

    Subclasses set ``self.network`` (an ``nn.Module`` mapping a normalised
    (B, 3, S, S) batch to features) or override :meth:`features`.
    Features are always returned flattened to (B, D) in fp32.
    """

    supports_text: bool = False

    def __init__(self, name: str, input_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.name = name
        self.input_size = int(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._feature_dim: int | None = None

    def freeze(self) -> "FeatureExtractor":
        """No parameter gradients and inference-mode layers: the gradient flows only to the input."""
        self.eval()
        self.requires_grad_(False)
        return self

    def features(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, S, S) input -> raw network output."""
        return self.network(x)

    def forward(self, x: Tensor) -> Tensor:
        """Normalised (B, 3, S, S) input -> features (B, D) in fp32."""
        return self.features(x).flatten(1).float()

    @property
    def feature_dim(self) -> int:
        """Size D of the feature vector, found once by a forward pass on a blank input."""
        if self._feature_dim is None:
            param = next(self.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
            with torch.no_grad():
                probe = torch.zeros(1, 3, self.input_size, self.input_size, device=device)
                self._feature_dim = int(self(probe).shape[1])
        return self._feature_dim

    def preprocess_image(self, image: Image.Image) -> Tensor:
        """An actual image -> normalised (3, S, S), as the authors prepared f_s.

        PIL's own (antialiased) bicubic resize of the shorter side to S, centre crop S x S,
        scale to [0, 1], mean/std normalisation (CLIP's and torchvision's own transforms).
        """
        transform = T.Compose(
            [
                T.Resize(self.input_size, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                T.CenterCrop(self.input_size),
                T.PILToTensor(),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )
        return transform(image.convert("RGB"))

    def prepare_generated(self, image: Tensor) -> Tensor:
        """Decoder output (B, 3, H, W) in about [-1, 1] -> normalised input, differentiably (virtual save)."""
        return virtual_save(image, self.input_size, self.mean, self.std)

    def encode_text(self, captions: list[str]) -> Tensor:
        """Captions -> text features (B, D) in fp32; only CLIP-family extractors have a text tower."""
        raise ExtractorError(
            f"extractor '{self.name}' has no text encoder: caption targets need a CLIP-family "
            "extractor (extractor=clip_rn50 or extractor=openclip)"
        )


@torch.no_grad()
def features_of(extractor: FeatureExtractor, images: Sequence[Image.Image], batch_size: int = 64) -> Tensor:
    """Features (N, D) of actual images, each prepared as f_s is (`preprocess_image`), on the CPU."""
    device = next(extractor.parameters(), torch.empty(0)).device
    found = []
    for i in range(0, len(images), batch_size):
        batch = torch.stack([extractor.preprocess_image(image) for image in images[i : i + batch_size]])
        found.append(extractor(batch.to(device)).float().cpu())
    return torch.cat(found) if found else torch.empty(0)
