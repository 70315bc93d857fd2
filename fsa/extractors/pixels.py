"""The pixels themselves as features: the extractor that keeps everything (retention's other extreme)."""

from torch import Tensor, nn

from fsa.extractors.base import FeatureExtractor

SIGNED = (0.5, 0.5, 0.5)  # normalised input = the image in [-1, 1]


class PixelExtractor(FeatureExtractor):
    """f(x) = the image's pixels in [-1, 1] at `input_size` (grey: the channel mean), flattened."""

    def __init__(self, input_size: int = 16, grey: bool = True, name: str = "pixels") -> None:
        super().__init__(name, input_size, SIGNED, SIGNED)
        self.grey = grey
        self.network = nn.Identity()  # no parameters: nothing to load or train
        self.freeze()

    def features(self, x: Tensor) -> Tensor:
        return x.mean(dim=1, keepdim=True) if self.grey else x
