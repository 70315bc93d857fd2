"""Checkpoint and resume: a killed run continues to exactly the uninterrupted result."""

import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from helpers import fsa
from PIL import Image
from wandb_records import history_rows, read_records, run_id, run_record

from fsa.tracking.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fsa.tracking.run_folder import target_folder_name

ROOT = Path(__file__).resolve().parents[1]
# Embedded digits, 2 targets x 2 samples, 220 guided iterations per variant (seconds here), a
# checkpoint every 5, with a baseline so that a kill can land in either run variant.
RUN = [
    "smoke=digits",
    "experiment=paper",
    "extractor=digits_cnn",
    "dataset.limit=2",
    "baselines=[unguided]",
    "guidance.early_k=20",
    "guidance.k=10",
    "checkpoint_every=5",
    "logger.mode=offline",
    "progress=false",
    "device=cpu",
]


def start(folder: Path, *extra: str) -> subprocess.Popen:
    return fsa(*RUN, f"hydra.run.dir={folder}", *extra, wait=False)


def outputs(folder: Path) -> dict:
    """Everything a run produces that must not depend on an interruption (elapsed time aside)."""
    tables = {p.relative_to(folder): pd.read_csv(p).drop(columns="elapsed_s") for p in folder.rglob("evaluations.csv")}
    images = {p.relative_to(folder): Image.open(p).tobytes() for p in folder.rglob("*.png") if "wandb" not in p.parts}
    summary = pd.read_json(folder / "summary.json", typ="series")
    return {"tables": tables, "images": images, "samples": summary["samples"], "baseline": summary["baseline_samples"]}


def same(a: dict, b: dict) -> None:
    assert a["tables"].keys() == b["tables"].keys() and a["images"] == b["images"]
    for key in a["tables"]:
        pd.testing.assert_frame_equal(a["tables"][key], b["tables"][key])
    drop = ("wall_time_s", "best_image", "final_image")
    strip = lambda samples: [{k: v for k, v in s.items() if k not in drop} for s in samples]  # noqa: E731
    assert strip(a["samples"]) == strip(b["samples"])
    assert {k: strip(v) for k, v in a["baseline"].items()} == {k: strip(v) for k, v in b["baseline"].items()}


def metric_keys(table_file: Path, variant: str) -> set[tuple[str, int]]:
    """The W&B (metric, iteration) pairs that the rows of an evaluation table correspond to."""
    table = pd.read_csv(table_file)
    index = {name: i for i, name in enumerate(dict.fromkeys(table["target"]))}  # targets run in order
    return {
        (
            f"{variant}/{target_folder_name(index[r.target], r.target)}/sample{r.sample}/"
            f"{'post_' if r.phase == 'post' else ''}distance",
            int(r.iteration),
        )
        for r in table.itertuples()
    }


@pytest.fixture(scope="module")
def uninterrupted(scenarios):
    def build(folder: Path) -> None:
        process = start(folder)
        assert process.wait(timeout=600) == 0, process.stdout.read()

    return outputs(scenarios.get("resume_uninterrupted", build))


def wait_for_checkpoint(folder: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "checkpoint.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_gives_identical_outputs(tmp_path, uninterrupted):
    folder = tmp_path / "run"
    process = start(folder)
    wait_for_checkpoint(folder, process)
    time.sleep(random.Random(0).uniform(0.0, 1.0))  # somewhere after the first checkpoint
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (folder / "summary.json").exists()
    resumed = start(folder)  # the same command in the same folder
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    assert "resuming from" in resumed.stdout.read()
    same(outputs(folder), uninterrupted)
    assert not (folder / "checkpoint.pt").exists()  # a completed run keeps no checkpoint
    files = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
    # One W&B run per variant (guided, unguided), each opened by both processes: the resumed process
    # continued the same two runs. (SIGKILL can stop the killed process's writer before a run's first record.)
    assert len(files) == 4
    records = [r for r in (read_records(f, wait_s=0) for f in files) if r]
    assert len({run_id(r) for r in records}) == 2
    assert {run_record(r).job_type: run_id(r) for r in records} == {
        run_record(r).job_type: run_id(r) for r in records if r[-1].WhichOneof("record_type") == "exit"
    }

    # W&B got each evaluation at most once, and only evaluations the tables hold. (The killed process's
    # own writer may lose its last rows: W&B writes asynchronously, and SIGKILL stops it too.)
    def logged(records) -> list[tuple[str, int]]:
        metric = lambda key: key.endswith(("/distance", "/post_distance"))  # noqa: E731
        variant = run_record(records).job_type
        rows = history_rows(records)
        return [(f"{variant}/{key}", int(row["iteration"])) for row in rows for key in row if metric(key)]

    both = Counter(pair for r in records for pair in logged(r))
    assert max(both.values()) == 1
    tables = metric_keys(folder / "evaluations.csv", "guided")
    tables |= metric_keys(folder / "baselines" / "unguided" / "evaluations.csv", "unguided")
    assert set(both) <= tables
    # The resumed process (its files end with an exit record) logged everything from its checkpoint on.
    resumed = [r for r in records if any(x.WhichOneof("record_type") == "exit" for x in r)]
    assert len(resumed) == 2
    after = {}
    for key, iteration in (pair for r in resumed for pair in logged(r)):
        after.setdefault(key, []).append(iteration)
    for key, iterations in after.items():
        assert sorted(iterations) == list(range(min(iterations), max(iterations) + 1)), key


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_for_requeue_then_resume_option_continues(tmp_path, uninterrupted):
    folder = tmp_path / "run"
    process = start(folder)
    wait_for_checkpoint(folder, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 3  # the requeue exit code
    log = process.stdout.read()
    assert "SIGTERM" in log and "checkpoint saved" in log
    assert load_checkpoint(folder / "checkpoint.pt")["config"]
    assert not (folder / "failure.json").exists() and not (folder / "summary.json").exists()
    resumed = start(tmp_path / "other", f"resume={folder}")
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    same(outputs(folder), uninterrupted)


def test_corrupted_or_truncated_checkpoint_is_reported_not_loaded(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"config": {"a": 1}, "step": 3}, path)
    assert load_checkpoint(path)["step"] == 3
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    path.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not an fsa checkpoint"):
        load_checkpoint(path)


def test_a_run_refuses_a_bad_checkpoint_in_its_folder(tmp_path):
    from helpers import compose_config

    from fsa.job import run

    (tmp_path / "checkpoint.pt").write_bytes(b"FSACKPT1" + b"\0" * 40)
    with pytest.raises(CheckpointError, match="corrupted"):
        run(compose_config(["debug=tiny", "logger.mode=disabled"], tmp_path), tmp_path)
    assert (tmp_path / "failure.json").exists() and not (tmp_path / "summary.json").exists()


def test_a_signal_is_handled_at_an_iteration_boundary_then_passed_on(tmp_path, monkeypatch):
    """Under submitit, SIGUSR2 (time limit or preemption) must reach submitit's handler, which
    requeues the job, but only after fsa has written a consistent checkpoint."""
    from helpers import compose_config

    from fsa.job import Interrupted, run
    from fsa.tracking.progress import Progress

    calls = []

    def submitit_like(signum, frame):
        calls.append((signum, (tmp_path / "checkpoint.pt").exists()))

    count = Progress.__call__

    def count_then_signal(self, ev):  # the signal arrives in the middle of the third iteration
        count(self, ev)
        if ev.iteration == 2 and ev.phase == "pre" and not calls:
            signal.raise_signal(signal.SIGUSR2)

    monkeypatch.setattr(Progress, "__call__", count_then_signal)
    previous = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        cfg = compose_config(["debug=tiny", "logger.mode=disabled", "checkpoint_every=0"], tmp_path)
        with pytest.raises(Interrupted, match="SIGUSR2"):
            run(cfg, tmp_path)
        assert calls == [(signal.SIGUSR2, True)]  # passed on once, after the checkpoint was on disk
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # fsa's handler is gone again
        state = load_checkpoint(tmp_path / "checkpoint.pt")["state"]["decode"]
        assert state["counts"]["iterations"] == 3  # the iteration that was under way was finished first
        assert not (tmp_path / "failure.json").exists()
    finally:
        signal.signal(signal.SIGUSR2, previous)
