"""Measures of a representation: pure functions of (N, D) tensors (Kadkhodaie et al., Secs. 2.2-2.5)."""

import math
from itertools import combinations

import numpy as np
import torch
from torch import Tensor


def participation_fraction(a: Tensor) -> Tensor:
    """The normalised participation ratio of each row of `a` (N, C) over its C channels, as Kadkhodaie
    et al. define it (Sec. 2.2): the squared ratio of the L1 and L2 norms over C, (sum |a_i|)^2 / (C sum
    a_i^2), in (0, 1]. 1: every channel equally active; 1/C: one channel carries it all. |a_i| lets it
    read signed values too (diffusers' blocks end without a ReLU); a row of zeros gives 0."""
    return a.abs().sum(1).pow(2) / a.pow(2).sum(1).clamp_min(1e-30) / a.shape[1]


def channel_selectivity(phi: Tensor) -> Tensor:
    """Each channel's participation ratio over the N images (Sec. 2.4): phi (N, C) -> (C,). Low: a
    selective channel, active on few images; high: a common one. NaN for a channel never active."""
    selectivity = participation_fraction(phi.T)
    return selectivity.masked_fill(phi.abs().amax(0) == 0, math.nan)


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient (g1^2 + 1) / (g2 + 3 (n - 1)^2 / ((n - 2)(n - 3))) of a sample,
    g1 and g2 the bias-corrected skewness and excess kurtosis. Above 5/9 (a uniform's value) suggests
    two modes; a normal gives 1/3. NaNs are dropped; NaN for fewer than 4 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 4 or x.std() == 0:
        return math.nan
    d = x - x.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    g1 = m3 / m2**1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    g2 = ((n + 1) * (m4 / m2**2 - 3) + 6) * (n - 1) / ((n - 2) * (n - 3))
    return float((g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def group_separations(points: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """For every pair of groups (clusters or classes) of `points` (N, D): the distance between their
    centroids over the square root of their average variance along the line joining the centroids
    (Kadkhodaie et al.'s Fig. 6, in units of standard deviation). Above 2: well separated."""
    members = [points[groups == g] for g in np.unique(groups)]
    centroids = [m.mean(0) for m in members]
    separations = []
    for i, j in combinations(range(len(members)), 2):
        line = centroids[j] - centroids[i]
        distance = float(np.linalg.norm(line))
        along = [(members[g] @ (line / distance)).var() for g in (i, j)]
        separations.append(distance / math.sqrt(max(float(np.mean(along)), 1e-30)))
    return np.array(separations)


def purity(groups: np.ndarray, labels: np.ndarray) -> float:
    """The share of items whose label is their group's commonest label (1: every group one class)."""
    return float(sum(np.unique(labels[groups == g], return_counts=True)[1].max() for g in np.unique(groups))) / len(
        labels
    )


def row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def neighbour_matches(features: Tensor, labels: Tensor) -> Tensor:
    """For each row, whether its nearest other row (Euclidean) has the same label (N,) bool."""
    distances = torch.cdist(features.double(), features.double())
    distances.fill_diagonal_(float("inf"))
    return labels[distances.argmin(dim=1)] == labels


def neighbour_agreement(features: Tensor, labels: Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour class agreement: the share of rows whose nearest other row
    (Euclidean) has the same label. Chance is about the share of the commonest class."""
    return float(neighbour_matches(features, labels).double().mean())
