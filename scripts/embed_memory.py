"""Memory that gradient descent through the DDIM generator keeps for its backward pass, against the
number of steps n, with and without per-step checkpointing (`task.checkpoint`).

Counts the bytes of every tensor autograd saves during one forward pass of f_theta(x_T) (saved-tensor
hooks): exact and repeatable on any machine, unlike a process's peak memory on a CPU. The network's
weights are not counted (they exist either way).

    python scripts/embed_memory.py                     # the embedded digits model, a batch of 16 seeds
    python scripts/embed_memory.py --steps 5 10 --batch 4
"""

from __future__ import annotations

import argparse

import torch

from fsa import ASSETS_DIR
from fsa.diffusion.backbones import DiffusionBackbone, load_pixel_diffusion
from fsa.diffusion.samplers import strided_timesteps
from fsa.embedding import ddim


def saved_bytes(backbone: DiffusionBackbone, steps: int, batch: int, checkpoint: bool) -> int:
    """Bytes autograd keeps for backward while f_theta runs `steps` DDIM steps on `batch` seeds."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    seed = torch.randn(batch, *backbone.latent_shape, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        ddim.generate(backbone, seed, strided_timesteps(backbone.schedule.num_train_timesteps, steps), checkpoint)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    backbone = load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), "unet")
    print(f"activation memory kept for backward, digits DDPM, batch {args.batch} (MiB)")
    print("| DDIM steps n | without checkpointing | with checkpointing | ratio |")
    print("|---|---|---|---|")
    for steps in args.steps:
        plain = saved_bytes(backbone, steps, args.batch, checkpoint=False) / 2**20
        flat = saved_bytes(backbone, steps, args.batch, checkpoint=True) / 2**20
        print(f"| {steps} | {plain:.1f} | {flat:.3f} | {plain / flat:.0f}x |")


if __name__ == "__main__":
    main()
