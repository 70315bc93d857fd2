"""The pixels themselves as features: the extractor that keeps everything (retention's other extreme)."""

from torch import Tensor

from fsa.extractors.base import HALF, FeatureExtractor


class PixelExtractor(FeatureExtractor):
    """f(x) = the image's pixels in [-1, 1] at `input_size` (grey: the channel mean), flattened.
    It has no parameters: nothing to load or train."""

    def __init__(self, input_size: int = 16, grey: bool = True, name: str = "pixels") -> None:
        super().__init__(name, input_size, HALF, HALF)
        self.grey = grey
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        return x.mean(dim=1, keepdim=True) if self.grey else x
