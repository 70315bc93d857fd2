"""The shape of an image's cloud of seeds emb(x) (Asperti et al., Sect. 5.1): its principal
components, moves along them, convex combinations of its seeds, and interpolation. Pure tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Principal:
    """PCA of a cloud of N seeds of D values: the mean, the variances along the components (largest
    first; at most N - 1 are non-zero) and the components as unit rows (N - 1 of them at most)."""

    mean: Tensor  # (D,)
    variances: Tensor  # (K,)
    components: Tensor  # (K, D)


def principal_components(seeds: Tensor) -> Principal:
    """`seeds` (N, ...) flattened to (N, D); the unbiased covariance's eigen-decomposition by SVD."""
    flat = seeds.flatten(1).double()
    mean = flat.mean(0)
    _, singular, right = torch.linalg.svd(flat - mean, full_matrices=False)
    keep = min(flat.shape[0] - 1, flat.shape[1])
    variances = singular[:keep] ** 2 / (flat.shape[0] - 1)
    return Principal(mean.float(), variances.float(), right[:keep].float())


def along_components(principal: Principal, which: list[int], factors: list[float]) -> Tensor:
    """Seeds mean + f * v_i for each component i in `which` and factor f: (len(which) * len(factors), D)."""
    moves = [principal.mean + f * principal.components[i] for i in which for f in factors]
    return torch.stack(moves)


def convex_combinations(seeds: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """`count` random points inside the cloud: weights drawn uniformly from the simplex (Dirichlet(1),
    as normalised exponentials), so each is a convex combination of all the seeds (the paper's Fig. 12)."""
    weights = -torch.rand(count, seeds.shape[0], generator=generator).log()
    weights = weights / weights.sum(1, keepdim=True)
    return (weights @ seeds.flatten(1)).reshape(count, *seeds.shape[1:])


def interpolate(start: Tensor, end: Tensor, steps: int) -> Tensor:
    """`steps` points from `start` to `end` (both included), linearly: (steps, ...)."""
    fractions = torch.linspace(0.0, 1.0, steps, dtype=start.dtype, device=start.device)
    shape = (steps,) + (1,) * start.dim()
    return start[None] + fractions.reshape(shape) * (end - start)[None]
