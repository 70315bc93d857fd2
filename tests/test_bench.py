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


@pytest.mark.slow  # a process per variant
def test_bench_speed_options_and_compare(tmp_path, capsys):
    """--compare runs each variant in its own process and tabulates speed-up and memory against the first."""
    bench = load_script("bench")
    out = tmp_path / "compare.json"
    common = ["--tiny", "--image-size", "64", "--repeats", "1", "--warmup", "0", "--device", "cpu"]
    variants = ["faithful", "broken", "channels_last", "no_post_check"]
    # A variant whose process fails is recorded with its error, and the others still run (exit 1).
    bench.VARIANTS["broken"] = ["--attention", "no-such-kernel"]
    assert bench.main([*common, "--compare", *variants, "--json", str(out)]) == 1

    results = json.loads(out.read_text())
    assert [r["variant"] for r in results] == variants
    assert "no-such-kernel" in results[1]["error"] and "iteration_s" not in results[1]
    assert results[0]["speed_options"] == [] and results[0]["post_check"]
    assert results[2]["speed_options"] == ["channels_last=True"]
    assert not results[3]["post_check"] and results[3]["post_check_s"] == 0
    table = out.with_suffix(".md").read_text()
    assert table.count("\n| ") == 5 and "| faithful |" in table and "| 1.00x |" in table
    assert "| broken | failed: " in table
    assert "speed-up" in capsys.readouterr().out


def record(variant: str, extractor: str, batch: int, sample_s: float, overhead: float, peak_gb: float) -> dict:
    paper_s = {"clip_rn50": 8_830.0, "vit_h14": 16_897.0}[extractor] / 12_960
    return {
        "variant": variant,
        "backbone": "sd-1.4 shapes (random weights)",
        "extractor": extractor,
        "image_size": 512,
        "device": "a GPU",
        "batch": batch,
        "iteration_s": sample_s * batch,
        "projected_run_s": 12_960 * sample_s * batch,
        "sample_iteration_s": sample_s,
        "overhead_ratio": overhead,
        "peak_memory_bytes": peak_gb * 1e9,
        "paper_iteration_s": paper_s,
    }


def test_gpu_figures_judges_each_goal_on_what_was_measured(tmp_path):
    figures = load_script("gpu_figures")
    tables = {
        "bench_clip_rn50": [record("faithful", "clip_rn50", 1, 0.2, 1.05, 11.0), {"variant": "fast", "error": "x"}],
        "batch3_clip_rn50": [
            record("fast_eager", "clip_rn50", 3, 0.1, 1.0, 12.0),
            record("lean", "clip_rn50", 3, 0.12, 1.0, 8.0),
        ],
        "bench_vit_h14": [record("faithful", "vit_h14", 1, 0.4, 1.2, 15.0)],
    }
    for name, results in tables.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(results))
    (tmp_path / "digits_cuda_summary.json").write_text(json.dumps({"status": "complete"}))  # not a comparison
    verdicts = {v["goal"]: v["met"] for v in figures.goals(figures.load(tmp_path))}
    assert verdicts == {
        "clip_rn50: faithful overhead ratio": True,
        "clip_rn50: fast, batch 1: speed-up over the paper per sample-iteration": None,  # its run failed
        "clip_rn50: fast_eager, batch 3: speed-up over the paper per sample-iteration": True,  # 0.68 / 0.1
        "clip_rn50: fast_eager, batch 3: peak GB": False,
        "clip_rn50: lean, batch 3: peak GB": True,
        "vit_h14: faithful overhead ratio": False,
        "vit_h14: fast, batch 1: speed-up over the paper per sample-iteration": None,
    }
    assert figures.main([str(tmp_path)]) == 1  # not every goal met
    assert "| vit_h14: faithful overhead ratio | 1.2 | 1.1 | **no** |" in (tmp_path / "gpu_figures.md").read_text()
    assert json.loads((tmp_path / "gpu_figures.json").read_text())["goals"][0]["measured"] == 1.05


def test_flops_only_counts_on_the_meta_device_what_a_timed_run_counts(tmp_path):
    bench = load_script("bench")
    common = ["--tiny", "--image-size", "64", "--repeats", "1", "--warmup", "0"]
    assert bench.main([*common, "--device", "cpu", "--json", str(tmp_path / "cpu.json")]) == 0
    assert bench.main([*common, "--flops-only", "--json", str(tmp_path / "meta.json")]) == 0
    timed, counted = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("cpu", "meta"))
    # Within 2 %: on the CPU the SDPA backward is decomposed into counted matmuls; on meta it is one op.
    assert counted["flops_per_iteration"] == pytest.approx(timed["flops_per_iteration"], rel=0.02)


def test_cheaper_gradients_are_timed_and_counted(tmp_path):
    """--gradient z0_hat drops the UNet's backward; each --backward-steps adds a decoder and an
    extractor forward and backward (docs/method.md, "Cheaper gradients")."""
    bench = load_script("bench")
    common = ["--tiny", "--image-size", "64", "--repeats", "1", "--warmup", "0"]
    flops = {}
    for name, extra in {"paper": [], "z0_hat": ["--gradient", "z0_hat"], "backward": ["--backward-steps", "2"]}.items():
        assert bench.main([*common, "--flops-only", *extra, "--json", str(tmp_path / f"{name}.json")]) == 0
        flops[name] = json.loads((tmp_path / f"{name}.json").read_text())["flops_per_iteration"]
    assert flops["z0_hat"] < flops["paper"] < flops["backward"]
    timed = ["--device", "cpu", "--gradient", "z0_hat", "--backward-steps", "1", "--json", str(tmp_path / "t.json")]
    assert bench.main([*common, *timed]) == 0
    figures = json.loads((tmp_path / "t.json").read_text())
    assert figures["unet_fwd_s"] > 0 and figures["backward_guidance_s"] > 0 and "unet_fwd_bwd_s" not in figures


def test_a_schedule_is_costed_from_the_config_a_user_composes(tmp_path):
    """--schedule takes the gradient options and the guided iterations per run from fsa's config."""
    bench = load_script("bench")
    common = ["--tiny", "--image-size", "64", "--repeats", "1", "--warmup", "0"]
    schedule = ["--schedule", "sampler=ddim sampler.num_steps=30 guidance=k1 guidance.backward_steps=2"]
    assert bench.main([*common, "--flops-only", *schedule, "--json", str(tmp_path / "s.json")]) == 0
    assert bench.main([*common, "--flops-only", "--backward-steps", "2", "--json", str(tmp_path / "b.json")]) == 0
    costed, by_hand = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("s", "b"))
    assert costed["flops_per_iteration"] == by_hand["flops_per_iteration"]
    assert (costed["iterations_per_run"], costed["flops_per_run"]) == (30, 30 * by_hand["flops_per_iteration"])
    assert by_hand["iterations_per_run"] == 12_960  # without --schedule: the paper schedule
    assert bench.main([*common, "--device", "cpu", *schedule, "--json", str(tmp_path / "t.json")]) == 0
    timed = json.loads((tmp_path / "t.json").read_text())
    assert timed["backward_steps"] == 2 and timed["projected_run_s"] == pytest.approx(30 * timed["iteration_s"])
    figures = load_script("gpu_figures")
    paper = {**timed, "schedule": "sampler=ddpm guidance=paper", "iterations_per_run": 12_960}
    lines = figures.schedule_lines(
        {"schedules_clip_rn50": [{"variant": "paper_schedule", **paper}, {"variant": "fast_schedule", **timed}]}
    )
    assert lines[-1].endswith(f"| 1/{12_960 / 30:.3g} |")


def test_digits_flops_have_no_decoder(tmp_path):
    """--digits counts fsa's embedded pixel-space DDPM and CNN at 16 px: its decoder is the identity."""
    bench = load_script("bench")
    assert bench.main(["--digits", "--flops-only", "--backward-steps", "1", "--json", str(tmp_path / "d.json")]) == 0
    parts = json.loads((tmp_path / "d.json").read_text())["flops_per_part"]
    assert parts["vae_decode_fwd_bwd"] == 0 and parts["unet_fwd_bwd"] > 0
    assert parts["backward_guidance"] == parts["extractor_fwd_bwd"] > 0


def test_the_profile_names_every_part_of_a_real_iteration(tmp_path):
    """scripts/profile_iteration.py on the tiny components (CPU): every part of the decoder's iteration
    is found, the backward split by the forward part it belongs to, shares adding up, files written."""
    profiler = load_script("profile_iteration")
    result = profiler.main(
        ["--tiny", "--image-size", "32", "--iterations", "2", "--warmup", "1", "--out", str(tmp_path)]
    )
    parts = {p["part"]: p for p in result["parts"]}
    for part in ("unet", "decode", "extract", "guide", "report", "sampler", "post_check/decode", "post_check/extract"):
        assert parts[part]["ms_per_iteration"] > 0 and parts[part]["kernels_per_iteration"] > 0, part
    for part in ("unet", "decode", "extract"):  # the gradient of Eq. 2 flows back through all three
        assert parts[f"backward: {part}"]["ms_per_iteration"] > 0
    assert sum(p["share"] for p in result["parts"]) == pytest.approx(1.0)
    assert parts["unet"]["kernels_per_iteration"] > parts["sampler"]["kernels_per_iteration"]
    assert result["syncs_per_iteration"] >= 1  # the best image's bookkeeping reads distances back (nonzero)
    assert result["top"] and result["measure"].startswith("CPU")
    assert json.loads((tmp_path / "profile.json").read_text())["parts"] == result["parts"]
    assert "| unet |" in (tmp_path / "profile.md").read_text()
