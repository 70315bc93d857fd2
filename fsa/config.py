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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from fsa import ASSETS_DIR, CONF_DIR, default_data_dir
from fsa.attributes.options import AttributesOptions
from fsa.embedding.options import EmbedOptions
from fsa.errors import ConfigError
from fsa.guidance.options import GuidanceOptions, SelfGuidedOptions
from fsa.representation.options import RepresentOptions
from fsa.speed import DTYPE_NAMES, SpeedOptions

# This module loads no ML stack (torch, diffusers, ...): `fsa --help` and a rejected override stay fast.
LOGGER_MODES = ("auto", "online", "offline", "disabled")
BASELINE_NAMES = ("unguided", "printed_sign")
TASKS = ("guide", "embed", "represent")
T = TypeVar("T")


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
UNET_BLOCK_EXTRACTOR = "fsa.extractors.unet_block.UNetBlockExtractor"
GUIDANCE_SCHEMAS = {"schema_paper": GuidanceConfig, "schema_self_guided": SelfGuidedConfig}
AttributesConfig = _schema_of(AttributesOptions, "AttributesConfig")  # built as the options themselves
SpeedConfig = _schema_of(SpeedOptions, "SpeedConfig")


@dataclass
class LoggerConfig:
    mode: str = "auto"  # auto: online when logged in to W&B, else offline
    project: str = "fsa"
    entity: str | None = None
    group: str | None = None  # default: the multirun sweep folder, or the run folder
    name: str | None = None  # default: the job's overrides
    tags: list[str] = field(default_factory=list)


@dataclass
class FsaConfig:
    task: Any = None  # {name: guide}, {name: embed, ...EmbedOptions} or {name: represent, ...RepresentOptions}
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
    weights: dict[str, Any] = field(default_factory=dict)  # model name -> its files on this machine
    data_dir: str = ""
    record_gradients: int = 0
    checkpoint_every: int = 500
    resume: str | None = None
    fresh: bool = False
    progress: bool = True


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
        node = cfg.get(group)
        if node is None or "_target_" not in node:
            raise ConfigError(f"config group '{group}' is missing or has no _target_")
        target = _resolve_target(node._target_)
        kwargs = {k: v for k, v in node.items() if not str(k).startswith("_")}
        try:
            inspect.signature(target).bind(**kwargs)
        except TypeError as error:
            raise ConfigError(f"{group}: {error} (for {node._target_})") from error


def check_keys(cfg: DictConfig) -> None:
    """No key the schema does not know: `+foo=1` adds a key past Hydra's struct mode, and an unknown
    key must be an error, not something silently ignored."""
    top = {f.name for f in dataclasses.fields(FsaConfig)}
    unknown = [str(k) for k in cfg if k not in top]
    logger_keys = {f.name for f in dataclasses.fields(LoggerConfig)}
    unknown += [f"logger.{k}" for k in cfg.logger or {} if k not in logger_keys]
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; `fsa --help` lists the groups and keys")


def _task_options(cfg: DictConfig, options: type[T]) -> T:
    """The task's settings as its options dataclass, checked: an unknown key or a bad value is a ConfigError."""
    values = {str(k): v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items() if k != "name"}
    try:
        return options(**values)
    except TypeError as error:
        name = cfg.task.name
        raise ConfigError(f"task: {error}; the keys of task={name} are in fsa/conf/task/{name}.yaml") from error


def embed_options(cfg: DictConfig) -> EmbedOptions:
    """`task=embed`'s settings, checked."""
    return _task_options(cfg, EmbedOptions)


def represent_options(cfg: DictConfig) -> RepresentOptions:
    """`task=represent`'s settings, checked."""
    return _task_options(cfg, RepresentOptions)


def attributes_options(cfg: DictConfig) -> AttributesOptions:
    """The `attributes` group's settings, checked (torch-free: the measures are imported when a run starts)."""
    values = OmegaConf.to_container(cfg.attributes, resolve=True)
    return AttributesOptions(**{str(k): v for k, v in values.items() if k != "_target_"})


def validate(cfg: DictConfig) -> None:
    """Value checks that the types alone cannot express, with messages that name the option."""
    check_keys(cfg)
    name = (cfg.get("task") or {}).get("name")
    if name not in TASKS:
        raise ConfigError(f"task must be one of {TASKS} (task=guide, task=embed or task=represent), got '{name}'")
    if name == "embed":
        embed_options(cfg)
    if name == "represent":
        represent_options(cfg)
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 (0: only on SIGTERM/SIGUSR1), got {cfg.checkpoint_every}")
    if cfg.record_gradients < 0:
        raise ConfigError(f"record_gradients must be >= 0, got {cfg.record_gradients}")
    for key in ("max_targets", "max_samples"):
        if cfg[key] is not None and cfg[key] < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {cfg[key]}")
    if cfg.targets_per_batch < 1:
        raise ConfigError(f"targets_per_batch must be >= 1, got {cfg.targets_per_batch}")
    unknown = [b for b in cfg.baselines if b not in BASELINE_NAMES]
    if unknown or len(set(cfg.baselines)) != len(cfg.baselines):
        raise ConfigError(f"baselines must be distinct names from {BASELINE_NAMES}, got {list(cfg.baselines)}")
    if cfg.dtype not in DTYPE_NAMES:
        raise ConfigError(f"dtype must be one of {DTYPE_NAMES}, got '{cfg.dtype}'")
    if cfg.logger is not None and cfg.logger.mode not in LOGGER_MODES:
        raise ConfigError(f"logger.mode must be one of {LOGGER_MODES}, got '{cfg.logger.mode}'")
    if cfg.device != "auto" and not str(cfg.device).startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"device must be auto, cpu, cuda[:N] or mps, got '{cfg.device}'")
    check_targets(cfg, ("model", "sampler", "extractor", "dataset", "guidance", "speed"))
    if cfg.guidance._target_ == SelfGuidedConfig._target_ and cfg.extractor._target_ != UNET_BLOCK_EXTRACTOR:
        raise ConfigError(
            "guidance=self_guided matches the diffusion model's own representation: it needs "
            f"extractor=unet_block, got {cfg.extractor._target_}"
        )
    if cfg.get("oracle") is not None:
        check_targets(cfg, ("oracle",))
    if cfg.get("attributes") is not None:
        attributes_options(cfg)


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved: what is saved and sent to W&B."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
