"""Attribute measures: what an image has, as numbers, so that "the feature space keeps the colour but
not the pose" becomes a measurement (see `retention`).

Every measure maps a batch of images (N, 3, H, W) in [0, 1] to (N, k) values; two images differ in
an attribute by the Euclidean distance of their values. Pure: tensors in, tensors out. A user's
own measure is any function with that signature, named in an `attributes` config
(`fsa/conf/attributes/*.yaml`). Digits measures read white ink on black.
"""

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from fsa.errors import ConfigError

INK = 0.5  # luminance above which a digits pixel is ink
HUE_BINS = 12
LAYOUT = 8  # side of the downsampled luminance grid compared by `layout`


def luminance(images: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, H, W): Rec. 601 luma."""
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(1)


def brightness(images: Tensor) -> Tensor:
    """Mean luminance (N, 1)."""
    return luminance(images).flatten(1).mean(1, keepdim=True)


def contrast(images: Tensor) -> Tensor:
    """Standard deviation of the luminance (N, 1): RMS contrast."""
    return luminance(images).flatten(1).std(1, keepdim=True)


def colour(images: Tensor) -> Tensor:
    """Mean R, G, B and a saturation-weighted hue histogram of `HUE_BINS` bins (N, 3 + HUE_BINS); a
    grey image has an empty histogram."""
    r, g, b = images.unbind(1)
    high, low = images.max(1).values, images.min(1).values
    chroma = high - low
    safe = chroma.clamp_min(1e-8)
    hue = (
        torch.where(high == r, ((g - b) / safe) % 6, torch.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    )  # in [0, 1)
    bins = (hue * HUE_BINS).long().clamp(0, HUE_BINS - 1).flatten(1)
    weight = chroma.flatten(1)  # = saturation x value: grey pixels weigh nothing
    histogram = torch.zeros(len(images), HUE_BINS, dtype=images.dtype, device=images.device)
    histogram.scatter_add_(1, bins, weight)
    histogram = histogram / weight.sum(1, keepdim=True).clamp_min(1e-8) * (weight.sum(1, keepdim=True) > 0)
    return torch.cat([images.flatten(2).mean(2), histogram], dim=1)


def layout(images: Tensor) -> Tensor:
    """The luminance on a `LAYOUT` x `LAYOUT` grid, centred and scaled to unit norm (N, LAYOUT^2): the
    distance of two such vectors is sqrt(2 - 2 rho), rho their correlation."""
    grid = F.adaptive_avg_pool2d(luminance(images)[:, None], LAYOUT).flatten(1)
    grid = grid - grid.mean(1, keepdim=True)
    return grid / grid.norm(dim=1, keepdim=True).clamp_min(1e-8)


def edge_density(images: Tensor) -> Tensor:
    """The share of pixels whose Sobel gradient magnitude of the luminance exceeds 0.5 (N, 1)."""
    kernel = torch.tensor(
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype, device=images.device
    )
    y = F.pad(luminance(images)[:, None], (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(y, kernel.view(1, 1, 3, 3)), F.conv2d(y, kernel.t().reshape(1, 1, 3, 3))
    return ((gx.pow(2) + gy.pow(2)).sqrt() > 0.5).flatten(1).float().mean(1, keepdim=True)


def moments(images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The luminance's centre of mass (x, y) in image widths from the top left, and its central second
    moments mu20 (x), mu02 (y), mu11, per image."""
    mass = luminance(images)
    _, height, width = mass.shape
    total = mass.flatten(1).sum(1).clamp_min(1e-8)
    ys = (torch.arange(height, dtype=mass.dtype, device=mass.device) + 0.5) / width
    xs = (torch.arange(width, dtype=mass.dtype, device=mass.device) + 0.5) / width
    cx = (mass.sum(1) * xs).sum(1) / total
    cy = (mass.sum(2) * ys).sum(1) / total
    dx, dy = xs.view(1, 1, -1) - cx.view(-1, 1, 1), ys.view(1, -1, 1) - cy.view(-1, 1, 1)
    mu20 = (mass * dx.pow(2)).flatten(1).sum(1) / total
    mu02 = (mass * dy.pow(2)).flatten(1).sum(1) / total
    mu11 = (mass * dx * dy).flatten(1).sum(1) / total
    return cx, cy, mu20, mu02, mu11


def centre_of_mass(images: Tensor) -> Tensor:
    """Where the luminance's mass lies (N, 2): x, y in image widths from the top left."""
    cx, cy, *_ = moments(images)
    return torch.stack([cx, cy], dim=1)


def extent(images: Tensor) -> Tensor:
    """The luminance's spread about its centre (N, 1): sqrt(mu20 + mu02), in image widths."""
    _, _, mu20, mu02, _ = moments(images)
    return (mu20 + mu02).sqrt()[:, None]


def orientation(images: Tensor) -> Tensor:
    """The principal axis of the second moments as a 2-vector (N, 2): (mu20 - mu02, 2 mu11) / (mu20 +
    mu02), whose angle is twice the axis angle and whose length is the elongation (0: round)."""
    _, _, mu20, mu02, mu11 = moments(images)
    return torch.stack([mu20 - mu02, 2 * mu11], dim=1) / (mu20 + mu02).clamp_min(1e-8)[:, None]


def slant(images: Tensor) -> Tensor:
    """A digit's slant (N, 1): mu11 / mu02 of the ink, the horizontal shift per unit of height (the
    shear that deslanting undoes; positive leans the top to the left, as y grows downwards)."""
    _, _, _, mu02, mu11 = moments(images)
    return (mu11 / mu02.clamp_min(1e-8))[:, None]


def stroke_thickness(images: Tensor) -> Tensor:
    """A digit's stroke width in pixels (N, 1): 2 x ink area / ink perimeter, which is the width of a
    long stroke (area w L, perimeter about 2 L). Ink: luminance above `INK`."""
    ink = (luminance(images) > INK).float()
    padded = F.pad(ink, (1, 1, 1, 1))
    perimeter = (padded[:, 1:, :] - padded[:, :-1, :]).abs().flatten(1).sum(1) + (
        padded[:, :, 1:] - padded[:, :, :-1]
    ).abs().flatten(1).sum(1)
    return (2 * ink.flatten(1).sum(1) / perimeter.clamp_min(1.0))[:, None]


def size(images: Tensor) -> Tensor:
    """The ink's bounding box (N, 2): height and width in image widths (0 without ink)."""
    ink = luminance(images) > INK
    width = ink.shape[-1]

    def span(occupied: Tensor) -> Tensor:
        index = torch.arange(occupied.shape[1], device=occupied.device).expand_as(occupied)
        first = torch.where(occupied, index, occupied.shape[1]).min(1).values
        last = torch.where(occupied, index, -1).max(1).values
        return (last - first + 1).clamp_min(0).float() / width

    return torch.stack([span(ink.any(2)), span(ink.any(1))], dim=1)


def distances(generated: Tensor, targets: Tensor, measures: dict[str, Callable[[Tensor], Tensor]]) -> dict[str, Tensor]:
    """Per measure, the distance (N,) between each generated image and its target, both (N, 3, H, W)
    in [0, 1] at one size: the Euclidean distance of their measured values."""
    return {name: (measure(generated) - measure(targets)).flatten(1).norm(dim=1) for name, measure in measures.items()}


def load_measures(paths: dict[str, str]) -> dict[str, Callable[[Tensor], Tensor]]:
    """The measure functions named by dotted paths (`fsa.attributes.measures.slant`, or a user's own)."""
    found = {}
    for name, path in paths.items():
        module, _, function = path.rpartition(".")
        try:
            found[name] = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"attributes.measures.{name}: cannot import '{path}' ({error})") from error
        if not callable(found[name]):
            raise ConfigError(f"attributes.measures.{name}: '{path}' is not a function")
    return found
