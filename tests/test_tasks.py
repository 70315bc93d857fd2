"""The task skeleton: a task added as one module and one YAML (tests/toy_task) runs through the command
line, the run folder, resume and the report; the registry, typed checkpoint states and objectives."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from helpers import ROOT, compose_config, fsa, fsa_report

from fsa.errors import ConfigError
from fsa.tasks import COMMON, available_tasks, objectives, task_of
from fsa.tracking.checkpoint import from_plain, load_checkpoint, save_checkpoint, to_plain
from fsa.tracking.run_folder import RunFolder, State

TOY = ROOT / "tests" / "toy_task"
# A user's own config folder and module path: where the toy task's YAML and module are.
TOY_ENV = {"FSA_CONFIG_DIR": str(TOY / "conf"), "PYTHONPATH": os.pathsep.join([str(TOY), str(ROOT)])}


def toy(*args: str, env: dict | None = None):
    return fsa(*args, env={**TOY_ENV, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def toy_runs(scenarios) -> dict:
    """The toy task run whole, and run stopped at step 3 by SIGTERM then rerun in its folder: the two
    folders, and what the stopped and the rerun process did (exit code, log)."""

    def build(root: Path) -> None:
        assert toy("task=toy", "logger.mode=offline", f"hydra.run.dir={root / '0_whole'}").returncode == 0
        stopped = ["task=toy", "logger.mode=offline", f"hydra.run.dir={root / '1_stopped'}"]
        first, second = toy(*stopped, env={"TOY_STOP_AT": "3"}), toy(*stopped)
        processes = {
            name: {"returncode": p.returncode, "log": p.stderr} for name, p in (("first", first), ("second", second))
        }
        (root / "processes.json").write_text(json.dumps(processes))

    root = scenarios.get("toy", build)
    processes = json.loads((root / "processes.json").read_text())
    return {"root": root, "whole": root / "0_whole", "stopped": root / "1_stopped", **processes}


@pytest.mark.slow
def test_a_task_added_as_one_module_and_one_yaml_runs_from_the_command_line(toy_runs):
    whole = toy_runs["whole"]
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["task"] == "toy" and summary["steps"] == 8
    assert RunFolder(whole).state() == State.COMPLETE and (whole / "overview.png").is_file()
    table = pd.read_csv(whole / "toy.csv")
    assert table["position"].iloc[-1] == pytest.approx(summary["final_position"])
    # Its root config holds the common keys and its own, not the guide task's groups.
    config = yaml.safe_load((whole / "config.yaml").read_text())
    assert set(config) <= set(COMMON) and config["task"]["name"] == "toy"
    assert "guidance" not in config and "model" not in config
    assert summary["tracker"]["runs"]["toy"]["id"]  # the job's W&B run, recorded


@pytest.mark.slow
def test_the_toy_task_stopped_by_sigterm_resumes_to_the_same_result(toy_runs):
    first, second = toy_runs["first"], toy_runs["second"]
    assert first["returncode"] == 3 and "checkpoint saved" in first["log"]  # the requeue exit code
    assert second["returncode"] == 0 and "resuming from" in second["log"], second["log"][-2000:]
    whole, stopped = toy_runs["whole"], toy_runs["stopped"]
    pd.testing.assert_frame_equal(pd.read_csv(stopped / "toy.csv"), pd.read_csv(whole / "toy.csv"))
    assert (stopped / "overview.png").read_bytes() == (whole / "overview.png").read_bytes()
    both = [json.loads((folder / "summary.json").read_text()) for folder in (whole, stopped)]
    assert both[0]["final_position"] == both[1]["final_position"]
    assert not (stopped / "checkpoint.pt").exists()
    # Both processes wrote to one W&B run: the resumed job continued the run its checkpoint named.
    ids = {folder.name.rsplit("-", 1)[1] for folder in (stopped / "wandb").glob("offline-run-*")}
    assert len(list((stopped / "wandb").glob("offline-run-*"))) == 2 and ids == {
        both[1]["tracker"]["runs"]["toy"]["id"]
    }


@pytest.mark.slow
def test_the_report_shows_the_toy_task_with_its_headline_and_table(toy_runs, tmp_path):
    result = fsa_report(str(toy_runs["root"]), "--out", str(tmp_path), env=TOY_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs["task"]) == ["toy", "toy"]
    assert all(headline.startswith("walked 8 steps to ") for headline in runs["headline"])
    page = (tmp_path / "report.html").read_text()
    assert "the walk, one row per step" in page and "walked 8 steps to" in page


@pytest.mark.slow
def test_help_lists_the_added_task_and_an_override_of_a_group_it_does_not_use_is_refused(tmp_path):
    help_text = toy("--help").stdout
    assert "toy" in next(line for line in help_text.splitlines() if line.strip().startswith("task "))
    refused = toy("task=toy", "guidance.w_g=2", f"hydra.run.dir={tmp_path}")
    assert refused.returncode == 2 and "task=toy does not use guidance" in refused.stderr


def test_the_registry_finds_every_task_yaml_and_old_run_folders_by_name():
    assert {"guide", "embed", "represent"} <= set(available_tasks())
    assert task_of({"name": "embed"}).name == "embed"  # a run folder written before tasks named their class
    assert task_of(None).name == "guide"  # older still: no task at all
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        task_of({"name": "nope"})
    with pytest.raises(ConfigError, match="cannot be imported"):
        task_of({"_target_": "fsa.tasks.nowhere.Task"})


def test_each_task_root_config_holds_only_what_it_uses():
    from fsa.config import task_config

    for name in ("guide", "embed", "represent"):
        cfg = compose_config([f"task={name}"])
        task = task_of(cfg.task)
        root = task_config(cfg, task)
        assert set(root) == {key for key in cfg if key in COMMON or key in task.uses}, name
    with pytest.raises(ConfigError, match="task=embed does not use guidance, sampler"):
        task_config(compose_config(["task=embed"]), task_of({"name": "embed"}), ["sampler=ddpm", "guidance.w_g=2"])


@dataclass
class Inner:
    value: torch.Tensor
    label: str = "x"


@dataclass
class Outer:
    step: int
    inner: Inner | None
    by_name: dict[str, list[Inner]] = field(default_factory=dict)


def test_a_typed_state_goes_to_disk_as_plain_data_and_comes_back_typed(tmp_path):
    state = Outer(3, Inner(torch.arange(3)), {"a": [Inner(torch.ones(2), "y")]})
    save_checkpoint({"state": to_plain(state)}, tmp_path / "checkpoint.pt")  # weights_only: plain data only
    back = from_plain(Outer, load_checkpoint(tmp_path / "checkpoint.pt")["state"])
    assert isinstance(back.inner, Inner) and isinstance(back.by_name["a"][0], Inner)
    assert back.step == 3 and torch.equal(back.inner.value, torch.arange(3)) and back.by_name["a"][0].label == "y"
    assert from_plain(Outer, {"step": 1, "inner": None, "extra": 0}) == Outer(1, None)  # old or extra keys


def test_objectives_read_dotted_summary_figures_and_nan_for_a_failed_job():
    summary = {"mean_final_distance": 2.5, "proof": {"distance_ratio": 0.1}, "guided_iterations_per_sample": 680}
    assert objectives(summary, []) is None
    assert objectives(summary, ["mean_final_distance"]) == 2.5
    assert objectives(summary, ["proof.distance_ratio", "guided_iterations_per_sample"]) == [0.1, 680.0]
    assert all(value != value for value in objectives(None, ["a", "b"]))  # NaN: the trial failed


def test_an_objective_the_task_does_not_report_is_refused_before_the_run():
    from fsa.config import validate

    with pytest.raises(ConfigError, match="has no summary figure mean_typo_distance"):
        validate(compose_config(["debug=tiny", "objective=[mean_typo_distance]"]))
    validate(compose_config(["debug=tiny", "objective=[mean_final_distance,guided_iterations_per_sample]"]))
