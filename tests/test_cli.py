"""The `fsa` command in a subprocess: a run, a 2-job multirun, and a clean failure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from wandb_records import read_records, run_id

from fsa.tracking.run_folder import wandb_group

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def fsa(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "-m", "fsa", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_single_run(tmp_path):
    result = fsa("debug=tiny", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "complete" and len(summary["samples"]) == 2
    assert "images:" in result.stdout + result.stderr


def test_multirun_sweeps_w_g_into_grouped_jobs(tmp_path):
    result = fsa("-m", "debug=tiny", "guidance.w_g=1,4", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in tmp_path.iterdir() if (p / "summary.json").exists())
    assert [p.name for p in jobs] == ["0_debug=tiny,guidance.w_g=1", "1_debug=tiny,guidance.w_g=4"]
    assert [yaml.safe_load((p / "config.yaml").read_text())["guidance"]["w_g"] for p in jobs] == [1, 4]
    assert [yaml.safe_load((p / "overrides.yaml").read_text()) for p in jobs] == [
        ["debug=tiny", "guidance.w_g=1"],
        ["debug=tiny", "guidance.w_g=4"],
    ]
    runs = [read_records(next(job.glob("wandb/offline-run-*/run-*.wandb"))) for job in jobs]
    groups = {next(r.run.run_group for r in records if r.WhichOneof("record_type") == "run") for records in runs}
    assert groups == {f"fsa {tmp_path.name}"}  # one W&B run per job, grouped by the sweep
    assert len({run_id(records) for records in runs}) == 2


def test_wandb_group_names_the_experiment_and_when_the_sweep_started(tmp_path):
    assert wandb_group("appb_wg", Path("outputs/multiruns/2026-11-30/10-04-59")) == "appb_wg 2026-11-30 10-04-59"
    assert wandb_group(None, Path("outputs/runs/2026-11-30/10-04-59")) == "fsa 2026-11-30 10-04-59"
    assert wandb_group(None, tmp_path / "my-sweep") == "fsa my-sweep"


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path):
    result = fsa("debug=tiny", "dataset=images", f"dataset.paths=[{tmp_path}/missing.png]", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("fsa: error:")]
    assert len(errors) == 1 and "missing.png" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "summary.json").exists()


def test_typo_in_an_override_is_an_error():
    result = fsa("debug=tiny", "guidance.w_gg=3")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "w_gg" in result.stderr


def test_a_failed_job_does_not_stop_or_spoil_the_sweep(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 20, 3), 200, dtype=np.uint8)).save(good)
    paths = f"[{tmp_path}/missing.png],[{good}],[{good}]"
    result = fsa("-m", "debug=tiny", "dataset=images", f"dataset.paths={paths}", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 1, result.stderr  # after every job ran, with one line per failed job
    assert "fsa: job 0_dataset=images,debug=tiny did not complete: TargetError" in result.stderr
    assert "1 of 3 job(s) did not complete" in result.stderr
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert [p.name for p in jobs] == [
        "0_dataset=images,debug=tiny",
        "1_dataset=images,debug=tiny",
        "2_dataset=images,debug=tiny",
    ]
    failure = json.loads((jobs[0] / "failure.json").read_text())
    assert failure["error"] == "TargetError" and "missing.png" in failure["message"]
    assert not (jobs[0] / "summary.json").exists()
    for job in jobs[1:]:
        assert json.loads((job / "summary.json").read_text())["status"] == "complete"
        assert not (job / "failure.json").exists()
    report = subprocess.run(
        [sys.executable, "-m", "fsa.report", str(tmp_path / "sweep")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert "2 complete, 1 failed" in report.stdout


def test_submitit_local_sweep_isolates_a_failed_job(tmp_path):
    """The Slurm launcher's local twin: 3 jobs as separate processes, one given a bad target."""
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 20, 3), 90, dtype=np.uint8)).save(good)
    sweep = tmp_path / "sweep"
    result = fsa(
        "-m",
        "hydra/launcher=submitit_local",
        "debug=tiny",
        "dataset=images",
        f"dataset.paths=[{good}],[{tmp_path}/missing.png],[{good}]",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1 and "1 of 3 job(s) did not complete" in result.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.name[0].isdigit())
    assert len(jobs) == 3 and (sweep / ".submitit").is_dir()
    assert [(j / "summary.json").exists() for j in jobs] == [True, False, True]
    assert json.loads((jobs[1] / "failure.json").read_text())["error"] == "TargetError"
    report = subprocess.run(
        [sys.executable, "-m", "fsa.report", str(sweep)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0 and "2 complete, 1 failed" in report.stdout


@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_an_output_folder_that_cannot_be_made_is_refused_in_one_line(tmp_path, mode):
    (tmp_path / "a_file").write_text("")  # a file where a folder should go: unwritable even for root
    key = "hydra.run.dir" if mode == "run" else "hydra.sweep.dir"
    args = ["-m"] if mode == "sweep" else []
    result = fsa(*args, "debug=tiny", f"{key}={tmp_path}/a_file/out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "cannot create the output folder" in line and key in line


def test_presets_that_need_a_choice_or_a_sweep_say_so(tmp_path):
    result = fsa("experiment=paper", f"hydra.run.dir={tmp_path}/paper")
    assert result.returncode == 2 and "specify 'extractor'" in result.stderr
    assert "choose from: clip_rn50, digits_cnn" in result.stderr
    result = fsa("experiment=appb_wg", "smoke=digits", f"hydra.run.dir={tmp_path}/sweep")
    assert result.returncode == 2 and "sweeps guidance.w_g over 0.5,1,2,4,8" in result.stderr
    assert "`fsa -m experiment=appb_wg smoke=digits" in result.stderr
    assert not (tmp_path / "paper").exists() and not (tmp_path / "sweep").exists()


def test_null_groups_turn_the_oracle_and_wandb_off(tmp_path):
    result = fsa("debug=tiny", "oracle=null", "logger=null", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["oracle"] is None and config["logger"] is None and not (tmp_path / "wandb").exists()


def test_help_names_fsa_and_lists_every_group_with_its_options():
    result = fsa("--help")
    assert result.returncode == 0 and result.stdout.startswith("fsa: feature space analysis")
    for group, option in [("model", "sd14"), ("extractor", "vit_h14"), ("experiment", "appb_wg"), ("speed", "fast")]:
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(group + " "))
        assert option in line
    assert "cli" not in result.stdout.split()
