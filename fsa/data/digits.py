"""scikit-learn's handwritten digits: the data behind fsa's embedded models, which work on any machine.

1,797 grey 8x8 images with values 0..16, split once into a training and a held-out test split
(stratified, seeded). No model trains on the test split. Images are upsampled to 16x16 with
bilinear interpolation and scaled to [0, 1].
"""

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fsa.data.targets import Target, TargetError, TargetTransform, check_limit, targets_from_images
from fsa.extractors.base import FeatureExtractor

IMAGE_SIZE = 16
SPLITS = ("train", "test")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@lru_cache(maxsize=2)
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in SPLITS:
        raise TargetError(f"digits split must be one of {SPLITS}, got '{split}'")
    pixels, labels = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        pixels, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return (train_x, train_y) if split == "train" else (test_x, test_y)


def digits_images(split: str) -> tuple[Tensor, Tensor]:
    """(N, 1, 16, 16) images in [0, 1] and their (N,) labels."""
    pixels, labels = _split(split)
    x = torch.from_numpy(pixels).float().view(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0), torch.from_numpy(labels).long()


def as_pil(image: Tensor) -> Image.Image:
    """(1, H, W) in [0, 1] -> an 8-bit RGB PIL image, as if saved to a file (grey in all three channels)."""
    pixels = (image[0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="L").convert("RGB")


class DigitsTargets:
    """Held-out digits as targets: `per_class` test images of each class after its first `skip`, with
    their labels (skip=1 gives a second set of targets, disjoint from the default one).

    The images go through the extractor's actual-image path (8-bit file, preprocess_image), as any
    photograph would; their labels let an oracle judge the generated images.
    """

    def __init__(
        self,
        split: str = "test",
        per_class: int = 1,
        limit: int | None = None,
        scale: float = 1.0,
        norm: float | None = None,
        skip: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise TargetError(f"digits split must be one of {SPLITS}, got '{split}'")
        if per_class < 1 or skip < 0:
            raise TargetError(f"per_class must be >= 1 and skip >= 0, got {per_class}, {skip}")
        self.split, self.per_class, self.skip, self.limit = split, per_class, skip, check_limit(limit)
        self.transform = TargetTransform(scale=scale, norm=norm)

    def indices(self) -> list[int]:
        """Round-robin over classes 0..9 (so a limit keeps the classes balanced), in split order."""
        _, labels = _split(self.split)
        by_class = [np.flatnonzero(labels == c)[self.skip : self.skip + self.per_class].tolist() for c in range(10)]
        order = [by_class[c][i] for i in range(self.per_class) for c in range(10) if i < len(by_class[c])]
        return order[: self.limit]

    def load(self, extractor: FeatureExtractor) -> list[Target]:
        images, labels = digits_images(self.split)
        chosen = self.indices()
        named = [(f"{int(labels[i])}_{self.split}{i}", f"digits/{self.split}[{i}]", as_pil(images[i])) for i in chosen]
        return targets_from_images(extractor, named, self.transform, [int(labels[i]) for i in chosen])
