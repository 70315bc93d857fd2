"""Target features f_s: from images, captions, feature files or scikit-image's bundled photographs."""

from fsa.data.targets import (
    DEFAULT_SKIMAGE_NAMES,
    IMAGE_EXTENSIONS,
    SKIMAGE_PHOTOS,
    CaptionTargets,
    FeatureTargets,
    ImageTargets,
    Paper15Targets,
    SkimageTargets,
    Target,
    TargetError,
    TargetTransform,
)

__all__ = [
    "DEFAULT_SKIMAGE_NAMES",
    "IMAGE_EXTENSIONS",
    "SKIMAGE_PHOTOS",
    "CaptionTargets",
    "FeatureTargets",
    "ImageTargets",
    "Paper15Targets",
    "SkimageTargets",
    "Target",
    "TargetError",
    "TargetTransform",
]
