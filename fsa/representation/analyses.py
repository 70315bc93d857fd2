"""Kadkhodaie et al.'s analyses of one block's representation phi (N, C) of N labelled images: each
channel's selectivity and the shape of its distribution (Sec. 2.4, Fig. 3), the images that most
activate the most selective channels (Fig. 4), and K-means clusters, their separation and their
class purity against the classes' own separation (Sec. 2.5, Fig. 6). Pure functions of arrays; every
figure with its 95 % interval, by a bootstrap over the images (`fsa.intervals`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans

from fsa.intervals import percentile_interval, row_bootstrap, wilson_interval
from fsa.representation.measures import bimodality_coefficient, channel_selectivity, group_separations, purity

CLUSTER_RESAMPLES = 200  # each resample fits K-means again
SEPARATED = 2.0  # standard deviations between centroids: the paper's "well separated"
GAUSSIAN_DRAWS = 20  # clouds without clusters, for the separation K-means finds anyway


@dataclass
class Selectivity:
    """Sec. 2.4: each channel's participation ratio over the images, its distribution's bimodality
    coefficient, and the top images of the most selective channels."""

    per_channel: np.ndarray  # (C,); NaN: a channel never active on these images
    bimodality: float
    bimodality_interval: list[float]
    channels: list[int]  # the most selective channels active (> 0) on at least k images, most selective first
    top: np.ndarray  # (len(channels), k): the images that activate each most, strongest first
    top_share: float  # share of those images that are of their channel's commonest class
    top_share_interval: list[float] | None
    chance_share: float  # the same share for k images drawn at random


def selectivity(phi: np.ndarray, labels: np.ndarray, shown: int, k: int, seed: int = 0) -> Selectivity:
    """Each channel's selectivity; the `k` top images of the `shown` most selective channels among those
    active on k images at least (a channel active on one image would show it and k - 1 images it ignores)."""

    def per_channel(rows: np.ndarray) -> np.ndarray:
        return channel_selectivity(torch.from_numpy(phi[rows])).numpy()

    values = per_channel(np.arange(len(phi)))
    resampled = row_bootstrap(len(phi), lambda rows: bimodality_coefficient(per_channel(rows)), seed=seed)
    shows_k = np.flatnonzero(np.isfinite(values) & ((phi > 0).sum(0) >= k))  # k images to show, all active
    channels = [int(c) for c in shows_k[np.argsort(values[shows_k], kind="stable")][:shown]]
    top = np.argsort(-phi[:, channels], axis=0, kind="stable")[:k].T
    matches = sum(modal_count(labels[row]) for row in top)
    rng = np.random.default_rng(seed)
    chance = np.mean([modal_count(rng.choice(labels, size=k, replace=False)) for _ in range(2000)]) / k
    return Selectivity(
        values,
        bimodality_coefficient(values),
        percentile_interval(resampled),
        channels,
        top,
        matches / top.size if top.size else float("nan"),
        wilson_interval(matches, top.size),
        float(chance),
    )


def modal_count(labels: np.ndarray) -> int:
    """How many of `labels` are the commonest one."""
    return int(np.unique(labels, return_counts=True)[1].max())


@dataclass
class Clusters:
    """Sec. 2.5: K-means on phi; centroid separations (in standard deviations along the line joining
    two centroids) of the clusters and of the classes; the clusters' class purity."""

    k: int
    assignment: np.ndarray  # (N,) cluster of each image
    cluster_separations: np.ndarray  # (k (k - 1) / 2,)
    class_separations: np.ndarray
    figures: dict[str, float]  # purity; share of pairs >= SEPARATED and median, for both; the medians' gap;
    # gaussian_median: the median separation of K-means clusters in a Gaussian cloud of phi's covariance
    intervals: dict[str, list[float]]


def clusters(phi: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> Clusters:
    """K-means with `k` clusters (10 initialisations, seeded) on phi, against the labels' classes."""

    def fit(points: np.ndarray, n_init: int) -> np.ndarray:
        return KMeans(k, n_init=n_init, random_state=seed).fit_predict(points)

    def figures(assignment: np.ndarray, classes: np.ndarray, by_cluster: np.ndarray, by_class: np.ndarray) -> list:
        medians = float(np.median(by_cluster)), float(np.median(by_class))
        separated = float((by_cluster >= SEPARATED).mean()), float((by_class >= SEPARATED).mean())
        return [
            purity(assignment, classes),
            separated[0],
            medians[0],
            separated[1],
            medians[1],
            medians[0] - medians[1],
        ]

    def resampled(rows: np.ndarray) -> list:
        points, classes = phi[rows], labels[rows]
        assignment = fit(points, 1)  # one initialisation per draw: the draws are many
        return figures(assignment, classes, group_separations(points, assignment), group_separations(points, classes))

    names = ["purity", "clusters_separated", "clusters_median", "classes_separated", "classes_median", "median_gap"]
    draws = row_bootstrap(len(phi), resampled, CLUSTER_RESAMPLES, seed)
    assignment = fit(phi, 10)
    by_cluster, by_class = group_separations(phi, assignment), group_separations(phi, labels)
    found = dict(zip(names, figures(assignment, labels, by_cluster, by_class), strict=True))
    gaussian = gaussian_separation(phi, k, seed)
    found["gaussian_median"] = float(gaussian.mean())
    intervals = {name: percentile_interval(draws[:, i]) for i, name in enumerate(names)}
    intervals["gaussian_median"] = percentile_interval(gaussian)  # the spread of structureless clouds
    return Clusters(k, assignment, by_cluster, by_class, found, intervals)


def gaussian_separation(phi: np.ndarray, k: int, seed: int = 0, draws: int = GAUSSIAN_DRAWS) -> np.ndarray:
    """The median separation K-means finds in clouds with no clusters, one per cloud: N points from a
    Gaussian of phi's mean and covariance, k clusters, `draws` clouds. K-means cuts even such a cloud
    into parts whose centroids stand several standard deviations apart along the lines joining them,
    so these, not 2, are the separations that say whether clusters are there."""
    rng = np.random.default_rng(seed)
    mean, covariance = phi.mean(0), np.cov(phi, rowvar=False)
    medians = []
    for _ in range(draws):
        cloud = rng.multivariate_normal(mean, covariance, size=len(phi), method="eigh")
        medians.append(np.median(group_separations(cloud, KMeans(k, n_init=3, random_state=seed).fit_predict(cloud))))
    return np.array(medians)
