"""Write the model card of fsa's embedded digits models: fsa/assets/digits/MODEL_CARD.md + samples.png.

Draws unguided samples from the embedded DDPM with the paper's sampler (DDPM, 1000 steps, no
guidance), judges them with the independent oracle, and records the training figures.

    python scripts/digits_model_card.py [--samples 100]
"""

import argparse
import json
import math

import numpy as np
import torch
from PIL import Image

from fsa import ASSETS_DIR
from fsa.data.digits import digits_images
from fsa.diffusion.backbones import load_pixel_diffusion
from fsa.diffusion.samplers import DDPMSampler
from fsa.evaluation import DigitsOracle, entropy
from fsa.extractors.digits_cnn import DigitsCNNExtractor
from fsa.guidance.decoder import guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance
from fsa.pictures import to_uint8

DIGITS = ASSETS_DIR / "digits"


def unguided_samples(count: int, seed: int = 0, model: str = "ddpm") -> torch.Tensor:
    """(count, 3, 16, 16) in [-1, 1]: the DDPM sampler without guidance or recurrence, of `model`."""
    backbone = load_pixel_diffusion(str(DIGITS / model), subfolder="unet")
    extractor = DigitsCNNExtractor()
    unguided = FeatureGuidance(w_g=0.0, early_steps=0, k=1)
    target = torch.zeros(1, extractor.feature_dim)  # scored but never followed
    generators = [torch.Generator().manual_seed(seed + i) for i in range(count)]
    return guided_decode(backbone, DDPMSampler(), unguided, extractor, target, generators).final_image


def grid(images: torch.Tensor, columns: int = 10, scale: int = 4) -> Image.Image:
    tiles = [to_uint8(image) for image in images]
    rows = math.ceil(len(tiles) / columns)
    h, w, _ = tiles[0].shape
    canvas = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1, 3), 128, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = tile
    return Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    images = unguided_samples(args.samples)
    grid(images).save(DIGITS / "samples.png")
    oracle = DigitsOracle()
    probabilities = oracle.predict_proba((images + 1) / 2)
    confidence = probabilities.max(dim=1).values
    classes = probabilities.argmax(dim=1).bincount(minlength=10).tolist()
    relu_images = unguided_samples(args.samples, model="ddpm_relu")
    grid(relu_images).save(DIGITS / "ddpm_relu" / "samples.png")
    relu_probabilities = oracle.predict_proba((relu_images + 1) / 2)
    relu_confidence = relu_probabilities.max(dim=1).values
    relu = json.loads((DIGITS / "ddpm_relu" / "training.json").read_text())
    test_images, test_labels = digits_images("test")
    oracle_accuracy = (oracle.predict_proba(test_images).argmax(1) == test_labels).float().mean().item()
    ddpm = json.loads((DIGITS / "ddpm" / "training.json").read_text())
    cnn = json.loads((DIGITS / "cnn.json").read_text())
    seed1 = json.loads((DIGITS / "judges" / "cnn_seed1.json").read_text())
    card = f"""# fsa's embedded digits models

Real, small models that fsa trains itself on data shipped with scikit-learn, so guidance can be shown
to work on any laptop and in CI. Rebuild them from scratch (deterministic for a seed and torch build):
`python scripts/train_digits_diffusion.py`, `python scripts/train_digits_cnn.py`, then
`python scripts/digits_model_card.py` for this card and `samples.png`.

## Data
scikit-learn's `load_digits`: 1,797 grey 8x8 images (values 0..16), split once, stratified, seed 0,
into 1,437 training and 360 held-out test images. No model trains on the test split; `dataset=digits`
takes its targets from it. Images are upsampled to 16x16 (bilinear) and scaled to [0, 1].

## `ddpm/`: the pixel-space diffusion model (`model=digits`)
- Architecture: diffusers `UNet2DModel`, {ddpm["parameters"]:,} parameters, 16x16x1, blocks (32, 64, 64), self-attention at 8 and 4 px.
- Schedule: DDPM's standard 1000 steps, linear betas 1e-4..0.02, epsilon prediction.
- Training: {ddpm["steps"]:,} steps, batch {ddpm["batch_size"]}, AdamW lr {ddpm["learning_rate"]} with warm-up and cosine decay, EMA {ddpm["ema_decay"]}.
- Final loss {ddpm["final_loss"]:.4f} (mean of the last {ddpm["final_loss_over_steps"]} steps); {ddpm["wall_time_s"] / 60:.0f} min on 2 CPU cores.
- Unguided samples (DDPM, 1000 steps, seeds 0..{args.samples - 1}; `samples.png`), judged by the oracle:
  - confidence: mean {confidence.mean():.3f}, median {confidence.median():.3f}, share above 0.9: {(confidence > 0.9).float().mean():.2f};
  - mean entropy {entropy(probabilities).mean():.3f} nats (a uniform guess: {math.log(10):.3f});
  - classes 0..9: {classes}.

## `cnn.safetensors`: the classifier under analysis (`extractor=digits_cnn`)
- Architecture: two conv blocks and a 64-d ReLU penultimate layer (the feature f), {cnn["parameters"]:,} parameters.
- Inputs: 8-bit grey images at 16 px, mean/std 0.5, as the virtual save gives them.
- Training: {cnn["epochs"]} epochs, batch {cnn["batch_size"]}, Adam lr {cnn["learning_rate"]}, +-1 px shifts; final loss {cnn["final_loss"]:.4f}.
- Accuracy: train {cnn["train_accuracy"]:.4f}, held-out test {cnn["test_accuracy"]:.4f}.

## `ddpm_plain/` and `embedders/`: for `task=embed`
- `ddpm_plain/`: a second pixel DDPM of another architecture (the same scales and widths, self-attention only
  in the middle block, 1.1 M parameters), trained with seed 1 on the same data with the same schedule and recipe but 2,000 steps:
  `python scripts/train_digits_diffusion.py --architecture plain --seed 1 --steps 2000` (record:
  `ddpm_plain/training.json`).
  task=embed gives both models the same seeds: is a DDIM latent space a property of the data or of the model?
- `embedders/`: embedding networks (an image in, a seed of the 20-step DDIM generator out), with their
  own card, `embedders/MODEL_CARD.md`, written by `scripts/train_digits_embedders.py`.

## `ddpm_relu/`: a UNet built like Kadkhodaie et al.'s (`model=digits_relu`)
- Architecture: fsa's `ReLUUNet` (fsa/diffusion/relu_unet.py), {relu["parameters"]:,} parameters: encoder blocks of 2, a middle
  block of 3 and decoder blocks of 6 layers, each a 3x3 convolution, a layer norm and a ReLU; 16-32-64 channels at 16, 8
  and 4 px, 128 in the middle block at 2 px (the paper's layout at a quarter of its widths); a blind denoiser, told no timestep.
- Schedule, data and recipe as `ddpm/`: `python scripts/train_digits_diffusion.py --architecture relu`,
  {relu["steps"]:,} steps; final loss {relu["final_loss"]:.4f}; {relu["wall_time_s"] / 60:.0f} min on 2 CPU cores.
- Unguided samples (DDPM, 1000 steps, seeds 0..{args.samples - 1}; `ddpm_relu/samples.png`), judged by the oracle:
  confidence mean {relu_confidence.mean():.3f}, share above 0.9: {(relu_confidence > 0.9).float().mean():.2f};
  mean entropy {entropy(relu_probabilities).mean():.3f} nats; classes 0..9:
  {relu_probabilities.argmax(dim=1).bincount(minlength=10).tolist()}.
- For `task=represent`: every block's output is non-negative, so its spatial means are the paper's representation.

## `invariant/`: classifiers with a planted invariance (`extractor=digits_cnn_<kind>`)
Four more digit classifiers, each blind to one attribute (translation, slant, stroke thickness,
contrast), for the known-answer test of attribute retention (`fsa -m experiment=known_answer`). Their
own card, `invariant/MODEL_CARD.md`, is written by `scripts/train_digits_invariant.py`.

## `judges/`: a judge of the digits (`judges=digits`)
`cnn_seed1.safetensors`: the classifier's architecture and recipe trained again with seed 1
(`python scripts/train_digits_cnn.py --seed 1 --out fsa/assets/digits/judges/cnn_seed1.safetensors`;
record `judges/cnn_seed1.json`): held-out accuracy {seed1["test_accuracy"]:.4f}. It scores generated images
but never guides: does a match found through one network's features hold for its twin (docs/judges.md)?

## The oracle (`oracle=digits`, trained when used, not shipped)
An RBF-kernel SVM (C = 10) on the raw 16x16 pixels of the training split, with calibrated probabilities.
It is a different model family from both models above and is used only to judge generated images.
Held-out test accuracy {oracle_accuracy:.4f}.
"""
    (DIGITS / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
