"""The `fsa` command in a subprocess: a run, a sweep's jobs and their W&B groups, failed jobs in a sweep
under the Slurm launcher's local twin, one-line refusals, and the help."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import fsa, fsa_report, summary_of
from PIL import Image
from wandb_records import read_records, run_id

from fsa.tracking.run_folder import wandb_group

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def single_run(scenarios) -> tuple[Path, dict]:
    """`fsa debug=tiny oracle=null logger=null`: one job, the oracle and W&B turned off by null groups;
    its run folder and what the process did (exit code, output)."""

    def build(folder: Path) -> None:
        result = fsa("debug=tiny", "oracle=null", "logger=null", f"hydra.run.dir={folder / 'run'}")
        process = {"returncode": result.returncode, "output": result.stdout + result.stderr}
        (folder / "process.json").write_text(json.dumps(process))

    folder = scenarios.get("cli_single_run", build)
    return folder / "run", json.loads((folder / "process.json").read_text())


def test_single_run(single_run):
    folder, process = single_run
    assert process["returncode"] == 0, process["output"][-2000:]
    assert "images:" in process["output"]
    summary = summary_of(folder)
    assert summary["status"] == "complete" and len(summary["samples"]) == 2


def test_null_groups_turn_the_oracle_and_wandb_off(single_run):
    folder, _ = single_run
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["oracle"] is None and config["logger"] is None and not (folder / "wandb").exists()


def test_a_sweeps_jobs_are_grouped_with_their_overrides_and_one_wandb_group(appb_sweep):
    """App. B's w_g sweep at smoke scale: one folder and one W&B run per job, one group for the sweep."""
    sweep, values = appb_sweep
    jobs = sorted(
        (p for p in sweep.iterdir() if (p / "summary.json").exists()), key=lambda p: int(p.name.split("_")[0])
    )
    names = [f"{i}_experiment=appb_wg,guidance.w_g={v},logger.mode=offline,smoke=digits" for i, v in enumerate(values)]
    assert [p.name for p in jobs] == names
    assert [yaml.safe_load((p / "config.yaml").read_text())["guidance"]["w_g"] for p in jobs] == [
        float(v) for v in values
    ]
    command = ["experiment=appb_wg", "smoke=digits", "logger.mode=offline"]  # the swept value first
    assert [yaml.safe_load((p / "overrides.yaml").read_text()) for p in jobs] == [
        [f"guidance.w_g={v}", *command] for v in values
    ]
    runs = [read_records(next(job.glob("wandb/offline-run-*/run-*.wandb"))) for job in jobs]
    groups = {next(r.run.run_group for r in records if r.WhichOneof("record_type") == "run") for records in runs}
    assert groups == {f"appb_wg {sweep.name}"} == {summary_of(job)["tracker"]["group"] for job in jobs}
    assert len({run_id(records) for records in runs}) == len(jobs)


def test_wandb_group_names_the_experiment_and_when_the_sweep_started(tmp_path):
    assert wandb_group("appb_wg", Path("outputs/multiruns/2026-11-30/10-04-59")) == "appb_wg 2026-11-30 10-04-59"
    assert wandb_group(None, Path("outputs/runs/2026-11-30/10-04-59")) == "fsa 2026-11-30 10-04-59"
    assert wandb_group(None, tmp_path / "my-sweep") == "fsa my-sweep"


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path):
    run_dir = tmp_path / "run"
    result = fsa("debug=tiny", "dataset=images", f"dataset.paths=[{tmp_path}/missing.png]", f"hydra.run.dir={run_dir}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("fsa: error:")]
    assert len(errors) == 1 and "MissingPiecesError" in errors[0] and "Traceback" not in result.stderr
    assert "the targets (dataset.paths, set on the command line)" in result.stderr and "missing.png" in result.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())  # refused before the folder was touched


def test_typo_in_an_override_is_an_error():
    result = fsa("debug=tiny", "guidance.w_gg=3")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "w_gg" in result.stderr


def test_a_failed_job_does_not_stop_or_spoil_the_sweep(tmp_path):
    """The Slurm launcher's local twin: 3 jobs as separate processes, the second given a bad target.
    Every job runs; the sweep exits 1 naming the failed job; the report counts it."""
    good = tmp_path / "good.png"
    Image.fromarray(np.full((20, 20, 3), 90, dtype=np.uint8)).save(good)
    sweep = tmp_path / "sweep"
    paths = f"[{good}],[{tmp_path}/missing.png],[{good}]"
    result = fsa(
        "-m",
        "hydra/launcher=submitit_local",
        "debug=tiny",
        "dataset=images",
        f"dataset.paths={paths}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1, result.stderr  # after every job ran, with one line per failed job
    assert "fsa: job 1_dataset=images,debug=tiny did not complete: MissingPiecesError" in result.stderr
    assert "1 of 3 job(s) did not complete" in result.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.name[0].isdigit())
    assert [p.name for p in jobs] == [f"{i}_dataset=images,debug=tiny" for i in range(3)]
    assert (sweep / ".submitit").is_dir()
    failure = json.loads((jobs[1] / "failure.json").read_text())
    assert failure["error"] == "MissingPiecesError" and "missing.png" in failure["message"]
    assert not (jobs[1] / "summary.json").exists()
    for job in (jobs[0], jobs[2]):
        assert summary_of(job)["status"] == "complete" and not (job / "failure.json").exists()
    report = fsa_report(str(sweep))
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


def test_help_names_fsa_and_lists_every_group_with_its_options():
    result = fsa("--help")
    assert result.returncode == 0 and result.stdout.startswith("fsa: feature space analysis")
    for group, option in [("model", "sd14"), ("extractor", "vit_h14"), ("experiment", "appb_wg"), ("speed", "fast")]:
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(group + " "))
        assert option in line
    assert "cli" not in result.stdout.split()


NO_TORCH = "raise ImportError('the ML stack was imported before the refusal')\n"


@pytest.mark.parametrize(
    "override,said",
    [
        ("guidance.w_g=-1", "guidance.w_g must be >= 0"),
        ("guidance.w_g=nan", "guidance.w_g=nan: every number must be finite"),
        ("sampler.eta=inf", "sampler.eta=inf: every number must be finite"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("guidance.clip_mode=meen", "clip_mode"),
        ("robustness.jpeg=200", "robustness.jpeg"),
        ("+foo=1", "foo"),
        ("logger.mode=online", "logger.mode=online, but this machine has no W&B key"),
    ],
)
def test_a_bad_value_is_refused_before_the_ml_stack_loads_and_writes_nothing(tmp_path, override, said):
    """A torch that cannot be imported stands in for "before anything loads": the refusal must come
    first. One line, exit 2, and the output folder holds nothing."""
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(NO_TORCH)
    run_dir = tmp_path / "run"
    env = {"PYTHONPATH": str(fake), "HOME": str(tmp_path), "WANDB_API_KEY": ""}  # no W&B key on this "machine"
    result = fsa(override, f"hydra.run.dir={run_dir}", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and said in result.stderr and "ML stack" not in result.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())


@pytest.mark.parametrize(
    "args,said",
    [
        (["resume=/nonexistent/run"], "resume=/nonexistent/run: the folder does not exist"),
        (["hydra.run.dir="], "hydra.run.dir is empty"),
    ],
)
def test_a_path_that_is_not_what_its_key_expects_is_refused(tmp_path, args, said):
    result = fsa("debug=tiny", *args)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and said in result.stderr


def test_resume_of_a_folder_that_holds_no_run_is_refused_and_left_alone(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"not fsa's")
    result = fsa("debug=tiny", f"resume={tmp_path}")
    assert result.returncode == 2 and "holds no run of fsa's" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


@pytest.mark.slow  # two tiny jobs
def test_a_sweep_with_a_non_finite_value_exits_1_naming_the_job(tmp_path):
    result = fsa("-m", "debug=tiny", "logger=null", "guidance.w_g=nan,1", f"hydra.sweep.dir={tmp_path}")
    assert result.returncode == 1
    assert "guidance.w_g=nan: every number must be finite" in result.stderr and "1 of 2 job(s)" in result.stderr


def test_a_wrong_option_offers_only_the_real_choices():
    result = fsa("guidance=quik")
    assert result.returncode == 2 and "choose from: fast, k1, none, paper, quick, self_guided;" in result.stderr
    assert "schema" not in result.stderr
    local = next(line for line in fsa("--help").stdout.splitlines() if line.strip().startswith("local"))
    assert "example" not in local.split("(")[0]  # the example is a template, not an option


def test_a_key_set_in_a_removed_group_is_refused_and_a_group_chosen_again_is_chosen(tmp_path):
    result = fsa("debug=tiny", "logger=null", "logger.mode=online", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "logger=null removes logger, so 'logger.mode=online' has nothing to set" in result.stderr
    chosen = fsa("debug=tiny", "logger=null", "logger=wandb", "logger.mode=offline", "--cfg", "job")
    assert chosen.returncode == 0 and "logger:\n  mode: offline" in chosen.stdout
