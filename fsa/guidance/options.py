"""The guidance's hyper-parameters and K schedule, with no tensor code: what the config schema reads."""

from dataclasses import dataclass, replace

from fsa.errors import ConfigError

# A guide run decodes every target once per variant, with the same sampler, targets and seeds: the
# guided decode, and the baselines a run asks for (`baselines=`). Each guidance says what its
# baselines are (`baseline`); a baseline that makes no sense for it (printed_sign without Eq. 3) is None.
# adversarial is the control with no diffusion prior: the guide's distance minimised in the model's
# latent directly (fsa.guidance.adversarial), which the judges must tell from a real match.
GUIDED = "guided"
BASELINES = ("unguided", "printed_sign", "adversarial")
VARIANTS = (GUIDED, *BASELINES)
CLIP_MODES = ("mean", "zero", "off")
DIRECTIONS = ("descend", "ascend")
GRADIENTS = ("z_t", "z0_hat")


@dataclass(frozen=True)
class GuidanceOptions:
    """The hyper-parameters of the paper's guidance and its K schedule (pure Python: the config
    schema is derived from these fields without loading torch; `FeatureGuidance` adds Eq. 3).

    w_g: guidance weight (4 in the paper); 0 turns guidance off (the unguided baseline).
    normalise: rescale the gradient to the norm of the predicted noise.
    clip_mode, clip_c: gradient clipping (c = 3 for CLIP RN50 and ResNet-50, 2 for ViT-H/14).
    direction: "descend" is eps' = eps + w_g * g_hat, which lowers the distance (the authors'
      code); "ascend" is the sign printed in the paper, eps - w_g * g_hat, kept to show it fails.
    post_check: also score z0' from the guided noise each iteration (a best-image candidate).
    post_check_every: thin the post check to every N-th recurrence of a timestep and its last one
      (1: every iteration, the authors' code; a speed option whose effect on best distance is measured).
    early_steps, early_k, k: the K schedule: K = early_k recurrences for the first
      early_steps timesteps, then k (1000 for 5 steps, then 8: 12,960 iterations for DDPM 1000).
    late_steps, late_k: K = late_k for the last late_steps timesteps instead (0: none, the paper).
      Not in the paper: on the digits setup the distance falls mostly at low noise (docs/speed.md,
      "Fewer iterations for the same distances"), where extra recurrences pay off.
    gradient: what g in Eq. 3 is taken with respect to. "z_t" (the paper): through the UNet, the
      decoder and f. "z0_hat": at z0_hat with the UNet's eps held fixed, so no backward pass
      through the UNet (the manifold-preserving shortcut; docs/method.md, "Cheaper gradients").
    backward_steps, backward_lr: after Eq. 3, this many steps of gradient descent on
      ||f(D(z0' + delta)) - f_s||^2 over delta, each of size backward_lr * ||z0'|| along the
      normalised gradient, and eps'' chosen so that its z0_hat is z0' + delta (Universal
      Guidance's backward guidance; 0: none, the paper).
    """

    w_g: float = 4.0
    normalise: bool = True
    clip_mode: str = "mean"
    clip_c: float = 3.0
    direction: str = "descend"
    post_check: bool = True
    post_check_every: int = 1
    early_steps: int = 5
    early_k: int = 1000
    k: int = 8
    late_steps: int = 0
    late_k: int = 1
    gradient: str = "z_t"
    backward_steps: int = 0
    backward_lr: float = 0.05

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENTS:
            raise ConfigError(f"guidance.gradient must be one of {GRADIENTS}, got '{self.gradient}'")
        if self.backward_steps < 0 or not self.backward_lr > 0:
            raise ConfigError(
                f"guidance.backward_steps must be >= 0 and backward_lr > 0, got {self.backward_steps}, "
                f"{self.backward_lr}"
            )
        if self.clip_mode not in CLIP_MODES:
            raise ConfigError(f"guidance.clip_mode must be one of {CLIP_MODES}, got '{self.clip_mode}'")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"guidance.direction must be one of {DIRECTIONS}, got '{self.direction}'")
        if min(self.k, self.early_k, self.late_k) < 1:
            raise ConfigError(
                f"guidance.k, early_k and late_k must be >= 1, got {self.k}, {self.early_k}, {self.late_k}"
            )
        if self.post_check_every < 1:
            raise ConfigError(f"guidance.post_check_every must be >= 1, got {self.post_check_every}")
        if self.early_steps < 0 or self.late_steps < 0:
            raise ConfigError(
                f"guidance.early_steps and late_steps must be >= 0, got {self.early_steps}, {self.late_steps}"
            )
        if self.w_g < 0:
            raise ConfigError(f"guidance.w_g must be >= 0 (use direction=ascend to flip it), got {self.w_g}")

    @property
    def enabled(self) -> bool:
        return self.w_g > 0

    @property
    def sign(self) -> float:
        """+1 for "descend" (the authors' code), -1 for "ascend" (the sign printed in Eq. 3)."""
        return 1.0 if self.direction == "descend" else -1.0

    def recurrences(self, step_index: int, num_steps: int) -> int:
        """K for the step_index-th of num_steps visited timesteps (early-step emphasis first)."""
        if step_index < self.early_steps:
            return self.early_k
        return self.late_k if step_index >= num_steps - self.late_steps else self.k

    def checks_post(self, k: int, recurrences: int) -> bool:
        """Whether recurrence k (of `recurrences` at this timestep) also scores the guided z0'."""
        last = k == recurrences - 1
        return self.enabled and self.post_check and ((k + 1) % self.post_check_every == 0 or last)

    def total_iterations(self, num_steps: int) -> int:
        return sum(self.recurrences(i, num_steps) for i in range(num_steps))

    def unguided(self) -> "GuidanceOptions":
        """The baseline: the same schedule and scoring with w_g = 0."""
        return replace(self, w_g=0.0)

    def baseline(self, name: str) -> "GuidanceOptions":
        """unguided: w_g = 0; printed_sign: eps - w_g g, the sign the paper prints in Eq. 3 (adversarial:
        `FeatureGuidance.baseline`, which has the tensor code)."""
        return self.unguided() if name == "unguided" else replace(self, direction="ascend")


@dataclass(frozen=True)
class SelfGuidedOptions:
    """The self-guided stochastic reconstruction of Kadkhodaie et al. (their Algorithms 1 and 2),
    with no tensor code (`SelfGuidance` adds it).

    At every timestep a matching step moves z_t by gradient descent on ||phi_t(z_t) - phi_t(x_c)||^2
    (phi_t: the extractor's UNet-block representation at the sample's own t; x_c: the target image)
    until it converges or `max_iterations` ran, then the sampler's score step removes noise.
    lr: the matching's step size eta (Algorithm 2: z_t <- z_t - eta grad); it is scaled per sample
      by ||z_t|| / ||grad|| when `normalise` (the scan leaves the step rule unreadable; see
      docs/representation.md), so that eta is a fraction of the latent's own size.
    tolerance: stop matching a sample once its distance is at most `tolerance` times the
      target representation's squared norm (relative squared error).
    max_iterations: the most matching steps per timestep; 0 turns matching off (the unguided baseline).
    """

    lr: float = 0.01
    normalise: bool = True
    tolerance: float = 1e-3
    max_iterations: int = 20

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"guidance.lr must be > 0, got {self.lr}")
        if self.tolerance < 0:
            raise ConfigError(f"guidance.tolerance must be >= 0, got {self.tolerance}")
        if self.max_iterations < 0:
            raise ConfigError(f"guidance.max_iterations must be >= 0, got {self.max_iterations}")

    @property
    def enabled(self) -> bool:
        return self.max_iterations > 0

    def total_iterations(self, num_steps: int) -> int:
        """One guided iteration per timestep: a matching step (up to max_iterations) and a score step."""
        return num_steps

    def unguided(self) -> "SelfGuidedOptions":
        """The baseline: the same sampler with no matching step."""
        return replace(self, max_iterations=0)

    def baseline(self, name: str) -> "SelfGuidedOptions | None":
        """unguided: no matching step; printed_sign flips Eq. 3, which self-guidance has not, and the
        adversarial control needs a representation of the image alone (phi_t reads t): None."""
        return self.unguided() if name == "unguided" else None
