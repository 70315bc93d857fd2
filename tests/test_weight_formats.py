"""The weight files users have, each written by the test with tiny random weights in its real format
and loaded back through fsa's own loading code:

- Stable Diffusion's original single-file checkpoint (`sd-v1-4.ckpt`: a Lightning checkpoint whose
  `state_dict` holds the UNet, VAE and text encoder under the CompVis names) and a `.safetensors` of it;
- OpenAI's CLIP RN50 (`RN50.pt`, a TorchScript archive of a modified ResNet) and OpenCLIP's state dicts;
- torchvision's `.pth` state dicts (ResNet-50 through the paper's preset and the local `weights` map).
"""

import json
import sys
import types
from pathlib import Path

import open_clip
import pytest
import torch
import torchvision
import yaml
from helpers import compose_config
from hydra.utils import instantiate
from safetensors.torch import save_file

from fsa.diffusion.backbones import TINY_ARCHITECTURE, empty_prompt_embedding, latent_networks, load_stable_diffusion
from fsa.errors import WeightsUnavailableError
from fsa.extractors import OpenCLIPExtractor

# ---------------------------------------------------------------- Stable Diffusion, single file

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1"}
RESNET |= {"norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_names(config: dict) -> dict[str, str]:
    """diffusers module -> CompVis module, for a UNet of `layers_per_block` L and n levels: each down
    level is L input blocks (resnet, attention) and one downsampler, each up level L + 1 output blocks
    whose last also holds the upsampler."""
    layers, levels = config["layers_per_block"], len(config["block_out_channels"])
    names = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for i in range(levels):
        for j in range(layers):
            names[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{1 + i * (layers + 1) + j}.0"
            names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{1 + i * (layers + 1) + j}.1"
        for j in range(layers + 1):
            names[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{i * (layers + 1) + j}.0"
            names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{i * (layers + 1) + j}.1"
        if i < levels - 1:
            names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op"
            slot = 2 if "CrossAttn" in config["up_block_types"][i] else 1
            names[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{i * (layers + 1) + layers}.{slot}.conv"
    return names


def vae_names(config: dict) -> dict[str, str]:
    """diffusers module -> CompVis module for the autoencoder (its decoder levels count down)."""
    levels = len(config["block_out_channels"])
    names = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        names |= {f"{part}.conv_in": f"{part}.conv_in", f"{part}.conv_out": f"{part}.conv_out"}
        names[f"{part}.conv_norm_out"] = f"{part}.norm_out"
        names[f"{part}.mid_block.resnets.0"] = f"{part}.mid.block_1"
        names[f"{part}.mid_block.resnets.1"] = f"{part}.mid.block_2"
        names[f"{part}.mid_block.attentions.0"] = f"{part}.mid.attn_1"
    for i in range(levels):
        for j in range(config["layers_per_block"] + 1):
            names[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
            names[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{levels - 1 - i}.block.{j}"
        names[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        names[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{levels - 1 - i}.upsample.conv"
    return names


def rename(state: dict, names: dict[str, str], inner) -> dict[str, torch.Tensor]:
    """Each key's longest listed module prefix renamed, then the layer inside it by `inner(prefix)`."""
    out = {}
    for key, value in state.items():
        prefix = max((p for p in names if key.startswith(p + ".")), key=len)
        rest, layers = key[len(prefix) + 1 :], inner(prefix)
        layer = max((k for k in layers if rest.startswith(k + ".")), key=len, default=None)
        if layer is not None:
            rest = layers[layer] + rest[len(layer) :]
        out[f"{names[prefix]}.{rest}"] = value
    return out


def unet_inner(prefix: str) -> dict[str, str]:
    return RESNET if ".resnets." in prefix else {}


def vae_inner(prefix: str) -> dict[str, str]:
    return (
        {"conv_shortcut": "nin_shortcut"}
        if ".resnets." in prefix
        else VAE_ATTENTION
        if ".attentions." in prefix
        else {}
    )


def original_checkpoint(architecture: dict) -> tuple[dict[str, torch.Tensor], tuple]:
    """Random tiny networks, and their weights under the names of an original SD checkpoint."""
    torch.manual_seed(3)
    unet, vae, text_encoder = latent_networks(architecture)
    unet_state = rename(unet.state_dict(), unet_names(architecture["unet"]), unet_inner)
    state = {f"model.diffusion_model.{key}": value for key, value in unet_state.items()}
    for key, value in rename(vae.state_dict(), vae_names(architecture["vae"]), vae_inner).items():
        linear = ".attn_1." in key and value.dim() == 2  # CompVis's attention projections are 1x1 convolutions
        state[f"first_stage_model.{key}"] = value[..., None, None] if linear else value
    state |= {f"cond_stage_model.transformer.{k}": v for k, v in text_encoder.state_dict().items()}
    return state, (unet, vae, text_encoder)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory):
    """The tiny architecture as a YAML file, an original `.ckpt` (with the Lightning callback object the
    real file carries, pickled under Lightning's own class name) and a `.safetensors` of the same weights."""
    folder = tmp_path_factory.mktemp("sd")
    architecture = json.loads(json.dumps(TINY_ARCHITECTURE))  # tuples -> lists, as YAML has them
    (folder / "tiny.yaml").write_text(yaml.safe_dump(architecture))
    state, networks = original_checkpoint(architecture)
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")
    modules = {name: types.ModuleType(name) for name in names}  # Lightning itself is not installed
    checkpoint_class = type("ModelCheckpoint", (), {"__module__": names[-1]})
    modules[names[-1]].ModelCheckpoint = checkpoint_class
    sys.modules.update(modules)
    try:
        callback = checkpoint_class()
        callback.best_model_score = torch.tensor(0.1)
        torch.save({"state_dict": state, "global_step": 470000, "callbacks": {"ckpt": callback}}, folder / "tiny.ckpt")
    finally:
        for name in names:
            del sys.modules[name]
    save_file(state, folder / "tiny.safetensors")
    return folder, networks


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_original_single_file_checkpoint(tiny_sd, suffix):
    folder, (unet, vae, text_encoder) = tiny_sd
    backbone = load_stable_diffusion(str(folder / f"tiny{suffix}"), architecture=str(folder / "tiny.yaml"))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_eps = unet(
            z, torch.full((2,), 500), encoder_hidden_states=empty_prompt_embedding(text_encoder).expand(2, -1, -1)
        ).sample
        torch.testing.assert_close(backbone.predict_noise(z, 500), expected_eps, rtol=0, atol=0)
        # The VAE's attention projections come back from 1x1 convolutions as strided views: another
        # summation order in the matmul, so the last bits may differ.
        torch.testing.assert_close(backbone.decode(z), vae.decode(z / 0.18215).sample, rtol=0, atol=1e-5)
    assert backbone.schedule.num_train_timesteps == 1000 and backbone.name == f"tiny{suffix}"


def test_a_checkpoint_of_another_architecture_is_refused_clearly(tiny_sd):
    folder, _ = tiny_sd
    with pytest.raises(WeightsUnavailableError, match="does not fit the networks of Stable Diffusion v1"):
        load_stable_diffusion(str(folder / "tiny.safetensors"))  # SD v1's own architecture: the default


def test_model_preset_reads_the_local_weights_map(tiny_sd):
    folder, _ = tiny_sd
    cfg = compose_config(
        ["model=sd14", f"weights.sd14={folder / 'tiny.ckpt'}", f"model.architecture={folder / 'tiny.yaml'}"]
    )
    assert cfg.model.path == str(folder / "tiny.ckpt")
    assert instantiate(cfg.model).latent_shape == (4, 8, 8)


# ---------------------------------------------------------------- CLIP RN50


def tiny_rn_clip() -> open_clip.CLIP:
    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(layers=[1, 1, 1, 1], width=8, head_width=8, image_size=32)
    text = open_clip.CLIPTextCfg(context_length=16, vocab_size=49408, width=16, heads=2, layers=1)
    return open_clip.CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, quick_gelu=True).eval()


@pytest.fixture(scope="module")
def rn_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tmp_path_factory.mktemp("rn") / "TinyRN-fsa-test.json"
    vision = {"layers": [1, 1, 1, 1], "width": 8, "head_width": 8, "image_size": 32}
    config.write_text(
        json.dumps(
            {
                "embed_dim": 16,
                "quick_gelu": True,
                "vision_cfg": vision,
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
            }
        )
    )
    return config


@pytest.mark.filterwarnings("ignore:.*TorchScript:UserWarning", "ignore::FutureWarning")
def test_openai_rn50_torchscript_archive(tmp_path, rn_config):
    """OpenAI's RN50.pt is a TorchScript archive of a modified ResNet CLIP: this one is a tiny one."""
    model = tiny_rn_clip()
    model.attn_mask = model._buffers.pop("attn_mask")  # OpenAI's archives hold it as a plain attribute
    archive = tmp_path / "RN50.pt"
    torch.jit.save(torch.jit.script(model), archive)
    extractor = OpenCLIPExtractor(rn_config.stem, pretrained=None, weights=str(archive), model_config=str(rn_config))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(extractor(x), model.encode_image(x).float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("save", ["torch", "safetensors"])
def test_openclip_state_dict_files(tmp_path, rn_config, save):
    """OpenCLIP's own files (open_clip_pytorch_model.bin, open_clip_model.safetensors): plain state dicts."""
    model = tiny_rn_clip()
    file = tmp_path / ("open_clip_pytorch_model.bin" if save == "torch" else "open_clip_model.safetensors")
    if save == "torch":
        torch.save(model.state_dict(), file)
    else:
        save_file(model.state_dict(), file)
    extractor = OpenCLIPExtractor(rn_config.stem, pretrained=None, weights=str(file), model_config=str(rn_config))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(extractor(x), model.encode_image(x), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- torchvision


def test_torchvision_resnet50_pth_through_the_paper_preset(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    file = tmp_path / "resnet50-0676ba61.pth"  # torchvision's own name for IMAGENET1K_V1
    torch.save(model.state_dict(), file)
    extractor = instantiate(compose_config(["extractor=resnet50", f"weights.resnet50={file}"]).extractor)
    x = torch.randn(1, 3, 224, 224)
    model.fc = torch.nn.Identity()
    torch.testing.assert_close(extractor(x), model(x), rtol=0, atol=1e-5)
