"""Compose the project's real configs (never a parallel test config), as Hydra's runtime would."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from fsa.config import register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """The composed config with `${hydra:...}` resolvable and the `hydra` node removed."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg
