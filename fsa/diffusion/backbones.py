"""Diffusion backbones: the noise predictor eps_theta(z_t, t) and the decoder from z_0 to pixels.

`LatentDiffusion` is Stable Diffusion's layout (UNet in a VAE's latent space, conditioned on the
empty prompt's text embedding, no classifier-free guidance); `PixelDiffusion` is a diffusers
`UNet2DModel` or fsa's `ReLUUNet` in pixel space (the decoder is the identity). Both are frozen: the guided decoder
differentiates with respect to the latent only.
"""

import logging
from pathlib import Path
from typing import Any

import torch
import yaml
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from torch import Tensor, nn
from transformers import CLIPTextConfig, CLIPTextModel

from fsa import ASSETS_DIR
from fsa.diffusion.relu_unet import ReLUUNet
from fsa.diffusion.schedule import NoiseSchedule
from fsa.errors import WeightsUnavailableError
from fsa.hub import fail_fast_offline, hub_cached, hub_downloads
from fsa.weights import Download, load_state_dict_file, looks_local

log = logging.getLogger(__name__)

SD_ARCHITECTURE = ASSETS_DIR / "sd14" / "architecture.yaml"
LDM_TEXT_PREFIX = "cond_stage_model.transformer."  # the text encoder's keys in an original checkpoint
# CLIP's byte-pair vocabulary: start- and end-of-text ids. Stable Diffusion's tokenizer pads with
# the end-of-text token, so "" becomes [SOT, EOT, EOT, ...]. Written out rather than tokenised
# because transformers' CLIPTokenizer silently breaks offline.
CLIP_SOT, CLIP_EOT = 49406, 49407
PIXEL_UNETS = {cls.__name__: cls for cls in (UNet2DModel, ReLUUNet)}  # a saved config's _class_name -> class


class DiffusionBackbone(nn.Module):
    """eps_theta and the decoder, with the schedule they were trained on."""

    def __init__(self, schedule: NoiseSchedule, latent_shape: tuple[int, int, int], name: str) -> None:
        super().__init__()
        self.schedule = schedule
        self.latent_shape = latent_shape
        self.name = name

    def freeze(self) -> "DiffusionBackbone":
        self.eval()
        self.requires_grad_(False)
        return self

    def predict_noise(self, z_t: Tensor, t: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z0: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Latent z_0 -> image (B, 3, H, W), roughly in [-1, 1], not clamped."""
        raise NotImplementedError

    def encode(self, image: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Image (B, 3, H, W) in [-1, 1] at the model's size -> its latent z_0 (differentiable)."""
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        """The side of the images it makes, in pixels (the latent's side times the VAE's factor)."""
        return self.latent_shape[1] * getattr(self, "vae_factor", 1)

    def _timesteps(self, z_t: Tensor, t: int) -> Tensor:
        return torch.full((z_t.shape[0],), t, device=z_t.device, dtype=torch.long)


class LatentDiffusion(DiffusionBackbone):
    """Stable Diffusion: UNet on 4-channel latents, VAE decoder, empty-prompt conditioning."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        empty_prompt_embedding: Tensor,
        schedule: NoiseSchedule,
        image_size: int | None = None,
        name: str = "latent",
    ) -> None:
        self.vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        latent_size = unet.config.sample_size if image_size is None else image_size // self.vae_factor
        super().__init__(schedule, (unet.config.in_channels, latent_size, latent_size), name)
        self.unet = unet
        self.vae = vae
        self.scaling_factor = float(vae.config.scaling_factor)  # 0.18215 for SD 1.x
        self.register_buffer("cond", empty_prompt_embedding, persistent=False)
        self.freeze()

    def predict_noise(self, z_t: Tensor, t: int) -> Tensor:
        cond = self.cond.expand(z_t.shape[0], -1, -1).to(z_t.dtype)
        return self.unet(z_t, self._timesteps(z_t, t), encoder_hidden_states=cond).sample

    def decode(self, z0: Tensor) -> Tensor:
        return self.vae.decode(z0 / self.scaling_factor).sample

    def encode(self, image: Tensor) -> Tensor:
        return self.vae.encode(image).latent_dist.mean * self.scaling_factor  # the posterior's mean


class PixelDiffusion(DiffusionBackbone):
    """A pixel-space UNet (diffusers' UNet2DModel or fsa's ReLUUNet): z_0 is the image itself."""

    def __init__(self, unet: UNet2DModel | ReLUUNet, schedule: NoiseSchedule, name: str = "pixel") -> None:
        size = unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        super().__init__(schedule, (unet.config.in_channels, size, size), name)
        self.unet = unet
        self.freeze()

    def predict_noise(self, z_t: Tensor, t: int) -> Tensor:
        return self.unet(z_t, self._timesteps(z_t, t)).sample

    def decode(self, z0: Tensor) -> Tensor:
        # A 1-channel model (e.g. digits) is shown to RGB extractors as a grey image.
        return z0.expand(-1, 3, -1, -1) if z0.shape[1] == 1 else z0

    def encode(self, image: Tensor) -> Tensor:
        return image.mean(dim=1, keepdim=True) if self.latent_shape[0] == 1 else image


def empty_prompt_embedding(text_encoder: CLIPTextModel) -> Tensor:
    """The text encoder's output for "" padded to its context length: SD's unconditional input."""
    length = text_encoder.config.max_position_embeddings
    ids = torch.full((1, length), CLIP_EOT, dtype=torch.long)
    ids[0, 0] = CLIP_SOT
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device)).last_hidden_state


def _missing_weights(what: str, path: str, option: str, error: Exception) -> WeightsUnavailableError:
    if path.startswith((".", "/", "~")) or Path(path).exists():
        advice = f"check the folder (a diffusers layout) and pass it as {option}=/path/to/folder"
    else:
        advice = (
            "without network only the Hugging Face cache is read: download it on a machine with network "
            f"(e.g. `hf download {path}`), copy the folder here and pass {option}=/path/to/folder"
        )
    return WeightsUnavailableError(f"could not load {what} from '{path}' ({type(error).__name__}: {error}); {advice}")


def stable_diffusion_architecture(path: str | None = None) -> dict[str, dict[str, Any]]:
    """The networks' keyword arguments (unet, vae, text_encoder, scheduler): Stable Diffusion v1's, as
    fsa ships them, or those of another YAML file written the same way."""
    file = Path(path).expanduser() if path else SD_ARCHITECTURE
    if not file.is_file():
        raise WeightsUnavailableError(f"model.architecture: '{file}' does not exist")
    architecture = yaml.safe_load(file.read_text())
    if not isinstance(architecture, dict) or set(architecture) != {"unet", "vae", "text_encoder", "scheduler"}:
        raise WeightsUnavailableError(f"model.architecture: '{file}' needs unet, vae, text_encoder and scheduler")
    return architecture


def latent_networks(
    architecture: dict[str, dict[str, Any]],
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """The UNet, VAE and text encoder an architecture describes, randomly initialised."""
    return (
        UNet2DConditionModel(**architecture["unet"]),
        AutoencoderKL(**architecture["vae"]),
        CLIPTextModel(CLIPTextConfig(**architecture["text_encoder"])),
    )


def load_stable_diffusion(
    path: str = "CompVis/stable-diffusion-v1-4",
    image_size: int | None = None,
    revision: str | None = None,
    architecture: str | None = None,
) -> LatentDiffusion:
    """Stable Diffusion from a diffusers folder or hub id (unet/, vae/, text_encoder/, scheduler/), or from
    an original single-file checkpoint (`sd-v1-4.ckpt`, or a `.safetensors` of it) with the networks that
    `architecture` describes (null: Stable Diffusion v1's, shipped with fsa)."""
    file = Path(path).expanduser()
    if file.is_file():
        return _from_single_file(file, image_size, stable_diffusion_architecture(architecture))
    kwargs = {"revision": revision} if revision else {}
    try:
        with fail_fast_offline():
            unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kwargs)
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **kwargs)
            scheduler_config = DDPMScheduler.load_config(path, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as error:
        raise _missing_weights("the Stable Diffusion model", path, "model.path", error) from error
    schedule = NoiseSchedule.from_scheduler_config(scheduler_config)
    name = Path(path).name if Path(path).exists() else path
    return LatentDiffusion(unet, vae, empty_prompt_embedding(text_encoder), schedule, image_size, name)


def _from_single_file(file: Path, image_size: int | None, architecture: dict[str, dict[str, Any]]) -> LatentDiffusion:
    """An original (CompVis) checkpoint: one state dict with the UNet under `model.diffusion_model.`, the
    VAE under `first_stage_model.` and the text encoder under `cond_stage_model.transformer.`, renamed
    to diffusers' layout by diffusers' own converters. Read by fsa's safe reader (weights only); the
    non-EMA UNet weights, as the authors' code loads them (their config has use_ema: False)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    state = load_state_dict_file(file, "the Stable Diffusion checkpoint")
    unet, vae, text_encoder = latent_networks(architecture)
    text = {key.removeprefix(LDM_TEXT_PREFIX): value for key, value in state.items() if key.startswith(LDM_TEXT_PREFIX)}
    try:
        unet.load_state_dict(convert_ldm_unet_checkpoint(state, architecture["unet"]))
        vae.load_state_dict(convert_ldm_vae_checkpoint(state, architecture["vae"]))
        missing, unexpected = text_encoder.load_state_dict(text, strict=False)
        unexpected = [key for key in unexpected if not key.endswith("position_ids")]  # a buffer in older files
        if missing or unexpected:
            raise RuntimeError(f"text encoder: missing {missing[:3]}, unexpected {unexpected[:3]}")
    except (RuntimeError, KeyError) as error:
        raise WeightsUnavailableError(
            f"'{file}' does not fit the networks of {architecture_name(architecture)} ({error}); "
            "is it a Stable Diffusion v1 checkpoint? Another architecture: model.architecture=/path/to/its.yaml"
        ) from None
    schedule = NoiseSchedule.from_scheduler_config(architecture["scheduler"])
    return LatentDiffusion(unet, vae, empty_prompt_embedding(text_encoder), schedule, image_size, file.name)


def architecture_name(architecture: dict[str, dict[str, Any]]) -> str:
    return "Stable Diffusion v1" if architecture == stable_diffusion_architecture() else "model.architecture"


def load_pixel_diffusion(path: str, subfolder: str | None = None) -> PixelDiffusion:
    """A pixel-space UNet (hub id or local folder) with its scheduler config: diffusers' UNet2DModel, or
    the class its saved config names among `PIXEL_UNETS` (fsa's ReLUUNet)."""
    try:
        with fail_fast_offline():
            name = UNet2DModel.load_config(path, subfolder=subfolder).get("_class_name", "UNet2DModel")
            if name not in PIXEL_UNETS:
                raise ValueError(f"its config names class '{name}'; fsa reads {', '.join(PIXEL_UNETS)}")
            unet = PIXEL_UNETS[name].from_pretrained(path, subfolder=subfolder)
            scheduler_config = _load_scheduler_config(path, subfolder)
    except (OSError, ValueError) as error:
        raise _missing_weights("the pixel diffusion model", path, "model.path", error) from error
    return PixelDiffusion(unet, NoiseSchedule.from_scheduler_config(scheduler_config), Path(path).name)


def _load_scheduler_config(path: str, unet_subfolder: str | None) -> dict:
    """Scheduler config beside the UNet: `scheduler/` (pipeline layout) or the folder itself."""
    for subfolder in ("scheduler", unet_subfolder):
        try:
            return DDPMScheduler.load_config(path, subfolder=subfolder, config_name="scheduler_config.json")
        except OSError:
            continue
    raise OSError(f"no scheduler_config.json in '{path}' (looked in scheduler/ and {unet_subfolder or '.'})")


# Stable Diffusion's layout at a size for CPU tests (latent 4x8x8, image 64): two UNet levels, four
# VAE blocks (SD's x8 down-sampling), a one-layer text encoder with CLIP's vocabulary.
TINY_ARCHITECTURE: dict[str, dict[str, Any]] = {
    "unet": {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "cross_attention_dim": 16,
        "attention_head_dim": 4,
        "norm_num_groups": 4,
    },
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": (8, 8, 16, 16),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "layers_per_block": 1,
        "scaling_factor": 0.18215,
    },
    "text_encoder": {
        "vocab_size": 49408,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
    },
    "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear"},
}


def tiny_latent_components(seed: int = 0) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """Randomly initialised SD-shaped components, small enough for CPU tests (`TINY_ARCHITECTURE`)."""
    torch.manual_seed(seed)
    return latent_networks(TINY_ARCHITECTURE)


def build_tiny_latent_diffusion(
    seed: int = 0, num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear"
) -> LatentDiffusion:
    """A random latent model for tests and debugging: its images mean nothing."""
    log.warning(
        "model=tiny: a RANDOMLY INITIALISED diffusion model built in code. Its images are noise-like "
        "and mean nothing; use it to check that the pipeline runs, not to analyse a feature space."
    )
    unet, vae, text_encoder = tiny_latent_components(seed)
    schedule = NoiseSchedule.make(num_train_timesteps, beta_schedule=beta_schedule)
    return LatentDiffusion(unet, vae, empty_prompt_embedding(text_encoder), schedule, name="tiny (random)")


def download(target: str, path: str | None = None, subfolder: str | None = None, **_: Any) -> Download | None:
    """The hub repository a loader downloads from when `path` is a hub id (None: a local path, checked
    by fsa.weights, or a loader that reads no path)."""
    if not path or looks_local(str(path)):
        return None
    config = f"{subfolder or 'unet'}/config.json" if target == "load_stable_diffusion" or subfolder else "config.json"
    in_cache = hub_cached(str(path), config)
    return Download(str(path), in_cache, in_cache or hub_downloads())
