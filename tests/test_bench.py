"""scripts/bench.py on fsa's tiny components: it runs, and its JSON holds every figure, consistent."""

import json
import math

import pytest
from helpers import load_script

TIMES = ("iteration_s", "unet_fwd_bwd_s", "vae_decode_fwd_bwd_s", "extractor_fwd_bwd_s", "post_check_s")
POSITIVE = (
    *TIMES,
    "parts_sum_s",
    "overhead_ratio",
    "flops_per_iteration",
    "achieved_tflops",
    "peak_memory_bytes",
    "projected_run_s",
    "paper_run_s",
    "projected_over_paper",
)


def test_bench_tiny_writes_every_figure(tmp_path, capsys):
    bench = load_script("bench")
    out = tmp_path / "b.json"
    argv = ["--tiny", "--image-size", "64", "--repeats", "2", "--warmup", "1", "--device", "cpu", "--json", str(out)]
    assert bench.main(argv) == 0

    result = json.loads(out.read_text())
    for key in POSITIVE:
        value = result[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert result["flops_per_iteration"] > 0
    assert result["parts_sum_s"] == pytest.approx(sum(result[k] for k in TIMES[1:]))
    assert result["overhead_ratio"] == pytest.approx(result["iteration_s"] / result["parts_sum_s"])
    assert result["iterations_per_run"] == 12_960
    assert result["paper_run_s"] == 8_830
    assert result["projected_run_s"] == pytest.approx(12_960 * result["iteration_s"])
    assert result["projected_over_paper"] == pytest.approx(result["projected_run_s"] / 8_830)
    assert result["peak_fraction"] is None  # no --peak-tflops, and on the CPU
    assert result["peak_memory_kind"] == "process_peak_rss"

    printed = capsys.readouterr().out
    for label in ("guided iteration", "UNet fwd+bwd", "overhead ratio", "FLOPs per iteration", "projected run"):
        assert label in printed


def test_bench_speed_options_and_compare(tmp_path, capsys):
    """--compare runs each variant in its own process and tabulates speed-up and memory against the first."""
    bench = load_script("bench")
    out = tmp_path / "compare.json"
    common = ["--tiny", "--image-size", "64", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
    assert bench.main([*common, "--compare", "faithful", "channels_last", "no_post_check", "--json", str(out)]) == 0

    results = json.loads(out.read_text())
    assert [r["variant"] for r in results] == ["faithful", "channels_last", "no_post_check"]
    assert results[0]["speed_options"] == [] and results[0]["post_check"]
    assert results[1]["speed_options"] == ["channels_last=True"]
    assert not results[2]["post_check"] and results[2]["post_check_s"] == 0
    table = out.with_suffix(".md").read_text()
    assert table.count("\n| ") == 4 and "| faithful |" in table and "| 1.00x |" in table
    assert "speed-up" in capsys.readouterr().out


def test_flops_only_counts_on_the_meta_device_what_a_timed_run_counts(tmp_path):
    bench = load_script("bench")
    common = ["--tiny", "--image-size", "64", "--repeats", "1", "--warmup", "0"]
    assert bench.main([*common, "--device", "cpu", "--json", str(tmp_path / "cpu.json")]) == 0
    assert bench.main([*common, "--flops-only", "--json", str(tmp_path / "meta.json")]) == 0
    timed, counted = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("cpu", "meta"))
    # Within 2 %: on the CPU the SDPA backward is decomposed into counted matmuls; on meta it is one op.
    assert counted["flops_per_iteration"] == pytest.approx(timed["flops_per_iteration"], rel=0.02)
