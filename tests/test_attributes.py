"""Attribute measures on images whose answer is known, retention, and retention in a run."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import compose_config

from fsa.attributes import measures
from fsa.attributes.options import AttributesOptions
from fsa.attributes.retention import retention
from fsa.config import validate
from fsa.errors import ConfigError


def canvas(n: int = 1, size: int = 16) -> torch.Tensor:
    return torch.zeros(n, 3, size, size)


def bar(x0: int, x1: int, y0: int = 3, y1: int = 13, size: int = 16) -> torch.Tensor:
    """A white vertical bar on black, columns x0..x1-1 and rows y0..y1-1."""
    image = canvas(size=size)
    image[..., y0:y1, x0:x1] = 1.0
    return image


def test_position_size_and_thickness_of_bars():
    left, right = bar(2, 4), bar(10, 12)
    assert measures.centre_of_mass(left)[0].tolist() == pytest.approx([3 / 16, 8 / 16])
    assert measures.centre_of_mass(right)[0, 0] - measures.centre_of_mass(left)[0, 0] == pytest.approx(8 / 16)
    assert measures.size(left)[0].tolist() == pytest.approx([10 / 16, 2 / 16])  # height, width
    thin, thick = measures.stroke_thickness(bar(6, 7)), measures.stroke_thickness(bar(5, 9))
    assert float(thin) == pytest.approx(2 * 10 / 22) and float(thick) == pytest.approx(2 * 40 / 28)
    assert float(thick) > 2 * float(thin)


def test_slant_and_orientation_follow_a_sheared_stroke():
    upright, leaning = canvas(), canvas()
    for row in range(2, 14):
        upright[..., row, 7:9] = 1.0
        shift = (13 - row) // 3  # the top leans right: x grows as y (downwards) shrinks
        leaning[..., row, 5 + shift : 7 + shift] = 1.0
    assert float(measures.slant(upright)) == pytest.approx(0.0, abs=1e-6)
    assert float(measures.slant(leaning)) < -0.2
    vertical, horizontal = measures.orientation(upright)[0], measures.orientation(upright.transpose(2, 3))[0]
    assert vertical[0] < -0.9 and horizontal[0] > 0.9  # (mu20 - mu02) / (mu20 + mu02): -1 tall, +1 wide


def test_brightness_contrast_colour_edges_and_layout():
    grey = torch.full((1, 3, 16, 16), 0.5)
    assert float(measures.brightness(grey)) == pytest.approx(0.5) and float(measures.contrast(grey)) == 0
    assert float(measures.edge_density(grey)) == 0 and float(measures.edge_density(bar(6, 10))) > 0
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    values = measures.colour(red)[0]
    assert values[:3].tolist() == [1.0, 0.0, 0.0] and values[3] == 1.0 and values[4:].sum() == 0  # hue bin 0
    assert measures.colour(grey)[0, 3:].sum() == 0  # grey: no hue
    a, b = bar(2, 5), bar(2, 5) * 0.5
    assert float(measures.distances(a, b, {"layout": measures.layout})["layout"][0]) == pytest.approx(0, abs=1e-5)
    assert float(measures.distances(a, bar(11, 14), {"layout": measures.layout})["layout"][0]) > 1


def test_retention_on_known_answers():
    unguided = torch.tensor([1.0, 2.0, 3.0, 4.0])
    kept = retention(torch.zeros(4), unguided)
    assert (kept.value, kept.low, kept.high) == (1.0, 1.0, 1.0)
    ignored = retention(unguided.clone(), unguided)
    assert ignored.value == 0.0 and ignored.low == ignored.high == 0.0  # paired: every resample is 0
    half = retention(unguided / 2, unguided)
    assert half.value == pytest.approx(0.5) and half.low == pytest.approx(0.5)
    noisy = retention(torch.tensor([0.1, 3.0, 0.2, 5.0]), unguided)
    assert noisy.low < noisy.value < noisy.high
    # Over targets: a target's samples are drawn together. Two targets whose samples disagree within a
    # target but agree on the sum give the same retention in every resample.
    targets = torch.tensor([7, 7, 9, 9])
    paired = retention(torch.tensor([0.5, 1.0, 0.0, 3.5]), unguided, targets=targets)
    assert paired.value == pytest.approx(0.5) and (paired.low, paired.high) == pytest.approx((0.5, 0.5))
    assert retention(torch.tensor([0.5, 1.0, 0.0, 3.5]), unguided).high > 0.5  # over samples it varies


@pytest.mark.parametrize(
    "override,message",
    [
        ("+attributes.measures.mine=not_a_path", "dotted function paths"),
        ("attributes.image_size=4", "image_size"),
        ("attributes.resamples=10", "resamples"),
    ],
)
def test_bad_attribute_settings_are_refused_before_any_model_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config([override]))


def test_a_measure_that_cannot_be_imported_is_named():
    with pytest.raises(ConfigError, match="attributes.measures.mine: cannot import 'fsa.attributes.measures.nope'"):
        measures.load_measures({"mine": "fsa.attributes.measures.nope"})
    assert AttributesOptions(oracle_class=True).measures == {}


def final_retention(folder: Path) -> dict[str, dict]:
    return json.loads((folder / "summary.json").read_text())["retention"]["final"]


@pytest.mark.slow
def test_a_run_with_an_unguided_baseline_measures_retention_per_attribute(known_answer, tmp_path):
    folder = known_answer["digits_cnn"]
    final = final_retention(folder)
    names = ["slant", "thickness", "position", "size", "orientation", "brightness", "contrast", "layout", "edges"]
    assert list(final) == [*names, "class"]
    for value in final.values():
        assert value["low"] <= value["value"] <= value["high"] and value["samples"] == 20
    # The digits CNN keeps the class: its guided images are the targets' classes far more than chance.
    assert final["class"]["value"] > 0.5
    # attributes.csv holds each sample's distances; retention comes from them.
    table = pd.read_csv(folder / "attributes.csv")
    assert set(table["variant"]) == {"guided", "unguided"} and set(table["kind"]) == {"final", "best"}
    rows = table[(table["kind"] == "final") & (table["attribute"] == "position")]
    guided, unguided = (rows[rows["variant"] == v]["distance"].mean() for v in ("guided", "unguided"))
    assert final["position"]["value"] == pytest.approx(1 - guided / unguided)
    assert final["position"]["low"] > 0.5  # measured: 0.84 [0.78, 0.88]; the CNN keeps where the digit is

    # fsa-report: retention.csv from the summary, and the heatmap with every attribute named in its SVG.
    from fsa.report.command import main

    assert main([str(folder), "--out", str(tmp_path / "report")]) == 0
    reported = pd.read_csv(tmp_path / "report" / "retention.csv")
    rows = reported[reported["kind"] == "final"].set_index("attribute")
    assert rows.loc["class", "value"] == pytest.approx(final["class"]["value"])
    svg = (tmp_path / "report" / "figures" / "retention.svg").read_text()
    assert all(f">{name}<" in svg for name in final)


@pytest.mark.slow
def test_the_pixel_extractor_retains_every_attribute(known_answer):
    """The known answer at one extreme: features that are the pixels keep everything."""
    final = final_retention(known_answer["pixels"])
    assert min(value["value"] for value in final.values()) > 0.5  # measured: 0.74 (thickness) to 1.00
    assert final["class"]["value"] > 0.9 and final["layout"]["low"] > 0.9


# The planted invariances the test finds: the attribute's interval lies wholly below the plain CNN's
# (or, where the plain CNN already ignores the attribute, the pixels'), and the class is kept.
# Measured at this size (final images), planted against compared: position 0.40 [0.16, 0.60] against
# 0.84 [0.78, 0.88]; contrast -2.77 [-4.38, -1.72] against -0.08 [-0.64, 0.29]; thickness -0.28
# [-0.91, 0.16] against the pixels' 0.74 [0.54, 0.87]; class 0.83, 0.94, 1.00.
FOUND = {  # kind: (attribute, compared with)
    "translation": ("position", "digits_cnn"),
    "contrast": ("contrast", "digits_cnn"),
    "thickness": ("thickness", "pixels"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(FOUND))
def test_retention_finds_the_planted_invariance(known_answer, kind):
    attribute, reference = FOUND[kind]
    planted, compared = final_retention(known_answer[f"digits_cnn_{kind}"]), final_retention(known_answer[reference])
    assert planted[attribute]["high"] < compared[attribute]["low"]
    assert planted["class"]["value"] > 0.5


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="slant is not found: the guided digits take the target's slant back although f ignores it "
    "(docs/attributes.md); this fails loudly once it is found",
)
def test_retention_finds_the_planted_slant_invariance(known_answer):
    """Measured at this size: slant 0.73 [0.57, 0.86] against the plain CNN's 0.68 [0.54, 0.79]."""
    planted, plain = final_retention(known_answer["digits_cnn_slant"]), final_retention(known_answer["digits_cnn"])
    assert planted["slant"]["high"] < plain["slant"]["low"]
