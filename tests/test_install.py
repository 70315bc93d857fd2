"""`pip install .` gives a working fsa: the wheel holds the configs and the embedded models.

The wheel is built from this tree and installed, without its dependencies, into a throw-away
environment that borrows the project's installed dependencies (a path file), so nothing is
downloaded; the commands then run from a folder outside the repository.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a fresh environment with fsa installed from a freshly built wheel."""
    tmp = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip"]
    built = run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(ROOT), cwd=tmp)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "wheel").glob("fsa-*.whl")
    env = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp)
    # The dependencies, as this environment has them (a plain path: its editable fsa is not seen).
    (Path(purelib.stdout.strip()) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = run(*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel), cwd=tmp)
    assert done.returncode == 0, done.stderr[-2000:]
    return env / "bin"


def test_the_wheel_holds_the_package_configs_and_models(installed, tmp_path):
    code = "import fsa; print(fsa.__file__); print(fsa.CONF_DIR)"
    where = run(str(installed / "python"), "-c", code, cwd=tmp_path).stdout.split()
    assert all(str(installed.parent) in line for line in where)  # not this source tree
    assert (Path(where[1]) / "config.yaml").is_file()
    assert (Path(where[0]).parent / "assets" / "digits" / "cnn.safetensors").is_file()


def test_fsa_and_fsa_report_run_from_outside_the_repository(installed, tmp_path):
    result = run(str(installed / "fsa"), "debug=tiny", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "complete"
    report = run(str(installed / "fsa-report"), str(tmp_path / "run"), cwd=tmp_path)
    assert report.returncode == 0 and "1 complete" in report.stdout, report.stderr[-2000:]
    helped = run(str(installed / "fsa"), "--help", cwd=tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("fsa: feature space analysis")
