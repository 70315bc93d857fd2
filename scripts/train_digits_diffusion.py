"""Train fsa's embedded pixel-space diffusion model on scikit-learn's digits (training split only).

Deterministic for a given seed and torch build: rebuilds fsa/assets/digits/ddpm from scratch.
DDPM's standard schedule (1000 steps, linear betas 1e-4..0.02), epsilon prediction, MSE loss
(Ho et al. 2020, Algorithm 1), AdamW with warm-up and cosine decay, EMA weights saved.

    python scripts/train_digits_diffusion.py                 # the committed model
    python scripts/train_digits_diffusion.py --architecture plain --seed 1 --steps 2000   # ddpm_plain
    python scripts/train_digits_diffusion.py --architecture relu          # ddpm_relu (Kadkhodaie et al.'s layout)
    python scripts/train_digits_diffusion.py --steps 20 --out /tmp/ddpm   # a smoke run

The second model (`--architecture plain`, fsa/assets/digits/ddpm_plain) has another architecture
(self-attention only in its middle block) and another seed, the same data, noise schedule and recipe (half the steps):
task=embed gives both the same seeds (are DDIM latent spaces model-independent?).
The third (`--architecture relu`, fsa/assets/digits/ddpm_relu) is built like Kadkhodaie et al.'s UNet
(fsa/diffusion/relu_unet.py: convolution, layer norm and ReLU layers, a blind denoiser told no
timestep), for `task=represent`'s sparsity, selectivity and cluster analyses.
"""

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from fsa.data.digits import IMAGE_SIZE, digits_images
from fsa.diffusion.relu_unet import ReLUUNet
from fsa.diffusion.schedule import NoiseSchedule

ASSETS = Path(__file__).resolve().parents[1] / "fsa" / "assets" / "digits"
FOLDERS = {"attention": "ddpm", "plain": "ddpm_plain", "relu": "ddpm_relu"}  # --architecture -> asset folder
SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")


def digits_unet(architecture: str = "attention") -> UNet2DModel | ReLUUNet:
    """16 -> 8 -> 4 px, 32-64-64 channels, self-attention in the middle block; attention (the committed
    `ddpm`, 1.2 M parameters) also at 8 and 4 px on the way down and up, plain (`ddpm_plain`, 1.1 M) not.
    relu (`ddpm_relu`, 0.8 M): Kadkhodaie et al.'s layout at a quarter of their widths, 16-32-64 channels
    at 16, 8 and 4 px, 128 in the middle block at 2 px."""
    if architecture == "relu":
        return ReLUUNet(sample_size=IMAGE_SIZE, in_channels=1, out_channels=1, block_out_channels=(16, 32, 64))
    attention = architecture == "attention"
    down, up = ("AttnDownBlock2D", "AttnUpBlock2D") if attention else ("DownBlock2D", "UpBlock2D")
    return UNet2DModel(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", down, down),
        up_block_types=(up, up, "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32 if attention else 8,
    )


def train(
    steps: int,
    batch_size: int,
    lr: float,
    ema_decay: float,
    seed: int,
    out: Path,
    log_every: int,
    architecture: str = "attention",
) -> dict:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    images, _ = digits_images("train")
    data = images * 2 - 1  # the model works in [-1, 1]
    abar = NoiseSchedule.make(**SCHEDULE).alphas_cumprod.float()
    model = digits_unet(architecture)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warmup = min(200, steps // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    generator = torch.Generator().manual_seed(seed)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        x0 = data[torch.randint(0, len(data), (batch_size,), generator=generator)]
        t = torch.randint(0, len(abar), (batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * x0 + (1 - a).sqrt() * noise  # the forward process
        loss = F.mse_loss(model(z_t, t).sample, noise)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            print(f"step {step + 1}/{steps} loss {recent:.4f} ({time.perf_counter() - start:.0f}s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(out / "unet", safe_serialization=True)
    DDPMScheduler(**SCHEDULE, clip_sample=False).save_pretrained(out / "scheduler")
    tail = losses[-min(len(losses), 500) :]
    record = {
        "data": "scikit-learn digits, training split (1437 images, 80%, stratified, seed 0), 8x8 -> 16x16 bilinear",
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": lr,
        "ema_decay": ema_decay,
        "seed": seed,
        "architecture": architecture,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(tail) / len(tail),
        "final_loss_over_steps": len(tail),
        "wall_time_s": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--architecture", choices=tuple(FOLDERS), default="attention")
    parser.add_argument("--out", type=Path, default=None, help="default: fsa/assets/digits/<FOLDERS>")
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args()
    out = args.out or ASSETS / FOLDERS[args.architecture]
    record = train(
        args.steps, args.batch_size, args.lr, args.ema_decay, args.seed, out, args.log_every, args.architecture
    )
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
