"""The settings of the `attributes` group, checked before any model loads (torch-free, like the config)."""

import re
from dataclasses import dataclass, field

from fsa.errors import ConfigError

DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")


@dataclass(frozen=True)
class AttributesOptions:
    """Which attributes a run measures on its images, and how retention's interval is drawn.

    measures: attribute name -> the dotted path of a function (N, 3, H, W) in [0, 1] -> (N, k);
    image_size: the side both the generated and the target images are resized to before measuring;
    oracle_class: also the oracle's class as an attribute (needs `oracle` and labelled targets);
    resamples: bootstrap resamples of retention's 95 % interval.
    """

    measures: dict[str, str] = field(default_factory=dict)
    image_size: int = 64
    oracle_class: bool = False
    resamples: int = 2000

    def __post_init__(self) -> None:
        bad = [f"{name}: {path}" for name, path in self.measures.items() if not DOTTED.match(str(path))]
        if bad:
            raise ConfigError(f"attributes.measures must map names to dotted function paths; not: {', '.join(bad)}")
        if not self.measures and not self.oracle_class:
            raise ConfigError("attributes: no measure and no oracle_class; use attributes=null to measure nothing")
        if self.image_size < 8:
            raise ConfigError(f"attributes.image_size must be >= 8, got {self.image_size}")
        if self.resamples < 100:
            raise ConfigError(f"attributes.resamples must be >= 100, got {self.resamples}")
