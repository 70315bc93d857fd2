"""The adversarial control: the guide's distance (Eq. 2) minimised directly, with no diffusion prior.

The same extractor, target and seeds as the guided decode, but the model's latent (the pixels, for a
pixel-space model) is optimised from its initial noise z_T by gradient descent on
l(z) = ||f(D(z)) - f_s||^2, with no UNet anywhere. It reaches images whose features match while nothing
else about them need look like an image: what an adversarial match is. The judges and the robustness
check (`fsa.tasks.guide.judging`) must flag it; that they also pass guided diffusion is what makes
its matches real (docs/judges.md).

Pure: tensors in, tensors out, every evaluation reported through the decoder's `callback`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from fsa.guidance.decoder import PRE, DecodeResult, DecodeRun, DecodeState, Evaluation, Targets
from fsa.guidance.feature_guidance import normalise_gradient
from fsa.guidance.options import GuidanceOptions

if TYPE_CHECKING:
    from fsa.diffusion.backbones import DiffusionBackbone
    from fsa.diffusion.samplers import Sampler
    from fsa.extractors.base import FeatureExtractor

# Each step moves the latent by lr_i per element (root mean square), lr_i falling linearly from
# STEP_SIZE to 0 over the run: large enough to leave the initial noise's scale (N(0, 1)) in a few
# dozen steps, small at the end so the distance settles. No optimiser state: a resumed run is exact.
STEP_SIZE = 0.1


def adversarial_decode(
    backbone: DiffusionBackbone,
    extractor: FeatureExtractor,
    target: Tensor,
    generators: Sequence[torch.Generator],
    iterations: int,
    step_size: float = STEP_SIZE,
    *,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[Evaluation], None] | None = None,
    resume: DecodeState | None = None,
    on_iteration: Callable[[Callable[[], DecodeState]], None] | None = None,
) -> DecodeResult:
    """`iterations` steps of normalised gradient descent on l(z) = ||f(D(z)) - f_s||^2 from z = z_T:
    z <- z - lr_i * g * sqrt(n) / ||g|| (per sample; n the latent's size, so each step's RMS is lr_i),
    lr_i = step_size * (1 - i / iterations). Evaluation i scores z before step i (step = i, t = 0);
    the best image is the minimum over them and the final image is z after the last step."""
    run = DecodeRun(backbone, extractor, target, generators, dtype, callback)
    z, start, _ = run.start(resume)
    for i in range(start, iterations):
        image, distance, cosine, grad = run.score_with_gradient(z)
        run.report(i, 0, 0, PRE, image, distance, cosine, None)
        direction, _ = normalise_gradient(grad.float(), torch.ones_like(z, dtype=torch.float32))
        z = (z - step_size * (1 - i / iterations) * direction.to(z.dtype)).detach()
        run.counts["iterations"] += 1
        if on_iteration is not None:
            on_iteration(run.snapshot(z, i + 1, 0))
    return run.result(z)


@dataclass(frozen=True)
class AdversarialControl:
    """The `adversarial` baseline of a guidance: as many descent steps per sample as the guidance has
    guided iterations (the same budget of feature gradients), from the same seeds' z_T."""

    schedule: GuidanceOptions
    step_size: float = STEP_SIZE

    needs_target_latent: ClassVar[bool] = False
    enabled: ClassVar[bool] = True

    def total_iterations(self, num_steps: int) -> int:
        return self.schedule.total_iterations(num_steps)

    def decode(
        self,
        backbone: DiffusionBackbone,
        sampler: Sampler,
        extractor: FeatureExtractor,
        targets: Targets,
        generators: Sequence[torch.Generator],
        **options: Any,
    ) -> DecodeResult:
        """`adversarial_decode` with the guidance's iteration budget (the decode signature every guidance shares)."""
        iterations = self.total_iterations(len(sampler.timesteps(backbone.schedule.num_train_timesteps)))
        return adversarial_decode(
            backbone, extractor, targets.feature, generators, iterations, self.step_size, **options
        )
