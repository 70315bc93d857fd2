"""The config schema: every top-level key and the typed groups, so a typo is an error.

Hydra composes `conf/config.yaml` on top of `FsaConfig` (registered as `fsa_schema`). Keys not
declared here are rejected (struct mode) and values of the wrong type fail to merge, before
any model loads. Component groups whose arguments depend on their `_target_` (model,
extractor, dataset, sampler) stay `Any`; their arguments are checked against the target's
signature by `check_targets`.
"""

import dataclasses
import importlib
import inspect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from fsa import ASSETS_DIR, CONF_DIR, default_data_dir
from fsa.attributes.options import AttributesOptions
from fsa.errors import ConfigError
from fsa.guidance.options import BASELINES, GuidanceOptions, SelfGuidedOptions
from fsa.judges.options import RobustnessOptions
from fsa.speed import DTYPE_NAMES, SpeedOptions
from fsa.tasks import COMMON, Task, config_dirs, task_of

# This module loads no ML stack (torch, diffusers, ...): `fsa --help` and a rejected override stay fast.
LOGGER_MODES = ("auto", "online", "offline", "disabled")
# Groups built by `_target_` whose keys are checked against the target's signature (`check_targets`).
COMPONENT_GROUPS = ("model", "sampler", "extractor", "dataset", "guidance", "speed")


def _schema_of(cls: type, name: str, target: str | None = None) -> type:
    """A mutable schema with `_target_` and the typed fields of a (frozen) dataclass: one source of truth."""
    target = target or f"{cls.__module__}.{cls.__qualname__}"
    fields = [
        (
            f.name,
            f.type,
            field(default_factory=f.default_factory) if f.default is dataclasses.MISSING else field(default=f.default),
        )
        for f in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(name, [("_target_", str, field(default=target)), *fields])


# Built as FeatureGuidance (GuidanceOptions with Eq. 3) or SelfGuidance, whose modules need torch:
# named, not imported. Each guidance option's YAML extends its schema (`defaults: [schema_paper]`),
# so its keys and types are checked as Hydra composes it.
GuidanceConfig = _schema_of(GuidanceOptions, "GuidanceConfig", "fsa.guidance.feature_guidance.FeatureGuidance")
SelfGuidedConfig = _schema_of(SelfGuidedOptions, "SelfGuidedConfig", "fsa.guidance.self_guided.SelfGuidance")
GUIDANCE_SCHEMAS = {"schema_paper": GuidanceConfig, "schema_self_guided": SelfGuidedConfig}
AttributesConfig = _schema_of(AttributesOptions, "AttributesConfig")  # built as the options themselves
SpeedConfig = _schema_of(SpeedOptions, "SpeedConfig")
RobustnessConfig = _schema_of(RobustnessOptions, "RobustnessConfig")


@dataclass
class LoggerConfig:
    mode: str = "auto"  # auto: online when logged in to W&B, else offline
    project: str = "fsa"
    entity: str | None = None
    group: str | None = None  # default: the multirun sweep folder, or the run folder
    name: str | None = None  # default: the job's overrides
    tags: list[str] = field(default_factory=list)


@dataclass
class WeightsConfig:
    """Where this machine keeps each pretrained network fsa's presets name (a file, a diffusers folder or
    a hub id; None: the library's download). Declared, so a misspelt name in a local config is an error."""

    sd14: str | None = "CompVis/stable-diffusion-v1-4"
    clip_rn50: str | None = None
    resnet50: str | None = None
    vit_h14: str | None = None


@dataclass
class FsaConfig:
    task: Any = None  # {_target_: the task's class, name, ...its options}: conf/task/<name>.yaml
    model: Any = None
    sampler: Any = None
    guidance: Any = None  # typed by its option's schema (GUIDANCE_SCHEMAS)
    extractor: Any = None
    dataset: Any = None
    speed: SpeedConfig = field(default_factory=SpeedConfig)  # type: ignore[valid-type]
    logger: LoggerConfig | None = None  # None (logger=null): no W&B run
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 1
    targets_per_batch: int = 1
    max_targets: int | None = None  # at most this many of the dataset's targets (smoke=digits: 3)
    max_samples: int | None = None  # at most this many samples per target, whatever batch_size says
    baselines: list[str] = field(default_factory=list)
    oracle: Any = None
    attributes: Any = None  # typed by AttributesConfig; None (attributes=null): no retention measured
    judges: Any = None  # name -> an extractor config (conf/judges/); None (judges=null): no judges
    robustness: RobustnessConfig | None = None  # type: ignore[valid-type]  # None: no robustness check
    weights: WeightsConfig = field(default_factory=WeightsConfig)  # this machine's files (a local config)
    data_dir: str = ""
    record_gradients: int = 0
    checkpoint_every: int = 500
    resume: str | None = None
    fresh: bool = False
    progress: bool = True
    threads: int | None = None  # torch's CPU threads; None: OMP_NUM_THREADS, else the CPUs fsa may use
    objective: list[str] = field(default_factory=list)  # summary figures the Hydra app returns (a sweeper's)


def register_configs() -> None:
    """The schema; `${fsa_asset:digits/ddpm}`, a path inside fsa's shipped weights; `${fsa_data_dir:}`."""
    store = ConfigStore.instance()
    store.store(name="fsa_schema", node=FsaConfig)
    for name, schema in GUIDANCE_SCHEMAS.items():
        store.store(group="guidance", name=name, node=schema)
    store.store(group="attributes", name="schema", node=AttributesConfig)
    # The user's local config folder (~/.config/fsa) is on Hydra's search path; most machines have none.
    warnings.filterwarnings("ignore", message="provider=hydra.searchpath in main, path=.* is not available")
    if not OmegaConf.has_resolver("fsa_asset"):
        OmegaConf.register_new_resolver("fsa_asset", lambda relative: str(ASSETS_DIR / relative))
    if not OmegaConf.has_resolver("fsa_data_dir"):
        OmegaConf.register_new_resolver("fsa_data_dir", lambda: str(default_data_dir()))


def local_configs() -> list[Path]:
    """The local config files on this machine, the one Hydra uses first: a file in fsa's own config
    folder (`fsa/conf/local/default.yaml`, this installation's) wins over the user's
    (`$FSA_CONFIG_DIR/local/default.yaml`, by default `~/.config/fsa/...`); the command line wins over both."""
    candidates = [CONF_DIR / "local" / "default.yaml", config_dirs()[0] / "local" / "default.yaml"]
    return [file for file in candidates if file.is_file()]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """fsa's config composed with `overrides` outside a Hydra app (a downloader, a benchmark)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _resolve_target(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"_target_ '{path}' cannot be imported: {error}") from error


def check_targets(cfg: DictConfig, groups: tuple[str, ...] = ("model", "sampler", "extractor", "dataset")) -> None:
    """Each group's keys must be arguments of its `_target_`: a misspelt override fails here, cheaply."""
    for group in groups:
        check_target(group, cfg.get(group))


def check_target(label: str, node: Any) -> None:
    """One node's keys must be arguments of its `_target_` (`label` names it in the error)."""
    if node is None or "_target_" not in node:
        raise ConfigError(f"config group '{label}' is missing or has no _target_")
    target = _resolve_target(node._target_)
    kwargs = {k: v for k, v in node.items() if not str(k).startswith("_")}
    try:
        inspect.signature(target).bind(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{label}: {error} (for {node._target_})") from error


def check_keys(cfg: DictConfig) -> None:
    """No key the schema does not know: `+foo=1` adds a key past Hydra's struct mode, and an unknown
    key must be an error, not something silently ignored."""
    top = {f.name for f in dataclasses.fields(FsaConfig)}
    unknown = [str(k) for k in cfg if k not in top]
    logger_keys = {f.name for f in dataclasses.fields(LoggerConfig)}
    unknown += [f"logger.{k}" for k in cfg.logger or {} if k not in logger_keys]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; `fsa --help` lists the groups, `fsa --cfg job` every key"
        )


def task_options(cfg: DictConfig, task: Task) -> Any:
    """The task's settings (`task.*` less its name and class) as its options dataclass, checked: an
    unknown key or a bad value is a ConfigError that names the task's YAML."""
    values = OmegaConf.to_container(cfg.task, resolve=True)
    try:
        return task.options(**{str(k): v for k, v in values.items() if k not in ("name", "_target_")})
    except TypeError as error:
        raise ConfigError(f"task: {error}; the keys of task={task.name} are in conf/task/{task.name}.yaml") from error


def options_of(node: DictConfig, cls: type, label: str) -> Any:
    """A node's settings as the options dataclass `cls` (its `_target_`, if any, left out), checked: an
    unknown key is a ConfigError that names the node (`label`)."""
    values = OmegaConf.to_container(node, resolve=True)
    try:
        return cls(**{str(k): v for k, v in values.items() if k != "_target_"})
    except TypeError as error:
        raise ConfigError(f"{label}: {error}".replace(f"{cls.__name__}.__init__() ", "")) from error


def attributes_options(cfg: DictConfig) -> AttributesOptions:
    """The `attributes` group's settings, checked (torch-free: the measures are imported when a run starts)."""
    return options_of(cfg.attributes, AttributesOptions, "attributes")


def robustness_options(cfg: DictConfig) -> RobustnessOptions:
    """The robustness check's changes, checked."""
    return options_of(cfg.robustness, RobustnessOptions, "robustness")


def task_config(cfg: DictConfig, task: Task, overrides: Sequence[str] = ()) -> DictConfig:
    """The task's root config: the keys every task has and those the task uses, nothing else, so that a
    run's config.yaml holds only what made it. An override of a key the task does not use is refused:
    it would change nothing."""
    check_keys(cfg)
    keep = [str(k) for k in cfg if k in COMMON or k in task.uses]
    unused = sorted({key for key in override_keys(overrides) if key in cfg and key not in keep})
    if unused:
        raise ConfigError(
            f"task={task.name} does not use {', '.join(unused)}; drop the override(s) (it uses "
            f"{', '.join(task.uses) or 'none of the component groups'})"
        )
    root = OmegaConf.masked_copy(cfg, keep)
    OmegaConf.set_struct(root, True)
    return root


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The top-level key of each command-line override (`+a.b=1`, `~a`, `a=x` -> `a`)."""
    return [override.lstrip("+~").split("=", 1)[0].split(".", 1)[0] for override in overrides]


def _check_numbers(cfg: DictConfig) -> None:
    """The top-level numbers, where the task uses them."""
    minimum = {"batch_size": 1, "targets_per_batch": 1, "record_gradients": 0, "checkpoint_every": 0}
    for key, lowest in minimum.items():
        if key in cfg and cfg[key] < lowest:
            raise ConfigError(f"{key} must be >= {lowest}, got {cfg[key]}")
    for key in ("max_targets", "max_samples", "threads"):
        if key in cfg and cfg[key] is not None and cfg[key] < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {cfg[key]}")


def _check_names(cfg: DictConfig, task: Task) -> None:
    """The top-level names: baselines, dtype, logger mode, device, and the objective's summary keys."""
    if "baselines" in cfg:
        unknown = [b for b in cfg.baselines if b not in BASELINES]
        if unknown or len(set(cfg.baselines)) != len(cfg.baselines):
            raise ConfigError(f"baselines must be distinct names from {BASELINES}, got {list(cfg.baselines)}")
    if "dtype" in cfg and cfg.dtype not in DTYPE_NAMES:
        raise ConfigError(f"dtype must be one of {DTYPE_NAMES}, got '{cfg.dtype}'")
    if cfg.logger is not None and cfg.logger.mode not in LOGGER_MODES:
        raise ConfigError(f"logger.mode must be one of {LOGGER_MODES}, got '{cfg.logger.mode}'")
    if cfg.logger is not None and cfg.logger.mode == "online":
        from fsa.tracking.tracker import logged_in  # reads the environment and ~/.netrc, no network

        if not logged_in():
            raise ConfigError(
                "logger.mode=online, but this machine has no W&B key (WANDB_API_KEY or `wandb login`); use "
                "logger.mode=offline and `wandb sync` later, or logger.mode=auto"
            )
    if cfg.device != "auto" and not str(cfg.device).startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got '{cfg.device}'")
    unknown = [key for key in cfg.objective if key not in task.metrics]
    if unknown:
        raise ConfigError(
            f"objective: task={task.name} has no summary figure {', '.join(unknown)}; it has: {', '.join(task.metrics)}"
        )


# The options dataclass of each guidance, by the class a guidance config builds: its values are checked
# (Eq. 3's w_g >= 0, the K schedule, ...) without importing the tensor code.
GUIDANCE_OPTIONS = {
    schema._target_: options
    for schema, options in ((GuidanceConfig, GuidanceOptions), (SelfGuidedConfig, SelfGuidedOptions))
}


def check_finite(cfg: DictConfig) -> None:
    """No NaN or infinity anywhere in the config: a non-finite weight or threshold gives NaN distances
    or, worse, a run that looks fine (w_g = nan ran unguided, labelled guided)."""
    bad = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")
        elif isinstance(node, float) and not math.isfinite(node):
            bad.append(f"{path}={node}")

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    if bad:
        raise ConfigError(f"{', '.join(bad)}: every number must be finite")


def validate(cfg: DictConfig, task: Task | None = None, imports: bool = True) -> Any:
    """Every value the task uses checked, with messages that name the option, before any model loads;
    returns the task's options. `task` defaults to the one the config names. `imports=False` leaves out
    the checks that import each component's class (its keys against its signature), which load the ML
    stack: what `fsa` checks in about a second, before it touches the run folder."""
    task = task or task_of(cfg.task)
    check_keys(cfg)
    check_finite(cfg)
    options = task_options(cfg, task)
    _check_numbers(cfg)
    _check_names(cfg, task)
    if "guidance" in task.uses and cfg.guidance._target_ in GUIDANCE_OPTIONS:
        options_of(cfg.guidance, GUIDANCE_OPTIONS[cfg.guidance._target_], "guidance")
    if "attributes" in task.uses and cfg.get("attributes") is not None:
        attributes_options(cfg)
    if "robustness" in task.uses and cfg.get("robustness") is not None:
        robustness_options(cfg)
    task.check(cfg)
    if imports:
        check_targets(cfg, tuple(group for group in COMPONENT_GROUPS if group in task.uses))
        if "oracle" in task.uses and cfg.get("oracle") is not None:
            check_targets(cfg, ("oracle",))
        if "judges" in task.uses:
            for name, node in (cfg.get("judges") or {}).items():
                check_target(f"judges.{name}", node)
    return options


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved: what is saved and sent to W&B."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
