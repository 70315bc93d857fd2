"""Train the digit classifiers with a planted invariance (`extractor=digits_cnn_<kind>`), for the
known-answer test of attribute retention (docs/attributes.md).

Each network (`fsa.extractors.digits_cnn.InvariantDigitsCNN`) is trained on the digits training split
with its kind's transformation T applied at random, the same recipe as the plain CNN otherwise:

- translation: cyclic shifts of up to +-3 px (the pooled network ignores them by construction);
- slant: horizontal shears of up to +-0.4 (the deslanting normaliser removes them);
- thickness: a 3x3 dilation or erosion of the strokes;
- contrast: the ink's intensity scaled by a in [0.3, 1].

For thickness and contrast no normaliser removes the attribute, so the loss asks the features to
ignore it:
      loss = CE(head(f(T(x))), y) + weight * ||f(T(x)) - f(x)||^2 / mean ||f(x)||^2
  with the penalty ramped in over the first third of the epochs (from the start it collapses f to 0).

Deterministic for a given seed and torch build. Writes <kind>.safetensors, <kind>.json (training
record, held-out accuracy, and how much T moves the features, against the plain CNN) and the card,
MODEL_CARD.md.

    python scripts/train_digits_invariant.py                    # every kind, the committed weights
    python scripts/train_digits_invariant.py --kinds slant --epochs 1 --out /tmp/inv   # a smoke run
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from train_digits_cnn import accuracy, prepare

from fsa import ASSETS_DIR
from fsa.data.digits import digits_images
from fsa.extractors.digits_cnn import INVARIANCES, DigitsCNNExtractor, InvariantDigitsCNN

OUT = ASSETS_DIR / "digits" / "invariant"
AUGMENTATION = {
    "translation": "cyclic shifts of up to +-3 px",
    "slant": "horizontal shears of up to +-0.4",
    "thickness": "3x3 dilation or erosion (one third each, one third unchanged)",
    "contrast": "ink intensity scaled by a in [0.3, 1]",
}


def transform(images: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """A random transformation of `kind` per image of (N, 1, 16, 16) in [0, 1]."""
    n = len(images)
    if kind == "translation":
        shifts = torch.randint(-3, 4, (n, 2), generator=generator).tolist()
        moved = [torch.roll(image, (dy, dx), (1, 2)) for image, (dy, dx) in zip(images, shifts, strict=True)]
        return torch.stack(moved)
    if kind == "slant":
        theta = torch.eye(2, 3).repeat(n, 1, 1)
        theta[:, 0, 1] = (torch.rand(n, generator=generator) * 2 - 1) * 0.4
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    if kind == "thickness":
        dilated = F.max_pool2d(images, 3, stride=1, padding=1)
        eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
        choice = torch.randint(0, 3, (n, 1, 1, 1), generator=generator)
        return torch.where(choice == 0, dilated, torch.where(choice == 1, eroded, images))
    if kind == "contrast":
        return images * (0.3 + 0.7 * torch.rand(n, 1, 1, 1, generator=generator))
    raise ValueError(f"kind must be one of {', '.join(INVARIANCES)}, got '{kind}'")


def feature_change(model: torch.nn.Module, kind: str, seed: int) -> float:
    """How far T moves the held-out digits' features: mean ||f(T(x)) - f(x)||^2 / mean ||f(x)||^2."""
    images, _ = digits_images("test")
    with torch.no_grad():
        moved = model.features(prepare(transform(images, kind, torch.Generator().manual_seed(seed))))
        reference = model.features(prepare(images))
    return ((moved - reference).pow(2).sum(1).mean() / reference.pow(2).sum(1).mean()).item()


def train(kind: str, epochs: int, weight: float, seed: int, out: Path) -> dict:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    images, labels = digits_images("train")
    model = InvariantDigitsCNN(kind)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    penalised = kind in ("thickness", "contrast")  # translation and slant are invariant by construction
    start, loss = time.perf_counter(), torch.tensor(0.0)
    for epoch in range(epochs):
        model.train()
        ramp = min(1.0, epoch / max(1, epochs // 3))
        order = torch.randperm(len(images), generator=generator)
        for i in range(0, len(order), 64):
            batch = order[i : i + 64]
            features = model.features(prepare(transform(images[batch], kind, generator)))
            loss = F.cross_entropy(model.head(features), labels[batch])
            if penalised:
                reference = model.features(prepare(images[batch]))
                change = (features - reference).pow(2).sum(1).mean()
                loss = loss + weight * ramp * change / reference.detach().pow(2).sum(1).mean().clamp_min(1e-8)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        print(f"{kind} epoch {epoch + 1}/{epochs} loss {loss.item():.4f}", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{kind}.safetensors"))
    record = {
        "kind": kind,
        "data": "scikit-learn digits, training split (1437 images), 16x16",
        "augmentation": AUGMENTATION[kind],
        "invariance_weight": weight if penalised else None,
        "epochs": epochs,
        "batch_size": 64,
        "learning_rate": 1e-3,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": loss.item(),
        "train_accuracy": accuracy(model, "train"),
        "test_accuracy": accuracy(model, "test"),
        "test_feature_change": feature_change(model, kind, seed),
        "plain_cnn_test_feature_change": feature_change(DigitsCNNExtractor().classifier, kind, seed),
        "wall_time_s": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    (out / f"{kind}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


HOW = {
    "translation": "stride-1 circular convolutions, global max over positions (exact for whole-pixel cyclic shifts)",
    "slant": "deslanting normaliser before the plain architecture (exact for Fourier shears)",
    "thickness": "plain architecture; invariance penalty, weight {weight}",
    "contrast": "plain architecture; invariance penalty, weight {weight}",
}


def write_card(out: Path) -> str:
    """MODEL_CARD.md in `out`, from the training records there."""
    rows = []
    for kind in INVARIANCES:
        if (out / f"{kind}.json").exists():
            r = json.loads((out / f"{kind}.json").read_text())
            rows.append(
                f"| `{kind}` | {HOW[kind].format(weight=r['invariance_weight'])} | {r['augmentation']} | "
                f"{r['parameters']:,} | {r['epochs']} | {r['train_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
                f"{r['test_feature_change']:.2g} | {r['plain_cnn_test_feature_change']:.2g} |"
            )
    card = (
        """# Digits CNNs with a planted invariance (`extractor=digits_cnn_<kind>`)

Feature spaces whose answer is known, for the known-answer test of attribute retention
(`fsa -m experiment=known_answer`; results in docs/attributes.md). Each is a digit classifier whose
features f (the 64-d penultimate layer, as for the plain `digits_cnn`) are made blind to one
attribute. Trained by `python scripts/train_digits_invariant.py` (this card, the weights and the
`<kind>.json` records), deterministic for a seed and torch build.

Data: scikit-learn's digits, the training split (1,437 images, 16x16), as for the plain CNN; the
held-out split (360 images) is never trained on. Inputs: 8-bit grey, mean/std 0.5. Adam, lr 0.001,
batch 64; each batch transformed at random by the kind's augmentation T. The penalty, where used,
is weight x ||f(T(x)) - f(x)||^2 / mean ||f(x)||^2, ramped in over the first third of the epochs.

Feature change: mean ||f(T(x)) - f(x)||^2 / mean ||f(x)||^2 on the held-out digits, T drawn as in
training, for this network and for the plain `digits_cnn`.

| kind | how | augmentation T | parameters | epochs | train acc. | held-out acc. | feature change | plain CNN's |
|---|---|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    (out / "MODEL_CARD.md").write_text(card)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=list(INVARIANCES), choices=INVARIANCES)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--weight", type=float, default=1.0, help="the thickness network's invariance penalty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for kind in args.kinds:
        print(json.dumps(train(kind, args.epochs, args.weight, args.seed, args.out), indent=2))
    write_card(args.out)


if __name__ == "__main__":
    main()
