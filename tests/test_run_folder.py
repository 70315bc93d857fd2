"""The run folder's rules: one process at a time, no silent overwrite, a refused run changes nothing.

The unit tests drive `RunFolder` itself; the slow ones run real `fsa` processes against one folder:
two at once, a rerun into a complete folder (refused, then fresh=true), a refused resume.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import fsa

from fsa.tracking.run_folder import SUPERSEDED, RunFolder, RunFolderError, State

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"seed": 0, "guidance": {"w_g": 4.0}, "logger": {"mode": "offline"}, "resume": None}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under the folder and a hash of its bytes: what "nothing changed" is checked against."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def started(root: Path, config: dict = CONFIG) -> RunFolder:
    """A folder whose run was admitted and whose process then went away without a word (SIGKILL)."""
    folder = RunFolder(root)
    with folder.lock():
        folder.admit(config, ["guidance.w_g=4"])
    return folder


def test_a_new_folder_goes_running_then_complete(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.state() == State.NEW
    with folder.lock():
        assert folder.admit(CONFIG, ["guidance.w_g=4"]) == State.NEW
        assert folder.state() == State.RUNNING
        assert RunFolder(folder.root).state() == State.RUNNING  # as any other reader sees it
        folder.complete({"status": "complete"})
    assert folder.state() == State.COMPLETE
    assert folder.config() == CONFIG and folder.overrides() == ["guidance.w_g=4"]
    status = json.loads((folder.root / "status.json").read_text())
    assert [h["state"] for h in status["history"]] == ["running", "complete"]
    assert status["pid"] == os.getpid()


def test_a_run_whose_process_died_reads_as_interrupted(tmp_path):
    folder = started(tmp_path / "run")
    assert json.loads((folder.root / "status.json").read_text())["state"] == "running"  # what it last said
    assert folder.state() == State.INTERRUPTED  # its lock is free: nobody runs it


def test_a_second_holder_is_refused_naming_the_first_and_writes_nothing(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        folder.admit(CONFIG, [])
        before = snapshot(folder.root)
        with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()}"), RunFolder(folder.root).lock():
            pass
        assert snapshot(folder.root) == before


def test_a_complete_folder_is_refused_unchanged_and_fresh_moves_it_aside(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        folder.admit(CONFIG, [])
        (folder.root / "evaluations.csv").write_text("a,b\n1,2\n")
        folder.complete({"status": "complete", "mean_best_distance": 1.0})
    before = snapshot(folder.root)
    with folder.lock(), pytest.raises(RunFolderError, match="already holds a complete run.*fresh=true"):
        folder.admit(CONFIG, [])
    assert snapshot(folder.root) == before
    with folder.lock():
        assert folder.admit({**CONFIG, "seed": 1}, [], fresh=True) == State.NEW
    (old,) = (folder.root / SUPERSEDED).iterdir()
    moved = snapshot(old)
    for name in ("summary.json", "evaluations.csv", "config.yaml", "status.json"):
        assert moved[name] == before[name]  # moved, byte for byte, never deleted
    assert folder.state() == State.INTERRUPTED and folder.config()["seed"] == 1
    assert not (folder.root / "summary.json").exists()


def test_a_resume_with_another_config_is_refused_and_changes_nothing(tmp_path):
    folder = started(tmp_path / "run")
    before = snapshot(folder.root)
    with folder.lock(), pytest.raises(RunFolderError, match=r"another config \(differs in: guidance\)"):
        folder.admit({**CONFIG, "guidance": {"w_g": 2.0}}, ["guidance.w_g=2"])
    assert snapshot(folder.root) == before and folder.state() == State.INTERRUPTED
    with folder.lock():  # where and how it logs may change: that is still the same run
        assert folder.admit({**CONFIG, "logger": {"mode": "disabled"}}, []) == State.INTERRUPTED


def test_a_retried_failure_keeps_its_record_but_never_beside_a_summary(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with folder.lock():
        folder.admit(CONFIG, [])
        folder.fail(MemoryError("out of memory"))
    assert folder.state() == State.FAILED and folder.failure()[0]["error"] == "MemoryError"
    with folder.lock():
        assert folder.admit(CONFIG, []) == State.FAILED  # the same run, retried
        assert not (folder.root / "failure.json").exists()
        folder.complete({"status": "complete"})
    history = json.loads((folder.root / "status.json").read_text())["history"]
    assert history[2]["previous_failure"]["message"] == "out of memory"
    assert folder.state() == State.COMPLETE and not (folder.root / "failure.json").exists()


def test_refused_runs_record_no_failure_in_a_folder_that_is_not_theirs(tmp_path):
    folder = started(tmp_path / "run")
    before = snapshot(folder.root)
    with folder.lock():
        assert not folder.owned
        folder.fail(RuntimeError("a bad override"))  # before admission: not this process's run
    assert snapshot(folder.root) == before


def test_an_unwritable_folder_is_refused_clearly(tmp_path):
    (tmp_path / "a_file").write_text("")
    with (
        pytest.raises(RunFolderError, match="cannot write to the run folder"),
        RunFolder(tmp_path / "a_file" / "run").lock(),
    ):
        pass


# ---------------------------------------------------------------- real processes

# Tiny random models (1 target x 2 samples): the folder's rules do not depend on what is decoded.
SMOKE = ["debug=tiny", "logger.mode=disabled"]
LONGER = ["sampler.num_steps=30", "checkpoint_every=5"]  # 61 guided iterations: a few seconds to catch it running


def fsa_in(folder: Path, *args: str, wait: bool = True):
    """`fsa` on the tiny models in `folder` (see helpers.fsa)."""
    return fsa(*SMOKE, f"hydra.run.dir={folder}", *args, wait=wait)


def wait_until(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-2000:]
        time.sleep(0.05)


@pytest.mark.slow
def test_two_processes_on_one_folder(tmp_path):
    folder = tmp_path / "run"
    first = fsa_in(folder, *LONGER, wait=False)
    wait_until(lambda: RunFolder(folder).state() == State.RUNNING, first)
    started_at = time.monotonic()
    second = fsa_in(folder, *LONGER)
    assert second.returncode == 2 and time.monotonic() - started_at < 60
    (line,) = second.stderr.strip().splitlines()
    assert f"in use by process {first.pid}" in line
    assert first.wait(timeout=600) == 0, first.communicate()[0][-2000:]
    table = pd.read_csv(folder / "evaluations.csv")  # whole and well-formed: one writer only
    summary = json.loads((folder / "summary.json").read_text())
    assert len(table) == 2 * summary["guided_iterations_per_sample"] * 2  # pre and post, 1 target x 2 samples
    assert table["distance"].notna().all()
    history = json.loads((folder / "status.json").read_text())["history"]
    assert [h["pid"] for h in history] == [first.pid, first.pid]  # the second process wrote nothing


@pytest.mark.slow
def test_rerun_into_a_complete_folder_is_refused_then_fresh_starts_over(tmp_path):
    folder = tmp_path / "run"
    assert fsa_in(folder).returncode == 0
    before = snapshot(folder)
    for args in ([], ["guidance.w_g=2"], ["dataset=images", f"dataset.paths=[{tmp_path}/missing.png]"]):
        refused = fsa_in(folder, *args)
        assert refused.returncode == 2 and "already holds a complete run" in refused.stderr
        assert snapshot(folder) == before  # no failure.json beside the summary, no new log lines
    fresh = fsa_in(folder, "guidance.w_g=2", "fresh=true")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (old,) = (folder / SUPERSEDED).iterdir()
    assert snapshot(old) == {k: v for k, v in before.items() if k != "run.lock"}  # the lock stays, empty
    assert yaml.safe_load((folder / "config.yaml").read_text())["guidance"]["w_g"] == 2
    assert RunFolder(folder).state() == State.COMPLETE


@pytest.mark.slow
def test_a_refused_resume_leaves_the_interrupted_folder_as_it_was(tmp_path):
    folder = tmp_path / "run"
    process = fsa_in(folder, *LONGER, wait=False)
    wait_until(lambda: (folder / "checkpoint.pt").exists(), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 3
    assert RunFolder(folder).state() == State.INTERRUPTED
    before = snapshot(folder)
    refused = fsa_in(folder, *LONGER, "guidance.w_g=2")
    assert refused.returncode == 2 and "differs in: guidance" in refused.stderr
    assert snapshot(folder) == before  # config record, log, checkpoint: all as they were
    resumed = fsa_in(folder, *LONGER)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr


def test_a_folder_with_files_fsa_did_not_write_is_refused_and_fresh_moves_them_aside(tmp_path):
    (tmp_path / "overview.png").write_bytes(b"the user's own")
    (tmp_path / "images").mkdir()
    before = snapshot(tmp_path)
    folder = RunFolder(tmp_path)
    with pytest.raises(RunFolderError, match=r"holds files fsa did not write \(images, overview.png\).*fresh=true"):
        folder.check(CONFIG)
    with folder.lock(), pytest.raises(RunFolderError, match="did not write"):
        folder.admit(CONFIG, [])
    assert {k: v for k, v in snapshot(tmp_path).items() if k != "run.lock"} == before  # the lock is fsa's own
    with folder.lock():
        assert folder.admit(CONFIG, [], fresh=True) == State.NEW
    (moved,) = (tmp_path / SUPERSEDED).iterdir()
    assert (moved / "overview.png").read_bytes() == b"the user's own" and (moved / "images").is_dir()
    assert not (tmp_path / "overview.png").exists() and folder.state() == State.INTERRUPTED  # its process is gone
