"""torch's CPU threads: the CPUs fsa may use (affinity, cgroup quota), OMP_NUM_THREADS, or `threads`."""

import pytest
from helpers import compose_config, run_fsa

from fsa import threads
from fsa.config import validate
from fsa.errors import ConfigError


@pytest.mark.parametrize("text,cpus", [("max 100000", None), ("50000 100000", 0.5), ("300000 100000", 3.0)])
def test_the_cgroup_quota_is_read_in_cpus(tmp_path, monkeypatch, text, cpus):
    (tmp_path / "cpu.max").write_text(text + "\n")
    monkeypatch.setattr(threads, "CGROUP_V2", tmp_path / "cpu.max")
    assert threads.cgroup_cpus() == cpus


def test_usable_cpus_are_the_affinity_capped_by_the_quota(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: 2.5)
    assert threads.usable_cpus() == 3  # a quota of 2.5 CPUs keeps 3 threads busy
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)
    assert threads.usable_cpus() == 8


def test_the_option_wins_then_omp_num_threads_then_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 5)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.chosen_threads(3) == (3, "threads option")
    assert threads.chosen_threads(None) == (2, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.chosen_threads(None) == (5, "CPUs this process may use")


def test_a_run_uses_and_records_its_threads(tmp_path):
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        validate(compose_config(["threads=0"]))
    summary = run_fsa(["debug=tiny", "~logger", "threads=1", "~judges", "robustness=null"], tmp_path / "run")
    assert summary["environment"]["torch_threads"] == 1
    assert "1 CPU thread(s) (threads option)" in (tmp_path / "run" / "fsa.log").read_text()
