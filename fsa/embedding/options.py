"""The settings of `task=embed`, checked before any model loads (torch-free, like the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fsa.errors import ConfigError

METHODS = ("inversion", "gradient_descent", "inversion+gd", "network", "network+gd")
KINDS = ("conv1", "conv3", "unet")  # the embedding networks' architectures
GENERATOR = "_generator"  # a network's name: <kind> trained on the seed's MSE, <kind>_generator through the generator
NETWORKS = (*KINDS, *(kind + GENERATOR for kind in KINDS))


@dataclass(frozen=True)
class EmbedOptions:
    """What `task=embed` does: which methods embed which images, and the analyses' sizes."""

    num_steps: int = 20  # DDIM steps of the deterministic generator f_theta (eta = 0)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    networks: list[str] = field(default_factory=lambda: list(KINDS))  # for method network (and network+gd: the last)
    network_dir: str = ""  # where the trained embedding networks are (<name>.safetensors, <name>.json)
    images: int = 4  # dataset images to embed (the held-out split for digits)
    generated: int = 4  # images made by the generator itself, embedded too (Table 2)
    iterations: int = 60  # gradient descent steps of method gradient_descent and of the cloud
    refine_iterations: int = 30  # gradient descent steps of methods inversion+gd and network+gd
    lr: float = 0.05  # Adam's step size on the seed, from a random start
    refine_lr: float = 0.005  # ... and from a good start (inversion+gd, network+gd): Adam's first steps move
    # every value by about lr whatever the gradient, which from a good seed undoes more than it gains
    cloud: int = 8  # random starts of gradient descent for the first image: a cloud of seeds
    checkpoint: bool = True  # recompute each DDIM step in the backward pass: memory flat in num_steps
    combinations: int = 16  # random convex combinations of the cloud's seeds
    interpolation_steps: int = 8  # images between two embedded images, pixel and latent
    second_model: str | None = None  # another DDPM (diffusers folder) on the same data and schedule
    independence: int = 32  # seeds given to both models: are their images the same?

    def __post_init__(self) -> None:
        for name in ("num_steps", "images", "iterations", "cloud", "interpolation_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("generated", "refine_iterations", "combinations", "independence"):
            if getattr(self, name) < 0:
                raise ConfigError(f"task.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "refine_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"task.{name} must be > 0, got {getattr(self, name)}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"task.methods must be a non-empty list of {METHODS}, got {list(self.methods)}")
        unknown = [n for n in self.networks if n not in NETWORKS]
        if unknown or (not self.networks and {"network", "network+gd"} & set(self.methods)):
            raise ConfigError(f"task.networks must be a non-empty list of {NETWORKS}, got {list(self.networks)}")
        if self.cloud < 2:
            raise ConfigError(f"task.cloud must be >= 2 (a cloud's mean and spread need two seeds), got {self.cloud}")
