"""Test-wide settings, and the scenarios: the end-to-end runs that several tests read.

Settings: never touch the network, never log to W&B online, one torch thread per process (`make test`
runs two pytest workers on two cores; a subprocess inherits the setting).

A scenario is one end-to-end run (or sweep) made once per test session, however many tests read it
and whichever pytest-xdist worker asks first: it is built into a folder shared by the workers, under
a file lock, and every later ask gets the finished folder. Tests only read a scenario's folder.
"""

import os

# Set before any hub-aware library or torch is imported: a hub miss must fail at once, not stall.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # small tensors: one thread is as fast, two workers twice as fast

from pathlib import Path

import pytest
from helpers import CONF_DIR, Scenarios, fsa, run_fsa
from omegaconf import OmegaConf


@pytest.fixture(scope="session")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Scenarios:
    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist each worker has its own base folder; their parent is the session's.
    return Scenarios((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "scenarios")


@pytest.fixture(scope="session")
def appb_sweep(scenarios: Scenarios) -> tuple[Path, list[str]]:
    """App. B's w_g sweep at smoke scale with offline W&B (`fsa -m experiment=appb_wg smoke=digits`): the
    sweep folder, and the values of w_g in the order of its jobs."""

    def build(folder: Path) -> None:
        result = fsa("-m", "experiment=appb_wg", "smoke=digits", "logger.mode=offline", f"hydra.sweep.dir={folder}")
        assert result.returncode == 0, result.stderr[-2000:]

    return scenarios.get("appb_wg_smoke", build), ["0.5", "1", "2", "4", "8"]


KNOWN_ANSWER = ["experiment=known_answer", "logger.mode=disabled", "progress=false", "device=cpu"]
EXTRACTORS = OmegaConf.load(CONF_DIR / "experiment" / "known_answer.yaml").hydra.sweeper.params.extractor.split(",")
# The digits CNN's run is also the proof that guidance works and the adversarial control's known-answer
# test (test_judges.py): with the printed sign and the adversarial control as more baselines
# (retention reads guided and unguided alone), logged to W&B offline.
PROOF = ["baselines=[unguided,printed_sign,adversarial]", "logger.mode=offline", "max_samples=2"]
# The retention runs: one sample per target (retention's interval is a bootstrap over targets), and no
# judges or robustness check, which only the proof's run is read for.
RETENTION = ["max_samples=1", "~judges", "robustness=null"]


@pytest.fixture(scope="session")
def known_answer(scenarios: Scenarios) -> dict[str, Path]:
    """experiment=known_answer at CI size: each extractor of its sweep on the 10 held-out digits, DDIM 50,
    guidance=quick, with its unguided twin: the digits CNN (the proof) with 2 seeds, the others with 1
    (about 25 s each); {name: folder}."""

    def build(name: str, folder: Path) -> None:
        run_fsa([*KNOWN_ANSWER, f"extractor={name}", *(PROOF if name == "digits_cnn" else RETENTION)], folder)

    # The proof's run first: a worker that reads only it (test_digits) waits the least.
    folders = scenarios.get_each(
        [f"known_answer_{name}" for name in sorted(EXTRACTORS, key="digits_cnn".__ne__)],
        lambda scenario, folder: build(scenario.removeprefix("known_answer_"), folder),
    )
    return {name: folders[f"known_answer_{name}"] for name in EXTRACTORS}
