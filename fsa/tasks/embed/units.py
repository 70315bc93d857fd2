"""The embed task's units of work and its methods: each unit (one method on one set of images; the
cloud) is kept in the job's checkpoint once done, and the descent under way every `checkpoint_every`
iterations and when a signal arrives, so a stopped job continues where it was, to the same seeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fsa.diffusion.backbones import DiffusionBackbone
from fsa.embedding import ddim, networks
from fsa.embedding.options import EmbedOptions
from fsa.errors import ConfigError
from fsa.tracking.checkpoint import Checkpoints
from fsa.tracking.progress import LoopProgress
from fsa.tracking.tracker import Tracker

STREAM = "embed"  # the job's one W&B run


@dataclass
class Unit:
    """A finished unit: the seeds it found and the seconds it took."""

    seeds: Tensor
    seconds: float


@dataclass
class Descent:
    """The gradient descent under way: its unit, the descent's own state, the seconds spent so far."""

    unit: str
    state: ddim.DescentState
    seconds: float


@dataclass
class EmbedState:
    """Where an embed job stands: the units done, and the descent under way (None between units)."""

    units: dict[str, Unit] = field(default_factory=dict)
    descent: Descent | None = None


class Units:
    """Runs each unit once per job, keeping it in the checkpoint (see the module's docstring)."""

    def __init__(self, checkpoints: Checkpoints, saved: EmbedState | None) -> None:
        self.checkpoints = checkpoints
        self.kept = saved or EmbedState()
        self.key: str | None = None
        self.started = self.carried = 0.0

    def seeds(self, key: str, find: Callable[[], Tensor]) -> tuple[Tensor, float]:
        """The seeds `find()` returns and the seconds it took, found once per job."""
        if key not in self.kept.units:
            under_way = self.kept.descent if self.kept.descent and self.kept.descent.unit == key else None
            self.key, self.carried, self.started = key, under_way.seconds if under_way else 0.0, time.perf_counter()
            seeds = find()
            self.kept.units[key] = Unit(seeds.detach().cpu(), self.elapsed())
            self.kept.descent = None
            self.checkpoints.save(lambda: self.kept)
        unit = self.kept.units[key]
        return unit.seeds, unit.seconds

    def elapsed(self) -> float:
        return self.carried + time.perf_counter() - self.started

    def descent(self) -> dict[str, Any]:
        """`ddim.descend`'s `resume` and `on_iteration` for the (one) descent of the unit under way."""
        under_way = self.kept.descent
        resume = under_way.state if under_way and under_way.unit == self.key else None

        def on_iteration(snapshot: Callable[[], ddim.DescentState]) -> None:
            def state() -> EmbedState:
                assert self.key is not None
                return EmbedState(self.kept.units, Descent(self.key, snapshot(), self.elapsed()))

            self.checkpoints.after_iteration(state)

        return {"resume": resume, "on_iteration": on_iteration}


class CloudLog:
    """The cloud's descent for W&B, per iteration (the tracker holds the rows until a checkpoint covers
    them, so a job stopped and resumed logs every iteration once)."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        tracker.define(STREAM, "iteration", hidden=True)
        tracker.define(STREAM, "cloud/*", step_metric="iteration")

    def __call__(self, step: ddim.DescentStep) -> None:
        mse = step.mse / 4  # [0, 1] pixel units
        row = {"iteration": step.iteration, "cloud/mean_mse": float(mse.mean()), "cloud/min_mse": float(mse.min())}
        self.tracker.log(STREAM, row)


class Embedder:
    """Every method of the options on one set of images; the seeds it found, per method."""

    def __init__(
        self,
        backbone: DiffusionBackbone,
        options: EmbedOptions,
        timesteps: list[int],
        seed: int,
        units: Units,
        progress: bool = True,
    ) -> None:
        self.backbone, self.options, self.timesteps, self.seed, self.units = backbone, options, timesteps, seed, units
        self.progress = progress  # a log line every 30 s of a gradient descent (`progress=false`: none)
        self.networks = {kind: networks.load(options.network_dir, kind) for kind in self._network_kinds()}
        for kind, (net, info) in self.networks.items():
            if int(info["num_steps"]) != options.num_steps:
                raise ConfigError(
                    f"embedding network '{kind}' was trained for {info['num_steps']} DDIM steps; "
                    f"task.num_steps is {options.num_steps}"
                )
            net.to(self.device)  # in place

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _network_kinds(self) -> list[str]:
        return list(self.options.networks) if {"network", "network+gd"} & set(self.options.methods) else []

    def random_seeds(self, shape: torch.Size, offset: int) -> Tensor:
        """Seeds N(0, I) from the job's seed + `offset` (one offset per use, so uses do not share seeds)."""
        generator = torch.Generator().manual_seed(self.seed + offset)
        return torch.randn(shape, generator=generator).to(self.device)

    def methods(self) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """(name, images -> seeds) in the options' order; `network` is one entry per network kind, and
        `network+gd` refines the last network's seeds."""
        options, refine = self.options, (self.options.refine_iterations, self.options.refine_lr)

        def invert(x: Tensor) -> Tensor:
            return ddim.invert(self.backbone, x, self.timesteps)

        def from_random(x: Tensor) -> Tensor:
            return self.descend(x, self.random_seeds(x.shape, 1), options.iterations, options.lr)

        nets: list[tuple[str, Callable[[Tensor], Tensor]]] = [
            (f"network {k}", n) for k, (n, _) in self.networks.items()
        ]
        by_method = {
            "inversion": [("inversion", invert)],
            "gradient_descent": [("gradient_descent", from_random)],
            "inversion+gd": [("inversion+gd", lambda x: self.descend(x, invert(x), *refine))],
            "network": nets,
            "network+gd": [(f"{nets[-1][0]} + gd", lambda x: self.descend(x, nets[-1][1](x), *refine))] if nets else [],
        }
        return [entry for method in options.methods for entry in by_method[method]]

    def descend(
        self, images: Tensor, start: Tensor, iterations: int, lr: float, callback: Callable | None = None
    ) -> Tensor:
        """Gradient descent on the seeds from `start`, checkpointed as the unit under way."""
        if iterations == 0:
            return start
        progress = LoopProgress(f"gradient descent on {len(start)} seed(s)", iterations, enabled=self.progress)

        def listen(step: ddim.DescentStep) -> None:
            progress(step.iteration + 1, f"mean MSE {float(step.mse.mean()):.4g}")
            if callback is not None:
                callback(step)

        return ddim.descend(
            self.backbone,
            images,
            start,
            self.timesteps,
            iterations,
            lr,
            self.options.checkpoint,
            callback=listen,
            **self.units.descent(),
        ).seed
