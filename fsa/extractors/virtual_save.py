"""The paper's "virtual image save" (Sec. III-A, footnote 5).

The decoder's image is turned into what saving it as an 8-bit file and reading it back
would give, while keeping the computation graph: rounding uses the straight-through
estimator (forward: round, backward: identity). As in the authors' code there is no
clamp to [0, 255] and the tensor resize is bicubic without antialiasing.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through)."""
    return x + (torch.round(x) - x).detach()


def virtual_save(image: Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Decoder output (B, 3, H, W), roughly in [-1, 1] -> normalised extractor input (B, 3, size, size).

    (x + 1) / 2 * 255 -> STE round -> bicubic resize (no antialias) -> STE round -> / 255
    -> (x - mean) / std. No centre crop (generated images are square) and no clamp.
    """
    x = ste_round((image + 1) / 2 * 255)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=False)
    x = ste_round(x) / 255
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean_t) / std_t
