"""Train the embedding networks of `task=embed` for fsa's embedded digits DDPM (Asperti et al., Table 1).

Each network maps an image x_0 to a seed x_T of the deterministic DDIM generator f_theta (eta = 0,
`--num-steps` steps). Two trainings:

- `--loss seed` (networks `<kind>`): MSE between the network's seed and the true one, on pairs
  (f_theta(x_T), x_T) the diffusion model makes itself from random seeds (no dataset image is used);
- `--loss generator` (networks `<kind>_generator`): the paper's own loss, the distance between x and
  f_theta(network(x)), backpropagated through every DDIM step of the generator (each step recomputed
  in the backward pass, so memory is one step's), on the digits' training split; warm-started from the
  seed-trained `<kind>` in `--out` when it is there (`--cold` starts from random weights).

Both are judged on the digits' held-out test split (never seen by any fsa model) and on fresh generated
images, by the reconstruction MSE of f_theta(network(x)) against x, in [0, 1] pixel units as the paper
reports it. Writes fsa/assets/digits/embedders/<name>.safetensors, <name>.json and MODEL_CARD.md (every
network in the folder).

    python scripts/train_digits_embedders.py                       # the seed-trained networks (~15 min on 2 cores)
    python scripts/train_digits_embedders.py --loss generator      # through the generator (see the card's times)
    python scripts/train_digits_embedders.py --pairs 256 --epochs 1 --out /tmp/embedders   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fsa import ASSETS_DIR
from fsa.data.digits import digits_images
from fsa.diffusion.backbones import DiffusionBackbone, load_pixel_diffusion
from fsa.diffusion.samplers import strided_timesteps
from fsa.embedding import ddim
from fsa.embedding.networks import GENERATOR, KINDS, build, parameter_count, save
from fsa.embedding.networks import load as load_network
from fsa.tracking.progress import LoopProgress

DEFAULT_OUT = ASSETS_DIR / "digits" / "embedders"
LEARNING_RATES = {"conv1": 1e-2, "conv3": 3e-3, "unet": 1e-3}


def make_pairs(backbone: DiffusionBackbone, count: int, timesteps: list[int], seed: int) -> tuple[torch.Tensor, ...]:
    """(images, seeds): `count` seeds x_T ~ N(0, I) and what the generator makes of them."""
    seeds = torch.randn(count, *backbone.latent_shape, generator=torch.Generator().manual_seed(seed))
    chunks, images = seeds.split(500), []
    progress = LoopProgress(f"generating {count} pairs", len(chunks))
    with torch.no_grad():
        for done, chunk in enumerate(chunks, start=1):
            images.append(ddim.generate(backbone, chunk, timesteps))
            progress(done, f"{done * 500 if done < len(chunks) else count} images")
    return torch.cat(images), seeds


def reconstruction_mse(backbone: DiffusionBackbone, network: torch.nn.Module, images: torch.Tensor, timesteps) -> float:
    """Mean per-pixel squared error of f_theta(network(x)) against x, in [0, 1] units (models work in [-1, 1])."""
    with torch.no_grad():
        made = torch.cat([ddim.generate(backbone, network(chunk), timesteps) for chunk in images.split(500)])
    return float(((made - images) / 2).pow(2).mean())


def train(kind: str, images: torch.Tensor, seeds: torch.Tensor, epochs: int, batch_size: int, seed: int) -> tuple:
    torch.manual_seed(seed)
    network = build(kind, images.shape[1])
    optimiser = torch.optim.Adam(network.parameters(), lr=LEARNING_RATES[kind])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs * (len(images) // batch_size + 1))
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    batches = -(-len(images) // batch_size)
    progress = LoopProgress(f"training {kind}", epochs * batches)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(batch_size):
            loss = F.mse_loss(network(images[batch]), seeds[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            progress(len(losses), f"seed MSE {sum(losses[-50:]) / len(losses[-50:]):.4f}")
    return network.eval().requires_grad_(False), sum(losses[-50:]) / len(losses[-50:])


def train_through_generator(
    kind: str,
    backbone: DiffusionBackbone,
    images: torch.Tensor,
    timesteps: list[int],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    start: torch.nn.Module | None = None,
) -> tuple:
    """Asperti et al.'s loss: the mean squared distance between x and f_theta(network(x)), through the
    generator's steps. `start`: a trained network to go on from (its weights are changed)."""
    torch.manual_seed(seed)
    network = (start if start is not None else build(kind, images.shape[1])).train().requires_grad_(True)
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    progress = LoopProgress(f"training {kind}{GENERATOR}", steps)
    for step in range(steps):
        batch = images[torch.randint(len(images), (batch_size,), generator=generator)]
        loss = F.mse_loss(ddim.generate(backbone, network(batch), timesteps, checkpoint=True), batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item() / 4)  # [0, 1] pixel units: the models work in [-1, 1]
        progress(step + 1, f"image MSE {sum(losses[-20:]) / len(losses[-20:]):.5f}")
    return network.eval().requires_grad_(False), sum(losses[-20:]) / len(losses[-20:])


def training(record: dict) -> str:
    """A network's training in a few words: its loss, and how long."""
    if record.get("loss", "seed") == "generator":
        return f"generator, {record['steps']} steps, batch {record['batch_size']}"
    return f"seed, {record['epochs']} epochs"


def model_card(results: list[dict]) -> str:
    """The card of every network in the folder (`results`: their json records)."""
    seed = next((r for r in results if r.get("loss", "seed") == "seed"), None)
    through = next((r for r in results if r.get("loss") == "generator"), None)
    first = results[0]
    lines = [
        "# Embedding networks for the embedded digits DDPM (`task=embed`, method `network`)",
        "",
        "Each maps a 16x16 digit x_0 in [-1, 1] to a seed x_T of the deterministic DDIM generator",
        f"(eta = 0, {first['num_steps']} steps of `model=digits`), so that the generator gives x_0 back. "
        "Trained by `python scripts/train_digits_embedders.py`:",
        "",
    ]
    if seed is not None:
        lines += [
            "- `<kind>` (`--loss seed`): on pairs (f_theta(x_T), x_T) that the diffusion model makes from "
            f"{seed['pairs']} random seeds (seed {seed['seed']}); MSE on the seed, Adam with cosine decay, batch "
            f"{seed.get('batch_size', 128)}. No dataset image is trained on.",
        ]
    if through is not None:
        lines += [
            "- `<kind>_generator` (`--loss generator`): Asperti et al.'s own loss, the mean squared distance between x",
            "  and f_theta(network(x)), backpropagated through all the generator's DDIM steps (each recomputed in",
            f"  the backward pass), on the digits' {through['training_images']} training images; Adam with cosine",
            "  decay, warm-started from `<kind>`"
            + ("" if through["warm_start"] else " (here: from random weights)")
            + ".",
        ]
    lines += [
        "",
        "Reconstruction MSE = mean per-pixel squared error of f_theta(network(x)) against x in [0, 1] units (the",
        "journal version's Table 1 units), on the digits' 360 held-out test images and on "
        f"{first.get('validation', 500)} fresh generated",
        "images (Table 2). A random seed's MSE is the floor to beat.",
        "",
        "| network | training | layers | parameters | seed MSE (validation) | reconstruction MSE, test digits "
        "| generated images | train time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| `{r['name']}` | {training(r)} | {r['layers']} | {r['parameters']:,} | {r['seed_mse']:.4f} | "
            f"{r['reconstruction_mse_test']:.5f} | {r['reconstruction_mse_generated']:.5f} "
            f"| {r['train_seconds']:.0f} s |"
        )
    lines += [
        "",
        f"Random seeds: reconstruction MSE {first['random_seed_mse_test']:.4f} on the test digits.",
        "The journal version (MNIST, 28x28, its own DDIM): 0.00704 for one 5x5 convolution, 0.00271 for three",
        "(16-16-out), 0.000361 for its U-Net. Digits here are 8x8 images upsampled to 16x16: a simpler manifold.",
        "",
    ]
    return "\n".join(lines)


LAYERS = {"conv1": "1 conv 5x5", "conv3": "3 conv 5x5, 16-16-out", "unet": "U-Net, 32-64-64 channels"}
GENERATOR_LEARNING_RATES = {"conv1": 1e-3, "conv3": 5e-4, "unet": 2e-4}  # from a warm start: small steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=("seed", "generator"), default="seed", help="the training (see above)")
    parser.add_argument("--num-steps", type=int, default=20, help="DDIM steps of the generator")
    parser.add_argument("--pairs", type=int, default=6000, help="training pairs made by the generator (--loss seed)")
    parser.add_argument("--validation", type=int, default=500, help="fresh generated images to validate on")
    parser.add_argument("--epochs", type=int, default=40, help="--loss seed")
    parser.add_argument("--steps", type=int, default=300, help="Adam steps through the generator (--loss generator)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 (seed), 32 (generator)")
    parser.add_argument("--cold", action="store_true", help="--loss generator from random weights, not <kind>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the progress lines, every 30 s

    torch.use_deterministic_algorithms(True)
    backbone = load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), "unet")
    timesteps = strided_timesteps(backbone.schedule.num_train_timesteps, args.num_steps)
    start = time.perf_counter()
    if args.loss == "seed":
        images, seeds = make_pairs(backbone, args.pairs, timesteps, args.seed)
    valid_images, valid_seeds = make_pairs(backbone, args.validation, timesteps, args.seed + 1)
    print(f"pairs made in {time.perf_counter() - start:.0f} s")
    test, _ = digits_images("test")
    test = test * 2 - 1
    random_seed_mse = float(
        ((ddim.reconstruct(backbone, torch.randn_like(test), test, timesteps).reconstruction - test) / 2).pow(2).mean()
    )
    for kind in args.kinds:
        start = time.perf_counter()
        info: dict = {"kind": kind, "channels": 1, "num_steps": args.num_steps, "seed": args.seed}
        if args.loss == "seed":
            network, loss = train(kind, images, seeds, args.epochs, args.batch_size or 128, args.seed)
            info |= {"name": kind, "loss": "seed", "pairs": args.pairs, "epochs": args.epochs}
        else:
            warm = not args.cold and (args.out / f"{kind}.json").exists()
            first = load_network(args.out, kind)[0] if warm else None
            training, _ = digits_images("train")
            network, loss = train_through_generator(
                kind, backbone, training * 2 - 1, timesteps, args.steps, args.batch_size or 32,
                GENERATOR_LEARNING_RATES[kind] if warm else LEARNING_RATES[kind], args.seed, first,
            )  # fmt: skip
            info |= {"name": f"{kind}{GENERATOR}", "loss": "generator", "steps": args.steps, "warm_start": warm}
            info |= {"training_images": len(training)}
        seconds = time.perf_counter() - start
        with torch.no_grad():
            seed_mse = float(F.mse_loss(network(valid_images), valid_seeds))
        info |= {
            "layers": LAYERS[kind],
            "parameters": parameter_count(network),
            "batch_size": args.batch_size or (128 if args.loss == "seed" else 32),
            "validation": args.validation,
            "final_loss": loss,
            "seed_mse": seed_mse,
            "reconstruction_mse_test": reconstruction_mse(backbone, network, test, timesteps),
            "reconstruction_mse_generated": reconstruction_mse(backbone, network, valid_images, timesteps),
            "random_seed_mse_test": random_seed_mse,
            "train_seconds": seconds,
        }
        save(network, args.out, info)
        print(json.dumps({k: info[k] for k in ("name", "parameters", "seed_mse", "reconstruction_mse_test")}))
    records = [json.loads(f.read_text()) for f in sorted(args.out.glob("*.json"))]
    (args.out / "MODEL_CARD.md").write_text(model_card([r | {"name": r.get("name", r["kind"])} for r in records]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
