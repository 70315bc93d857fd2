"""Train fsa's embedded digit classifier (the `digits_cnn` extractor) on the digits training split.

Deterministic for a given seed and torch build. Inputs are prepared as the extractor sees actual
images: 8-bit grey images at 16 px, mean/std 0.5. Small random shifts (+-1 px) make it robust to
the positional jitter of generated digits.

    python scripts/train_digits_cnn.py                       # the committed weights
    python scripts/train_digits_cnn.py --epochs 1 --out /tmp/cnn.safetensors   # a smoke run
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from fsa.data.digits import digits_images
from fsa.extractors.digits_cnn import DEFAULT_WEIGHTS, DigitsCNN


def prepare(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] (N, 1, 16, 16) -> the extractor's normalised 3-channel input, 8-bit quantised."""
    return ((images * 255).round() / 255 - 0.5).div(0.5).expand(-1, 3, -1, -1)


def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    dx, dy = torch.randint(-1, 2, (2,), generator=generator).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def accuracy(model: DigitsCNN, split: str) -> float:
    images, labels = digits_images(split)
    with torch.no_grad():
        return (model(prepare(images)).argmax(1) == labels).float().mean().item()


def train(epochs: int, batch_size: int, lr: float, seed: int, out: Path) -> dict:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    images, labels = digits_images("train")
    model = DigitsCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start, loss = time.perf_counter(), torch.tensor(0.0)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            loss = F.cross_entropy(model(shift(prepare(images[batch]), generator)), labels[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        print(f"epoch {epoch + 1}/{epochs} loss {loss.item():.4f}", flush=True)
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    record = {
        "data": "scikit-learn digits, training split (1437 images), 16x16, +-1 px shifts",
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": loss.item(),
        "train_accuracy": accuracy(model, "train"),
        "test_accuracy": accuracy(model, "test"),
        "wall_time_s": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    print(json.dumps(train(args.epochs, args.batch_size, args.lr, args.seed, args.out), indent=2))


if __name__ == "__main__":
    main()
