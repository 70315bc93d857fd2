"""The digits CNNs with a planted invariance: invariant as built, accurate on held-out digits, and
retrainable by their script."""

import json

import pytest
import torch
from helpers import compose_config, load_script
from hydra.utils import instantiate

from fsa import ASSETS_DIR
from fsa.attributes.measures import centre_of_mass, slant
from fsa.data.digits import digits_images
from fsa.errors import ExtractorError
from fsa.extractors.digits_cnn import INVARIANCES, DigitsCNNExtractor, InvariantDigitsCNN, PooledDigitsCNN, deslant

INVARIANT = ASSETS_DIR / "digits" / "invariant"


def held_out(count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out digits as the extractors take them, (N, 3, 16, 16) in [-1, 1], and their labels."""
    images, labels = digits_images("test")
    return (images[:count] * 2 - 1).expand(-1, 3, -1, -1), labels[:count]


def fourier_shear(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Each row shifted to the left by amount x its height above the centre of mass, in pixels, through
    its Fourier phase: a shear about the centre."""
    centre_y = centre_of_mass((x + 1) / 2)[:, 1] * 16 - 0.5  # in rows
    heights = torch.arange(16.0) - centre_y[:, None]  # (N, rows)
    cycles = amount * heights[:, None, :, None] * torch.fft.rfftfreq(16)  # (N, 1, rows, frequencies)
    spectrum = torch.fft.rfft((x + 1) / 2, dim=-1) * torch.exp(2j * torch.pi * cycles)
    return torch.fft.irfft(spectrum, n=16, dim=-1) * 2 - 1


def test_deslant_sets_the_slant_to_zero_and_ignores_shears():
    x, _ = held_out(32)
    upright = deslant(x)
    assert upright.shape == (32, 1, 16, 16)
    assert slant((upright.expand(-1, 3, -1, -1) + 1) / 2).abs().max() < 0.01  # held-out slants: std 0.12
    sheared = fourier_shear(x, 0.2)
    assert (slant((sheared + 1) / 2) - slant((x + 1) / 2)).abs().mean() > 0.15  # the shear changed the slant
    # ...and deslanting undoes it: the same upright digit to 1 % of the pixel range (a bilinear shear
    # and deslant differ by tens of percent), except where the shear wraps ink round the border.
    largest = (deslant(sheared) - upright).abs().amax(dim=(1, 2, 3))
    assert (largest < 0.02).float().mean() > 0.9  # measured: 30 of these 32 digits
    assert (sheared - x).abs().max() > 0.5


def test_the_pooled_network_ignores_whole_pixel_cyclic_shifts():
    torch.manual_seed(0)
    network = PooledDigitsCNN().eval()
    x, _ = held_out(8)
    moved = torch.roll(x, shifts=(2, -3), dims=(2, 3))
    torch.testing.assert_close(network.features(moved), network.features(x), atol=1e-5, rtol=1e-5)


def test_an_unknown_invariance_is_refused_with_the_known_ones():
    with pytest.raises(ExtractorError, match="translation, slant, thickness, contrast"):
        InvariantDigitsCNN("colour")


@pytest.mark.parametrize("kind", INVARIANCES)
def test_shipped_invariant_extractors_classify_held_out_digits_and_ignore_their_transformation(kind):
    extractor = instantiate(compose_config([f"extractor=digits_cnn_{kind}"]).extractor)
    assert extractor.name == f"digits_cnn_{kind}" and extractor.feature_dim == 64
    record = json.loads((INVARIANT / f"{kind}.json").read_text())
    x, labels = held_out()
    accuracy = (extractor.classify(x).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-6) and accuracy > 0.95
    # The card's feature change, recomputed: T moves these features far less than the plain CNN's.
    change = load_script("train_digits_invariant").feature_change(extractor.classifier, kind, record["seed"])
    assert change == pytest.approx(record["test_feature_change"], rel=1e-4, abs=1e-9)
    assert change < 0.5 * record["plain_cnn_test_feature_change"]
    assert f"| `{kind}` |" in (INVARIANT / "MODEL_CARD.md").read_text()


def test_the_training_script_trains_loads_and_writes_its_card(tmp_path):
    script = load_script("train_digits_invariant")
    for kind in ("slant", "thickness"):  # a normaliser, and the invariance penalty
        record = script.train(kind, epochs=1, weight=1.0, seed=0, out=tmp_path)
        assert 0 <= record["test_accuracy"] <= 1 and record["epochs"] == 1
        extractor = DigitsCNNExtractor(weights=str(tmp_path / f"{kind}.safetensors"), invariance=kind)
        assert extractor(held_out(2)[0]).shape == (2, 64)
    card = script.write_card(tmp_path)
    assert "| `slant` |" in card and "| `thickness` |" in card and "`translation`" not in card.split("| kind")[1]
