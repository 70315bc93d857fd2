"""Target features f_s: the points in feature space that guided diffusion is asked to reach.

A target comes from an actual image, a caption (CLIP's text tower, the paper's Fig. 8), a saved
feature file, or one of the photographs bundled with scikit-image (the default, so a fresh
machine without network has real targets). Each source is a small class built by Hydra from the
`dataset` config group; cheap argument checks run in the constructor, so a bad path fails before
any diffusion model loads, and :meth:`load` computes the features with the chosen extractor.
"""

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from fsa.data import paper15
from fsa.errors import ExtractorError as _FsaExtractorError
from fsa.errors import FsaError
from fsa.extractors.base import ExtractorError, FeatureExtractor

if TYPE_CHECKING:
    from fsa.diffusion.backbones import DiffusionBackbone

logger = logging.getLogger("fsa.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Colour photographs shipped inside the scikit-image wheel (no download needed).
SKIMAGE_PHOTOS = (
    "astronaut",
    "cat",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)
DEFAULT_SKIMAGE_NAMES = ("astronaut", "chelsea", "coffee", "rocket")
_BATCH = 8  # images per forward pass: bounded memory even for ViT-H/14 at 518 px
MAX_UPSCALE = 4  # an image's shorter side may be at most this many times smaller than the extractor's input


class TargetError(FsaError, ValueError):
    """A target cannot be built: bad path, unreadable file, wrong feature size, NaN, ..."""


@dataclass
class Target:
    """One target feature f_s and where it came from.

    ``feature`` is a (D,) fp32 CPU tensor (the guide task moves it to its device). ``image`` is the
    actual image as the extractor saw it, (3, S, S) in [0, 1] after its resize and centre crop,
    kept for figure grids; None for captions and feature files.
    """

    name: str
    feature: Tensor
    image: Tensor | None
    source: str
    label: int | None = None  # the class, where the data has one (digits): lets an oracle judge images

    def __post_init__(self) -> None:
        if self.feature.ndim != 1:
            raise TargetError(f"target '{self.name}': feature must be 1-D, got shape {tuple(self.feature.shape)}")
        if not torch.isfinite(self.feature).all():
            raise TargetError(f"target '{self.name}' ({self.source}): feature has NaN or inf values")


@dataclass
class TargetTransform:
    """Rescale a target feature (Fig. 8): first to an L2 ``norm`` if set, then times ``scale``.

    Captions are rescaled to the mean image-feature norm (CLIP text features are about 4.5x
    longer); image features times 1.2 or 0.8 test whether the norm itself carries meaning.
    The direction never changes.
    """

    scale: float = 1.0
    norm: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise TargetError(f"scale must be a positive number, got {self.scale}")
        if self.norm is not None and not (math.isfinite(self.norm) and self.norm > 0):
            raise TargetError(f"norm must be a positive number or null, got {self.norm}")

    def __call__(self, feature: Tensor) -> Tensor:
        if self.norm is not None:
            length = feature.norm()
            if not (torch.isfinite(length) and length > 0):
                raise TargetError(f"cannot rescale a feature of norm {float(length)} to norm {self.norm}")
            feature = feature * (self.norm / length)
        return feature * self.scale


def _device_dtype(extractor: FeatureExtractor) -> tuple[torch.device, torch.dtype]:
    """Where and in what precision the extractor runs (CPU fp32 if it has no parameters)."""
    param = next(extractor.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype if param.dtype.is_floating_point else torch.float32


def _as_list(values: str | Sequence[str], what: str) -> list[str]:
    """Hydra gives a ListConfig, a command-line override may give a single string: accept both."""
    items = [str(values)] if isinstance(values, str | Path) else [str(v) for v in values]
    if not items:
        raise TargetError(f"no {what} given")
    return items


def check_limit(limit: int | None) -> int | None:
    if limit is not None and int(limit) < 1:
        raise TargetError(f"limit must be >= 1 or null, got {limit}")
    return None if limit is None else int(limit)


def _to_eight_bits(image: Image.Image, label: str) -> Image.Image:
    """16-bit grey (PNG, TIFF) -> 8-bit grey over the full range (x / 257). PIL's own conversion clips
    at 255, which turns such an image nearly all white. Other high-bit-depth modes are refused."""
    if image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
    elif image.mode == "I":  # 32-bit integers: accepted when they fit 16 bits, as 16-bit PNGs may open
        values = np.asarray(image, dtype=np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise TargetError(f"{label}: 32-bit integer image with values outside 0..65535; save it as 8 or 16 bits")
    else:
        raise TargetError(f"{label}: floating-point image (mode {image.mode}); save it as an 8- or 16-bit image")
    logger.info("converted %s from 16-bit grey to 8-bit (x / 257)", label)
    return Image.fromarray(np.round(values / 257).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    """Grayscale, palette and alpha images -> RGB, saying so: the extractors expect three channels."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_eight_bits(image, label)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    level = logging.WARNING if has_alpha else logging.INFO
    note = " (alpha channel dropped)" if has_alpha else ""
    logger.log(level, "converted %s from mode %s to RGB%s", label, image.mode, note)
    return image.convert("RGB")


def _encode_images(extractor: FeatureExtractor, images: list[Image.Image]) -> tuple[list[Tensor], list[Tensor]]:
    """Features (D,) and the [0, 1] images (3, S, S) the extractor actually saw, batch by batch."""
    device, dtype = _device_dtype(extractor)
    mean = torch.tensor(extractor.mean).view(3, 1, 1)
    std = torch.tensor(extractor.std).view(3, 1, 1)
    features: list[Tensor] = []
    shown: list[Tensor] = []
    for start in range(0, len(images), _BATCH):
        batch = torch.stack([extractor.preprocess_image(im) for im in images[start : start + _BATCH]])
        with torch.no_grad():
            out = extractor(batch.to(device=device, dtype=dtype)).float().cpu()
        features.extend(out)
        shown.extend((batch * std + mean).clamp(0, 1))
    return features, shown


def _make_target(
    name: str, feature: Tensor, image: Tensor | None, source: str, transform: TargetTransform, label: int | None = None
) -> Target:
    """Check the raw feature, then transform it: an error names the target it is about."""
    if not torch.isfinite(feature).all():
        raise TargetError(f"target '{name}' ({source}): feature has NaN or inf values")
    try:
        feature = transform(feature)
    except TargetError as error:
        raise TargetError(f"target '{name}' ({source}): {error}") from error
    return Target(name=name, feature=feature, image=image, source=source, label=label)


def targets_from_images(
    extractor: FeatureExtractor,
    named: list[tuple[str, str, Image.Image]],
    transform: TargetTransform,
    labels: Sequence[int | None] | None = None,
) -> list[Target]:
    """One target per (name, source, RGB image), its feature computed as for any actual image."""
    smallest = max(1, extractor.input_size // MAX_UPSCALE)
    for _, source, image in named:
        if min(image.size) < smallest:
            raise TargetError(
                f"image '{source}' is {image.width}x{image.height} px; extractor '{extractor.name}' sees "
                f"{extractor.input_size} px, so an image under {smallest} px would reach it as an upscaling "
                "blur, not as what it shows; use a larger image"
            )
    features, shown = _encode_images(extractor, [im for _, _, im in named])
    labels = labels if labels is not None else [None] * len(named)
    return [
        _make_target(name, f, im, source, transform, label)
        for (name, source, _), f, im, label in zip(named, features, shown, labels, strict=True)
    ]


class ImageTargets:
    """Targets from image files and folders (a folder: its image files, sorted by name, not recursive)."""

    def __init__(
        self, paths: list[str], limit: int | None = None, scale: float = 1.0, norm: float | None = None
    ) -> None:
        self.transform = TargetTransform(scale=scale, norm=norm)
        self.limit = check_limit(limit)
        # Listed now, so a missing path or an empty folder fails before the diffusion model loads.
        self.files = self._expand(_as_list(paths, "image paths"))[: self.limit]

    @staticmethod
    def _expand(paths: list[str]) -> list[Path]:
        files: list[Path] = []
        for raw in paths:
            path = Path(raw).expanduser()
            if not path.exists():
                raise TargetError(f"image path '{raw}' does not exist")
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
                if not found:
                    raise TargetError(f"folder '{raw}' has no image files ({', '.join(IMAGE_EXTENSIONS)})")
                files.extend(found)
            else:
                files.append(path)
        return files

    @staticmethod
    def _read(path: Path) -> Image.Image:
        try:
            with warnings.catch_warnings():
                # Over PIL's pixel limit PIL only warns (over twice the limit it refuses): refuse both.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    image.load()
                    return _to_rgb(image, str(path))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise TargetError(
                f"image file '{path}' is larger than the {Image.MAX_IMAGE_PIXELS:,} pixels fsa reads "
                f"(a decompression bomb?): {error}; resize it first"
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise TargetError(f"cannot read image file '{path}': {error}") from error

    def load(self, extractor: FeatureExtractor) -> list[Target]:
        """One target per image file, its feature f(image) computed on the extractor's device."""
        named = [(p.stem, str(p), self._read(p)) for p in self.files]
        return targets_from_images(extractor, named, self.transform)


class Paper15Targets(ImageTargets):
    """The paper's 15 actual images (or one subset: imagenet, mscoco, bansal), in the authors' order,
    found under `root` flat or in the authors' subfolders. They are not bundled: a missing root or
    missing files say which and how to fetch them (`fsa-download-paper15`)."""

    def __init__(
        self,
        root: str,
        subset: str | None = None,
        limit: int | None = None,
        scale: float = 1.0,
        norm: float | None = None,
    ) -> None:
        self.root = Path(str(root)).expanduser()
        try:
            wanted = paper15.images(subset)
        except ValueError as error:
            raise TargetError(str(error)) from None
        if not self.root.is_dir():
            raise TargetError(f"paper15 image folder '{self.root}' does not exist: {paper15.HOW_TO_GET}")
        found, missing = paper15.locate(self.root, wanted)
        if missing:
            names = ", ".join(image.name for image in missing)
            raise TargetError(
                f"{len(missing)} of the paper's images are not in '{self.root}' ({names}): {paper15.HOW_TO_GET}"
            )
        super().__init__(paths=[str(path) for path in found], limit=limit, scale=scale, norm=norm)


class SkimageTargets:
    """Targets from photographs bundled with scikit-image: real images that need no download."""

    def __init__(
        self,
        names: Sequence[str] = DEFAULT_SKIMAGE_NAMES,
        limit: int | None = None,
        scale: float = 1.0,
        norm: float | None = None,
    ) -> None:
        self.transform = TargetTransform(scale=scale, norm=norm)
        self.limit = check_limit(limit)
        self.names = _as_list(names, "scikit-image names")[: self.limit]
        unknown = [n for n in self.names if n not in SKIMAGE_PHOTOS]
        if unknown:
            raise TargetError(f"unknown scikit-image photograph(s) {unknown}; choose from {list(SKIMAGE_PHOTOS)}")

    def load(self, extractor: FeatureExtractor) -> list[Target]:
        """One target per photograph, its feature f(image) computed on the extractor's device."""
        import skimage.data

        named = []
        for name in self.names:
            source = f"skimage.data.{name}"
            image = Image.fromarray(np.asarray(getattr(skimage.data, name)()))
            named.append((name, source, _to_rgb(image, source)))
        return targets_from_images(extractor, named, self.transform)


class CaptionTargets:
    """Targets from captions through CLIP's text tower (Fig. 8); needs a CLIP-family extractor."""

    def __init__(
        self, captions: list[str], limit: int | None = None, scale: float = 1.0, norm: float | None = None
    ) -> None:
        self.transform = TargetTransform(scale=scale, norm=norm)
        self.captions = _as_list(captions, "captions (caption targets need at least one)")[: check_limit(limit)]
        if any(not c.strip() for c in self.captions):
            raise TargetError(f"empty caption in {self.captions}")

    def load(self, extractor: FeatureExtractor) -> list[Target]:
        """One target per caption: the unnormalised text feature, then the transform."""
        try:
            with torch.no_grad():
                features = extractor.encode_text(self.captions).float().cpu()
        except (ExtractorError, _FsaExtractorError) as error:
            hint = "" if "extractor=" in str(error) else " (use extractor=clip_rn50 or extractor=openclip)"
            raise TargetError(f"cannot encode captions with '{extractor.name}': {error}{hint}") from error
        if features.shape != (len(self.captions), extractor.feature_dim):
            raise TargetError(
                f"encode_text gave shape {tuple(features.shape)}, expected "
                f"({len(self.captions)}, {extractor.feature_dim})"
            )
        return [_make_target(c, f, None, c, self.transform) for c, f in zip(self.captions, features, strict=True)]


class FeatureTargets:
    """Targets from a saved feature file: a `.pt` tensor or `.npy` array, (D,) or (N, D)."""

    def __init__(self, path: str, limit: int | None = None, scale: float = 1.0, norm: float | None = None) -> None:
        self.transform = TargetTransform(scale=scale, norm=norm)
        self.limit = check_limit(limit)
        self.path = Path(str(path)).expanduser()
        if not self.path.is_file():
            raise TargetError(f"feature file '{path}' does not exist")
        if self.path.suffix.lower() not in (".pt", ".npy"):
            raise TargetError(f"feature file '{path}' must be .pt (a tensor) or .npy (an array)")

    def _read(self) -> Tensor:
        try:
            if self.path.suffix.lower() == ".npy":
                data = torch.from_numpy(np.load(self.path, allow_pickle=False))
            else:
                data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch and numpy raise many kinds on a corrupt file
            raise TargetError(f"cannot read feature file '{self.path}': {error}") from error
        if not isinstance(data, Tensor) or data.is_complex():
            raise TargetError(f"feature file '{self.path}' must hold one real tensor, got {type(data).__name__}")
        if data.ndim not in (1, 2) or data.numel() == 0:
            raise TargetError(f"feature file '{self.path}' must hold (D,) or (N, D), got {tuple(data.shape)}")
        return data.float()

    def load(self, extractor: FeatureExtractor) -> list[Target]:
        """One target per row (a 1-D file is one target), checked against the extractor's size D."""
        data = self._read()
        if data.shape[-1] != extractor.feature_dim:
            raise TargetError(
                f"feature file '{self.path}' has features of size {data.shape[-1]}, but extractor "
                f"'{extractor.name}' gives features of size {extractor.feature_dim}"
            )
        stem = self.path.stem
        if data.ndim == 1:
            return [_make_target(stem, data, None, str(self.path), self.transform)]
        rows = data[: self.limit]
        return [_make_target(f"{stem}[{i}]", row, None, str(self.path), self.transform) for i, row in enumerate(rows)]


def resize_images(images: Tensor, size: int) -> Tensor:
    """(N, C, H, W) images at size x size (bilinear, antialiased); unchanged when they have it."""
    if images.shape[-2:] == (size, size):
        return images
    return torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def target_latents(targets: Sequence[Target], backbone: "DiffusionBackbone", purpose: str) -> Tensor:
    """The targets' actual images as the model's clean latents z_0 (N, C, H, W): resized to the
    model's image size (bilinear, with a warning), in [-1, 1], encoded (a pixel model takes its
    channels, a latent model its VAE's posterior mean). `purpose` names the user of them in errors."""
    missing = [t.name for t in targets if t.image is None]
    if missing:
        raise TargetError(f"{purpose} needs target images; these targets have none: {', '.join(missing)}")
    images = torch.stack([t.image for t in targets])  # (N, 3, S, S) in [0, 1]
    size = backbone.image_size
    if images.shape[-1] != size:
        logger.warning("images are %d px, the model makes %d px: resized (bilinear)", images.shape[-1], size)
    images = resize_images(images, size)
    device = next(backbone.parameters()).device
    with torch.no_grad():
        return backbone.encode(images.to(device) * 2 - 1)
