"""The robustness check's small changes, on image files as a researcher has them (PIL, 8-bit RGB)."""

import io

import numpy as np
from PIL import Image

from fsa.judges.options import RobustnessOptions

NOISE_SEED = 0  # one fixed draw per image size: a generated image and its target get the same noise


def shifted(image: Image.Image, fraction: float) -> Image.Image:
    """Moved right and down by `fraction` of each side (at least 1 px), edge pixels repeated into the gap."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    dy, dx = max(1, round(fraction * height)), max(1, round(fraction * width))
    padded = np.pad(pixels, ((dy, 0), (dx, 0), (0, 0)), mode="edge")
    return Image.fromarray(padded[:height, :width])


def cropped(image: Image.Image, fraction: float) -> Image.Image:
    """The centre `fraction` of each side, resized back to the image's size (bicubic)."""
    width, height = image.size
    w, h = round(width * fraction), round(height * fraction)
    left, top = (width - w) // 2, (height - h) // 2
    return image.crop((left, top, left + w, top + h)).resize(image.size, Image.Resampling.BICUBIC)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Saved as JPEG at `quality` and read back."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as reloaded:
        return reloaded.convert("RGB")


def noisy(image: Image.Image, std: float) -> Image.Image:
    """Gaussian noise of `std` (pixels in [0, 1]), the same draw for every image of this size, 8-bit."""
    pixels = np.asarray(image, dtype=np.float64) / 255
    noise = np.random.default_rng(NOISE_SEED).normal(0.0, std, pixels.shape)
    return Image.fromarray(np.round(np.clip(pixels + noise, 0, 1) * 255).astype(np.uint8))


def small_changes(image: Image.Image, options: RobustnessOptions) -> dict[str, Image.Image]:
    """Each enabled change of `options` applied to `image` (RGB), by name."""
    image = image.convert("RGB")
    apply = {
        "shift": lambda: shifted(image, options.shift),
        "crop": lambda: cropped(image, options.crop),
        "jpeg": lambda: jpeg(image, options.jpeg),
        "noise": lambda: noisy(image, options.noise),
    }
    return {name: apply[name]() for name in options.enabled()}
