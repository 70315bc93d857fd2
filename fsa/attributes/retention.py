"""Retention of an attribute by a feature space: how much closer guidance brings it to the target's
than unguided sampling from the same seeds does.

    retention = 1 - E[d(guided_i, target_i)] / E[d(unguided_i, target_i)]

over the samples i (the same targets and seeds in both runs), d an attribute's distance. 1: the
guided images have the target's attribute exactly (the feature space keeps it); 0: no closer than
chance (it ignores it); below 0: further than chance. The interval is a paired bootstrap over the
targets: each resample draws targets with replacement and keeps all of a target's samples, guided
and unguided, together (a target's samples share its image, so they are not independent draws).
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


def retention(
    guided: Tensor,
    unguided: Tensor,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    targets: Tensor | None = None,
) -> Retention:
    """`guided`, `unguided`: (N,) attribute distances to the target, sample i from the same seed in both;
    `targets`: (N,) each sample's target (None: every sample its own), the bootstrap's unit."""
    if guided.shape != unguided.shape or guided.ndim != 1 or len(guided) == 0:
        raise ValueError(
            f"retention needs paired (N,) distances, got {tuple(guided.shape)} and {tuple(unguided.shape)}"
        )
    guided, unguided = guided.double(), unguided.double()
    value = float(1 - guided.mean() / unguided.mean()) if unguided.mean() > 0 else float("nan")
    groups = torch.unique(targets, return_inverse=True)[1] if targets is not None else torch.arange(len(guided))
    count = int(groups.max()) + 1
    # Per target, the sums of its samples' distances: a resample of targets sums the picked targets' sums.
    guided_sums = torch.zeros(count, dtype=torch.double).index_add_(0, groups, guided)
    unguided_sums = torch.zeros(count, dtype=torch.double).index_add_(0, groups, unguided)
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(count, (resamples, count), generator=generator)
    chance = unguided_sums[picks].sum(1)
    resampled = 1 - guided_sums[picks].sum(1) / chance
    resampled = resampled[chance > 0]
    tail = (1 - level) / 2
    if len(resampled) == 0:
        return Retention(value, float("nan"), float("nan"), len(guided))
    low, high = torch.quantile(resampled, torch.tensor([tail, 1 - tail], dtype=resampled.dtype)).tolist()
    return Retention(value, low, high, len(guided))
