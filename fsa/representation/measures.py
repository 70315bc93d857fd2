"""Measures of a representation: pure functions of (N, D) tensors."""

import torch
from torch import Tensor


def participation_fraction(a: Tensor) -> Tensor:
    """The participation ratio (sum a_i^2)^2 / sum a_i^4 of each row of `a` (N, C) over its C channels:
    the effective number of active channels as a fraction of C. 1: every channel equally active; 1/C:
    one channel carries it all. Written for signed values (diffusers' blocks end without a ReLU)."""
    squares = a.pow(2)
    return squares.sum(1).pow(2) / squares.pow(2).sum(1).clamp_min(1e-30) / a.shape[1]


def row_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of each row of `a` with the same row of `b`."""
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def neighbour_agreement(features: Tensor, labels: Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour class agreement: the share of rows whose nearest other row
    (Euclidean) has the same label. Chance is about the share of the commonest class."""
    distances = torch.cdist(features.double(), features.double())
    distances.fill_diagonal_(float("inf"))
    nearest = distances.argmin(dim=1)
    return float((labels[nearest] == labels).double().mean())
