"""Sweeps that search: the Hydra app returns the objective a config names, and Optuna's sweeper
(experiment=optuna_schedule) searches on it from the command line, keeping the Pareto front."""

from pathlib import Path

import pytest
import yaml
from helpers import fsa, load_script, summary_of

from fsa.tracking.run_folder import RunFolder

# CI size: 3 trials of 4 to 8 DDIM steps on two held-out digits, one seed each (seconds per trial).
CI_SIZE = ["hydra.sweeper.n_trials=3", "sampler.num_steps=range(4,9)", "dataset.limit=2", "max_samples=1"]


@pytest.fixture(scope="module")
def optuna_sweep(scenarios) -> Path:
    def build(folder: Path) -> None:
        result = fsa("-m", "experiment=optuna_schedule", *CI_SIZE, "logger.mode=disabled", f"hydra.sweep.dir={folder}")
        assert result.returncode == 0, result.stderr[-3000:]

    return scenarios.get("optuna_schedule", build)


@pytest.mark.slow
def test_an_optuna_sweep_searches_and_keeps_the_pareto_front_of_the_jobs_objectives(optuna_sweep):
    sweep = optuna_sweep
    jobs = [p for p in sweep.iterdir() if RunFolder.holds_a_run(p)]
    assert len(jobs) == 3
    trials = []
    for job in jobs:
        summary, config = summary_of(job), yaml.safe_load((job / "config.yaml").read_text())
        assert 4 <= config["sampler"]["num_steps"] <= 8 and 0.25 <= config["guidance"]["w_g"] <= 4.0
        assert summary["guided_iterations_per_sample"] == config["sampler"]["num_steps"]  # K = 1
        values = [summary["mean_final_distance"], float(summary["guided_iterations_per_sample"])]
        params = {"sampler.num_steps": config["sampler"]["num_steps"], "guidance.w_g": config["guidance"]["w_g"]}
        trials.append((params, values))
    front = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["solutions"]
    assert front and all((s["params"], s["values"]) in trials for s in front)  # what the jobs returned

    def dominated(values: list[float]) -> bool:
        return any(all(o <= v for o, v in zip(other, values, strict=True)) and other != values for _, other in trials)

    assert sorted(s["values"] for s in front) == sorted(v for _, v in trials if not dominated(v))


@pytest.mark.slow
def test_the_front_script_tables_every_trial_and_draws_the_front(optuna_sweep, tmp_path, capsys):
    script = load_script("sweep_front")
    assert script.main([str(optuna_sweep), "--out", str(tmp_path / "front.png")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    front = yaml.safe_load((optuna_sweep / "optimization_results.yaml").read_text())["solutions"]
    assert len(rows) == 3 and sum(row.endswith("| yes |") for row in rows) == len(front)
    assert rows[0].endswith("| yes |")  # the front first
    assert (tmp_path / "front.png").stat().st_size > 0
