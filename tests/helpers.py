"""Compose the project's real configs (never a parallel test config), as Hydra's runtime would."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from diffusers import UNet2DModel
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from fsa.config import register_configs
from fsa.extractors.base import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "fsa" / "conf"


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


def load_script(name: str) -> ModuleType:
    """A script of scripts/ as a module (they are programs, not a package). As when one runs, scripts/
    is on the import path, so a script can import another (gpu_figures imports bench)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.append(str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A tiny open_clip ViT CLIP with the real vocabulary (so the bundled tokenizer works).
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


class TinyImageExtractor(FeatureExtractor):
    """A random conv + average pool (features of size `dim`, no text tower): enough to turn images into targets."""

    def __init__(self, size: int = 16, dim: int = 8) -> None:
        super().__init__("tiny", size, IMAGENET_MEAN, IMAGENET_STD)
        torch.manual_seed(0)
        self.network = nn.Sequential(nn.Conv2d(3, dim, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.freeze()


class SmallConvExtractor(FeatureExtractor):
    """Two random strided convs (32 px input, 32-d features): cheap, but with a real gradient path."""

    def __init__(self) -> None:
        super().__init__("small", 32, IMAGENET_MEAN, IMAGENET_STD)
        torch.manual_seed(1)
        self.network = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.AdaptiveAvgPool2d(2))
        self.freeze()


def tiny_pixel_unet(channels: int, size: int, widths: tuple[int, int] = (4, 8)) -> UNet2DModel:
    """A random two-level diffusers UNet2DModel with attention at the lower level."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=4,
    )
