"""What many tests share: the project's real configs composed as Hydra's runtime would (never a parallel
test config), fsa's commands in subprocesses, a script of scripts/ as a module, and tiny networks."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from diffusers import UNet2DModel
from filelock import FileLock, Timeout
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from fsa.config import register_configs
from fsa.diffusion.backbones import build_tiny_latent_diffusion
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


# The environment of every subprocess: offline, unbuffered, W&B quiet (conftest sets offline W&B).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}


def command(module: str, *args: str, env: dict | None = None, wait: bool = True, timeout: float = 600):
    """`python -m <module> ARGS` from the repository root: its CompletedProcess (output captured as
    text), or with wait=False the running Popen (stderr merged into the piped stdout)."""
    argv, environment = [sys.executable, "-m", module, *args], {**ENV, **(env or {})}
    if not wait:
        pipe, merged = subprocess.PIPE, subprocess.STDOUT
        return subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=pipe, stderr=merged, text=True)
    return subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)


def fsa(*args: str, env: dict | None = None, wait: bool = True, timeout: float = 600):
    """The `fsa` command (see `command`)."""
    return command("fsa", *args, env=env, wait=wait, timeout=timeout)


def fsa_report(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The `fsa-report` command."""
    return command("fsa.report", *args, env=env, timeout=300)


def run_fsa(overrides: list[str], folder: Path) -> dict:
    """One job in this process, as `fsa OVERRIDES hydra.run.dir=FOLDER` runs it; its summary."""
    from fsa.job import run

    return run(compose_config(overrides, folder), folder)


class Scenarios:
    """Scenario folders under `root` (shared by the session's workers), each built once: see conftest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, build: Callable[[Path], object], wait: bool = True) -> Path:
        """The folder of scenario `name`, made by `build(folder)` unless a worker made it already.
        With wait=False, a scenario another worker is building is left to it (its folder returned unfinished)."""
        folder, done = self.root / name, self.root / f"{name}.done"
        try:
            with FileLock(str(self.root / f"{name}.lock"), timeout=-1 if wait else 0):
                if not done.exists():
                    shutil.rmtree(folder, ignore_errors=True)  # a build that failed earlier in the session
                    folder.mkdir(parents=True)
                    build(folder)
                    done.touch()
        except Timeout:
            pass
        return folder

    def get_each(self, names: list[str], build: Callable[[str, Path], object]) -> dict[str, Path]:
        """Several scenarios that workers build side by side: this worker builds each one no other is
        building, then waits for the others' to finish."""
        for name in names:
            self.get(name, lambda folder, name=name: build(name, folder), wait=False)
        return {name: self.get(name, lambda folder, name=name: build(name, folder)) for name in names}


def summary_of(folder: Path) -> dict:
    """A complete run's summary.json."""
    return json.loads((folder / "summary.json").read_text())


def shared_run(name: str, overrides: list[str]) -> Callable:
    """A fixture of scenario `name`: one job with `overrides`, run in this process once per session,
    whichever test asks first; gives (its folder, its summary). The one way tests share a run:
    `embed_run = shared_run("embed", SMALL)` in a test module."""

    @pytest.fixture(scope="module")
    def fixture(scenarios: Scenarios) -> tuple[Path, dict]:
        folder = scenarios.get(name, lambda folder: run_fsa(overrides, folder))
        return folder, summary_of(folder)

    return fixture


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


def tiny_latent_setup(images: int = 2) -> tuple:
    """A tiny latent diffusion backbone, `SmallConvExtractor` and the features of `images` random images:
    the decoder tests' setup."""
    backbone = build_tiny_latent_diffusion(num_train_timesteps=1000)
    extractor = SmallConvExtractor()
    pictures = torch.rand(images, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    return backbone, extractor, extractor(extractor.prepare_generated(pictures))


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
