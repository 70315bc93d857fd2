"""Retention of an attribute by a feature space: how much closer guidance brings it to the target's
than unguided sampling from the same seeds does.

    retention = 1 - E[d(guided_i, target_i)] / E[d(unguided_i, target_i)]

over the samples i (the same targets and seeds in both runs), d an attribute's distance. 1: the
guided images have the target's attribute exactly (the feature space keeps it); 0: no closer than
chance (it ignores it); below 0: further than chance. The interval is a paired bootstrap over the
samples: each resample draws samples with replacement and keeps each guided-unguided pair together.
"""

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Retention:
    value: float
    low: float  # the bootstrap interval's lower end
    high: float
    samples: int


def retention(guided: Tensor, unguided: Tensor, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Retention:
    """`guided`, `unguided`: (N,) attribute distances to the target, sample i from the same seed in both."""
    if guided.shape != unguided.shape or guided.ndim != 1 or len(guided) == 0:
        raise ValueError(
            f"retention needs paired (N,) distances, got {tuple(guided.shape)} and {tuple(unguided.shape)}"
        )
    guided, unguided = guided.double(), unguided.double()
    value = float(1 - guided.mean() / unguided.mean()) if unguided.mean() > 0 else float("nan")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(guided), (resamples, len(guided)), generator=generator)
    chance = unguided[picks].mean(1)
    resampled = 1 - guided[picks].mean(1) / chance
    resampled = resampled[chance > 0]
    tail = (1 - level) / 2
    if len(resampled) == 0:
        return Retention(value, float("nan"), float("nan"), len(guided))
    low, high = torch.quantile(resampled, torch.tensor([tail, 1 - tail], dtype=resampled.dtype)).tolist()
    return Retention(value, low, high, len(guided))
