"""scripts/schedule_study.py at a small scale: each case runs as the `fsa` command it prints, on both
target sets, its FLOPs per sample are counted from the run's own counts, and verdicts follow the goal."""

import json
import shlex
from pathlib import Path

import pytest
from helpers import load_script

REFERENCE = "sampler=ddim sampler.num_steps=6 guidance=k1"
CASES = {
    "backward": "sampler=ddim sampler.num_steps=4 guidance=k1 guidance.backward_steps=2",
    "z0_hat": "sampler=ddim sampler.num_steps=4 guidance=k1 guidance.gradient=z0_hat guidance.post_check=false",
}
EXTRA = ["dataset.limit=2"]


@pytest.fixture(scope="module")
def study(scenarios):
    script = load_script("schedule_study")
    argv = ["--reference", REFERENCE, "--cases", *[f"--case={name}={o}" for name, o in CASES.items()]]
    argv += ["--seeds", "1", "--extra", *EXTRA, "--tiny-flops"]

    def build(folder: Path) -> None:
        assert script.main([*argv, "--out", str(folder)]) == 0

    out = scenarios.get("schedule_study", build)
    return script, out, [*argv, "--out", str(out)]


@pytest.mark.slow
def test_each_case_runs_as_the_command_it_prints_on_both_sets(study):
    _, out, _ = study
    summary = json.loads((out / "results.json").read_text())
    assert [c["case"] for c in summary["cases"]] == ["paper", "backward", "z0_hat"]
    for case in summary["cases"]:
        overrides = REFERENCE if case["case"] == "paper" else CASES[case["case"]]
        assert case["command"].startswith(f"fsa {overrides} dataset.skip=1 max_samples=1 ")
        for skip in (0, 1):
            saved = shlex.split((out / case["case"] / f"skip{skip}" / "overrides.yaml").read_text())
            assert f"dataset.skip={skip}" in " ".join(saved)
        # The two sets are different digits: the same case lands on different distances.
        assert case["pick"]["median_best_distance"] != case["report"]["median_best_distance"]
        assert case["report"]["samples"] == 2  # 2 targets x 1 seed
        assert set(case["report"]["versus"]) == {"best", "final"}  # against the paper's, same targets and seeds
    assert summary["cases"][0]["pick"]["versus"]["best"]["value"] == 1.0
    table = (out / "table.md").read_text()
    assert table.count("\n| `") == 3 and "reference" in table and " tied |" in table
    assert (out / "work.png").stat().st_size > 0


@pytest.mark.slow
def test_flops_per_sample_follow_the_runs_counts(study):
    """Per iteration: the gradient (with or without the UNet's backward), each backward step, the post
    check when on; counted with bench.py's parts at the digits size."""
    _, out, _ = study
    parts = json.loads((out / "flops.json").read_text())["digits"]
    cases = {c["case"]: c for c in json.loads((out / "results.json").read_text())["cases"]}
    gradient = parts["vae_decode_fwd_bwd"] + parts["extractor_fwd_bwd"]
    paper = 6 * (parts["unet_fwd_bwd"] + gradient + parts["post_check"])
    backward = 4 * (parts["unet_fwd_bwd"] + gradient + 2 * parts["backward_guidance"] + parts["post_check"])
    z0_hat = 4 * (parts["unet_fwd"] + gradient)  # no post check
    assert cases["paper"]["flops_digits"] == paper
    assert cases["backward"]["flops_digits"] == backward
    assert cases["z0_hat"]["flops_digits"] == z0_hat
    assert cases["z0_hat"]["flops_fraction"] == cases["z0_hat"]["flops_sd512"] / cases["paper"]["flops_sd512"]


def versus(best: float, final: float, width: float = 0.05) -> dict:
    """Ratios to the paper's with intervals of +- width, and their verdicts, as `against_reference` gives."""
    script = load_script("schedule_study")
    ratios = {"best": best, "final": final}
    return {
        kind: {"value": v, "interval": [v - width, v + width], "verdict": script.verdict([v - width, v + width])}
        for kind, v in ratios.items()
    }


def on_pick_set(best: float, final: float, agreement: tuple[float, float] = (0.7, 1.0)) -> dict:
    keys = ("best_oracle_agreement", "final_oracle_agreement")
    return {"pick": {"versus": versus(best, final), "intervals": {key: list(agreement) for key in keys}}}


def test_verdicts_read_the_interval_and_a_tie_is_not_evidence():
    script = load_script("schedule_study")
    assert script.verdict([0.5, 0.9]) == "closer" and script.verdict([1.1, 2.0]) == "farther"
    assert script.verdict([0.9, 1.1]) == "tied" and script.verdict(None) == "tied"


def test_ratios_to_the_paper_are_paired_by_target_and_seed():
    script = load_script("schedule_study")
    paper = {
        "samples": [
            {"target_index": t, "sample": s, "best_distance": 1.0 + t, "final_distance": 4.0 + t}
            for t in range(5)
            for s in range(2)
        ]
    }
    half = {
        "samples": [
            x | {"best_distance": x["best_distance"] / 2, "final_distance": x["final_distance"] * 2}
            for x in reversed(paper["samples"])
        ]
    }  # any order: paired by target and seed
    found = script.against_reference(half, paper)
    assert found["best"]["value"] == pytest.approx(0.5) and found["best"]["interval"] == pytest.approx([0.5, 0.5])
    assert found["best"]["verdict"] == "closer" and found["final"]["verdict"] == "farther"
    assert script.against_reference(paper, paper)["final"] == {"value": 1.0, "interval": [1.0, 1.0], "verdict": "tied"}


def test_the_goal_needs_both_distances_both_agreements_and_the_flop_budget():
    script = load_script("schedule_study")
    paper = on_pick_set(1.0, 1.0)
    assert script.meets_goal({**on_pick_set(1.02, 0.98), "flops_fraction": 1 / 25}, paper, "pick")  # ties pass
    assert script.meets_goal({**on_pick_set(0.5, 0.5), "flops_fraction": 1 / 25}, paper, "pick")
    assert not script.meets_goal({**on_pick_set(1.2, 0.5), "flops_fraction": 1 / 25}, paper, "pick")
    assert not script.meets_goal({**on_pick_set(0.5, 1.2), "flops_fraction": 1 / 25}, paper, "pick")
    lower = on_pick_set(0.5, 0.5, agreement=(0.2, 0.6))  # its interval ends below the paper's
    assert not script.meets_goal({**lower, "flops_fraction": 1 / 25}, paper, "pick")
    assert not script.meets_goal({**on_pick_set(0.5, 0.5), "flops_fraction": 1 / 24}, paper, "pick")


def test_the_pick_is_the_cheapest_case_meeting_the_goal_then_the_more_decided_then_the_closer_one():
    script = load_script("schedule_study")

    def case(name, flops, best, final, meets):
        return {"case": name, "flops_sd512": flops, "meets_goal_pick": meets} | on_pick_set(best, final)

    paper = case("paper", 100, 1.0, 1.0, True)
    results = [paper, case("a", 4, 0.9, 0.1, True), case("b", 4, 0.5, 0.93, True), case("c", 2, 2.0, 1.0, False)]
    assert script.pick(results) == "a"  # equal FLOPs, both closer twice: a's worse ratio is 0.9, b's 0.93
    results.append(case("t", 4, 0.3, 1.0, True))  # as cheap, closer on best but tied on final: after a
    assert script.pick(results) == "a"
    results.append(case("d", 3, 0.1, 0.1, True))
    assert script.pick(results) == "d"
    assert script.pick([paper, case("fast", 1, 0.1, 0.1, True), case("e", 2, 2.0, 1.0, False)]) is None


@pytest.mark.slow
def test_a_second_run_reuses_the_finished_runs(study, capsys):
    script, out, argv = study
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/skip*/summary.json")}
    assert len(before) == 6
    assert script.main(argv) == 0
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*/skip*/summary.json")}
    assert "$ fsa" not in capsys.readouterr().out
