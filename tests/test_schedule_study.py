"""scripts/schedule_study.py at a tiny scale: every case runs, resumes from its JSON, and is summarised."""

import json

import pytest
from helpers import compose_config, load_script
from hydra.utils import instantiate

SCHEDULES = ["ddim8:2x2+1", "ddim4:1", "ddim8:1"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    script = load_script("schedule_study")
    out = tmp_path_factory.mktemp("study")
    argv = ["--schedules", *SCHEDULES, "--w-g", "4", "8", "--sweep", "ddim4:1"]
    argv += ["--no-post-check", "ddim8:1", "--thin", "ddim8:2x2+1", "--post-check-every", "2"]
    argv += ["--per-class", "1", "--limit", "2", "--seeds", "2", "--out", str(out)]
    assert script.main(argv) == 0
    return script, out, argv


def test_every_case_is_run_and_tabulated(study):
    _, out, _ = study
    summary = json.loads((out / "results.json").read_text())
    keys = [c["key"] for c in summary["cases"]]
    assert keys == [
        "ddim8_2x2p1_wg4",
        "ddim4_1_wg4",
        "ddim8_1_wg4",
        "ddim4_1_wg8",
        "ddim8_1_wg4_nopost",
        "ddim8_2x2p1_wg4_post2",
    ]
    assert [c["iterations"] for c in summary["cases"]] == [10, 4, 8, 4, 8, 10]
    for case in summary["cases"]:
        assert case["samples"] == 4 and len(case["best_distances"]) == 4
        iterations, medians = zip(*case["curve"], strict=True)
        assert iterations[-1] == case["iterations"] and medians[-1] == pytest.approx(case["median_best_distance"])
        assert list(medians) == sorted(medians, reverse=True)  # the best so far never gets worse
        assert 0 <= case["oracle_agreement_best"] <= 1
    evaluations = {c["key"]: c["feature_evaluations"] for c in summary["cases"]}
    assert evaluations["ddim8_1_wg4_nopost"] == 8 + 1  # pre per iteration, and the final image
    assert evaluations["ddim8_1_wg4"] == 2 * 8 + 1
    assert evaluations["ddim8_2x2p1_wg4_post2"] == evaluations["ddim8_2x2p1_wg4"] - 2  # k = 0 of 2 steps unchecked
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 6 and "reference" in table  # a row per case under the header
    assert (out / "curve.png").stat().st_size > 0


def test_the_cheapest_match_is_the_fewest_iterations_at_most_the_reference_median(study):
    _, out, _ = study
    summary = json.loads((out / "results.json").read_text())
    reference = summary["cases"][0]
    matching = [c for c in summary["cases"][1:] if c["median_best_distance"] <= reference["median_best_distance"]]
    assert all(c["matches_reference"] == (c in matching) for c in summary["cases"][1:])
    expected = min(matching, key=lambda c: (c["iterations"], c["median_best_distance"]))["key"] if matching else None
    assert summary["cheapest_match"] == expected


def test_a_second_run_reuses_the_saved_cases(study, capsys):
    script, out, argv = study
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("ddim*.json")}
    assert script.main(argv) == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("ddim*.json")}
    assert "guided iterations ..." not in capsys.readouterr().out


def test_a_malformed_schedule_is_refused_before_anything_runs():
    script = load_script("schedule_study")
    with pytest.raises(ValueError, match="ddim50x"):
        script.main(["--schedules", "ddim50x", "--out", "/nonexistent/never"])


def test_schedule_specs_name_the_paper_and_late_k_schedules():
    script = load_script("schedule_study")
    paper = script.Case("ddpm1000:1000x5+8", 4.0, True)
    assert paper.iterations() == 12_960 and paper.key == "ddpm1000_1000x5p8_wg4"
    sampler, guidance = script.Case("ddpm1000:1+8x40", 2.0, True).parts()
    assert (sampler.num_steps, guidance.early_steps, guidance.k, guidance.late_k, guidance.late_steps) == (
        1000,
        0,
        1,
        8,
        40,
    )
    assert guidance.w_g == 2.0 and script.Case("ddpm1000:1+8x40", 2.0, True).iterations() == 960 + 8 * 40


def test_the_minutes_preset_is_the_study_schedule_it_is_named_after():
    """`sampler=ddim1000 guidance=k1` composes to exactly the study's ddim1000:1 case at the paper's w_g."""
    cfg = compose_config(["sampler=ddim1000", "guidance=k1"])
    sampler, guidance = load_script("schedule_study").Case("ddim1000:1", 4.0, True).parts()
    assert instantiate(cfg.sampler) == sampler and instantiate(cfg.guidance) == guidance
    assert guidance.total_iterations(len(sampler.timesteps(1000))) == 1000
