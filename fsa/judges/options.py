"""The robustness check's changes and their strengths, with no tensor code (the config schema reads it)."""

from dataclasses import dataclass

from fsa.errors import ConfigError

CHANGES = ("shift", "crop", "jpeg", "noise")


@dataclass(frozen=True)
class RobustnessOptions:
    """Small, label-preserving changes applied alike to every generated image and to its target image;
    the guide's distance after each, as a ratio (docs/judges.md). 0 turns a change off.

    shift: move the image right and down by this fraction of its side (at least 1 px), the edge rows
      and columns repeated into the gap.
    crop: keep the centre `crop` of each side and resize it back (bicubic): a zoom of 1 / crop.
    jpeg: save as JPEG at this quality (1..95) and read back.
    noise: add Gaussian noise of this standard deviation to pixels in [0, 1] (one fixed draw per
      image size, so an image and its target of the same size get the same noise), clipped, 8-bit.
    """

    shift: float = 0.05
    crop: float = 0.9
    jpeg: int = 75
    noise: float = 0.03

    def __post_init__(self) -> None:
        if not 0 <= self.shift < 0.5:
            raise ConfigError(f"robustness.shift must be in [0, 0.5) (a fraction of the side), got {self.shift}")
        if not (self.crop == 0 or 0.5 <= self.crop < 1):
            raise ConfigError(f"robustness.crop must be 0 (off) or in [0.5, 1), got {self.crop}")
        if not 0 <= self.jpeg <= 95:
            raise ConfigError(f"robustness.jpeg must be 0 (off) or a quality in 1..95, got {self.jpeg}")
        if not 0 <= self.noise <= 0.5:
            raise ConfigError(f"robustness.noise must be in [0, 0.5], got {self.noise}")

    def enabled(self) -> list[str]:
        """The changes in use, in `CHANGES` order."""
        return [name for name in CHANGES if getattr(self, name)]
