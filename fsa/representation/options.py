"""The settings of `task=represent`, checked before any model loads (torch-free, like the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fsa.errors import ConfigError


@dataclass(frozen=True)
class RepresentOptions:
    """What `task=represent` measures of a diffusion UNet's block representations phi_t."""

    blocks: list[str] = field(default_factory=list)  # empty: every block of the model's UNet
    timesteps: list[int] = field(default_factory=lambda: [0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999])
    reference: int = 100  # phi's noise level for the neighbour table, and the stability reference
    noise_samples: int = 4  # draws z in phi_t(x) = E_z[a(sqrt(abar_t) z_0 + sqrt(1 - abar_t) z, t)]
    noise_seed: int = 0
    per_class: int = 30  # held-out images per class (labelled datasets: digits)
    block: str = "mid_block"  # the block whose channels and clusters are studied (the paper's phi)
    clusters: int = 0  # K of K-means on that block's phi; 0: as many as the images have classes
    top_images: int = 8  # images shown per selective channel

    def __post_init__(self) -> None:
        if not self.timesteps or min(self.timesteps) < 0:
            raise ConfigError(f"task.timesteps must be a non-empty list of timesteps >= 0, got {list(self.timesteps)}")
        if self.reference < 0:
            raise ConfigError(f"task.reference must be a timestep >= 0, got {self.reference}")
        if self.noise_samples < 1:
            raise ConfigError(f"task.noise_samples must be >= 1, got {self.noise_samples}")
        if self.clusters < 0 or self.clusters == 1 or self.top_images < 1:
            raise ConfigError(
                f"task.clusters must be 0 or >= 2 and task.top_images >= 1, got {self.clusters} and {self.top_images}"
            )
        if self.per_class < 2:
            raise ConfigError(
                f"task.per_class must be >= 2 (a neighbour of the same class must exist), got {self.per_class}"
            )
