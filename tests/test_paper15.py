"""The paper's 15 images: the downloader (a local folder stands in for GitHub) and `dataset=paper15`."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TinyImageExtractor, load_script
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from fsa.data import ImageTargets, Paper15Targets, TargetError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "download_paper15.py"
CONF = ROOT / "conf" / "dataset" / "paper15.yaml"
SIZE = 16
DIM = 8
# Nothing listens on the discard port: the connection is refused at once, no network needed.
REFUSED = "http://127.0.0.1:9/"


dl = load_script("download_paper15")


def TinyExtractor() -> TinyImageExtractor:
    return TinyImageExtractor(SIZE, DIM)


@pytest.fixture(scope="module")
def extractor() -> TinyExtractor:
    return TinyExtractor()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A folder with the 15 file names, each a small real image of its own colour (PNG or JPEG)."""
    folder = tmp_path / "remote"
    folder.mkdir()
    for i, name in enumerate(dl.PAPER15_FILES):
        Image.new("RGB", (12, 10), (i * 15, 255 - i * 15, 90)).save(folder / name)
    return folder


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def files_in(folder: Path) -> list[str]:
    """Every entry, hidden temporary files included: nothing partial may be left behind."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- the downloader ---------------------------------------------------------------------------


def test_file_names_are_the_papers_fifteen():
    assert len(dl.PAPER15_FILES) == len(set(dl.PAPER15_FILES)) == 15
    assert dl.DEFAULT_SOURCE.startswith("https://raw.githubusercontent.com/KimiakiShirahama/")
    assert dl.DEFAULT_SOURCE.endswith("/data/")
    assert dl.DEFAULT_OUT == ROOT / "data" / "paper15"


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "plain-path"])
def test_download_from_local_source(tmp_path, remote, as_url):
    out = tmp_path / "out" / "paper15"
    source = remote.as_uri() if as_url else str(remote)
    paths = dl.download(source, out)

    assert paths == [out / name for name in dl.PAPER15_FILES]
    assert files_in(out) == sorted(dl.PAPER15_FILES)
    for name in dl.PAPER15_FILES:
        assert (out / name).read_bytes() == (remote / name).read_bytes()


def test_main_prints_one_line_summary(tmp_path, remote, capsys):
    out = tmp_path / "out"
    assert dl.main(["--source", str(remote), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "15 images" in lines[0] and "15 downloaded" in lines[0]


def test_existing_files_are_skipped_unless_force(tmp_path, remote, capsys):
    out = tmp_path / "out"
    out.mkdir()
    kept = out / dl.PAPER15_FILES[0]
    kept.write_bytes(b"already here")  # not even an image: a skipped file is not re-checked

    assert dl.main(["--source", str(remote), "--out", str(out)]) == 0
    assert kept.read_bytes() == b"already here"
    assert "14 downloaded, 1 already present" in capsys.readouterr().out

    (remote / dl.PAPER15_FILES[1]).write_bytes(b"would fail if fetched again")
    dl.download(str(remote), out)  # everything present: nothing is fetched
    assert kept.read_bytes() == b"already here"

    (remote / dl.PAPER15_FILES[1]).unlink()
    Image.new("RGB", (8, 8), "red").save(remote / dl.PAPER15_FILES[1])
    assert dl.main(["--source", remote.as_uri(), "--out", str(out), "--force"]) == 0
    assert kept.read_bytes() == (remote / kept.name).read_bytes()
    assert "15 downloaded, 0 already present" in capsys.readouterr().out


def test_corrupt_source_file_is_reported_and_not_kept(tmp_path, remote):
    bad = dl.PAPER15_FILES[3]
    (remote / bad).write_bytes(b"<html>404: Not Found</html>")
    out = tmp_path / "out"
    with pytest.raises(dl.DownloadError, match=rf"1 of 15 images failed \(14 saved.*\n.*{bad}: not a readable image"):
        dl.download(remote.as_uri(), out)
    assert files_in(out) == sorted(set(dl.PAPER15_FILES) - {bad})

    result = run_script("--source", str(remote), "--out", str(out))  # the 14 are skipped, the bad one fails again
    assert result.returncode != 0
    assert bad in result.stderr and "Traceback" not in result.stderr
    assert files_in(out) == sorted(set(dl.PAPER15_FILES) - {bad})


def test_missing_source_file_is_reported(tmp_path, remote):
    gone = dl.PAPER15_FILES[-1]
    (remote / gone).unlink()
    with pytest.raises(dl.DownloadError, match=rf"{gone}: not found"):
        dl.download(str(remote), tmp_path / "out")
    assert gone not in files_in(tmp_path / "out")


def test_missing_source_folder(tmp_path):
    with pytest.raises(dl.DownloadError, match="does not exist"):
        dl.download(str(tmp_path / "nowhere"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_network_fails_cleanly(tmp_path):
    out = tmp_path / "data" / "paper15"
    with pytest.raises(dl.DownloadError, match="cannot reach"):
        dl.download(REFUSED, out, timeout=5)
    assert not out.exists()  # created by the call, empty, so removed again

    result = run_script("--source", REFUSED, "--out", str(out), "--timeout", "5")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "cannot reach http://127.0.0.1:9/" in message
    assert "by hand" in message and "dataset.root=" in message
    assert result.stdout == ""
    assert not out.exists()


def test_no_network_keeps_an_existing_folder_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("unrelated")
    result = run_script("--source", REFUSED, "--out", str(out), "--timeout", "5")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert files_in(out) == ["mine.txt"]


# --- dataset=paper15 --------------------------------------------------------------------------


def test_paper15_targets_one_per_image_sorted(tmp_path, remote, extractor):
    names = ["b_second.png", "a_first.jpg", "c_third.png"]
    for i, name in enumerate(names):
        Image.new("RGB", (20, 18), (40 * i, 90, 200 - 40 * i)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")

    source = Paper15Targets(root=str(tmp_path))
    assert isinstance(source, ImageTargets)
    targets = source.load(extractor)
    assert [t.name for t in targets] == ["a_first", "b_second", "c_third"]
    assert [t.source for t in targets] == [str(tmp_path / n) for n in sorted(names)]
    assert all(t.feature.shape == (DIM,) and t.image.shape == (3, SIZE, SIZE) for t in targets)

    # The same features as the generic image source on the same folder; limit/scale pass through.
    plain = ImageTargets(paths=[str(tmp_path)]).load(extractor)
    assert all(torch.equal(a.feature, b.feature) for a, b in zip(targets, plain, strict=True))
    scaled = Paper15Targets(root=str(tmp_path), limit=2, scale=2.0).load(extractor)
    assert len(scaled) == 2 and torch.allclose(scaled[0].feature, 2 * plain[0].feature)


def test_paper15_relative_root_uses_working_directory(tmp_path, remote, monkeypatch, extractor):
    monkeypatch.chdir(remote.parent)
    source = Paper15Targets(root="remote")
    assert source.root == remote
    assert [p.name for p in source.files] == sorted(dl.PAPER15_FILES)
    assert len(source.load(extractor)) == 15


@pytest.mark.parametrize("empty", [False, True], ids=["missing", "empty"])
def test_paper15_missing_root_says_how_to_get_images(tmp_path, empty):
    root = tmp_path / "paper15"
    if empty:
        root.mkdir()
        (root / "README.txt").write_text("no images here")
    with pytest.raises(TargetError) as info:
        Paper15Targets(root=str(root))
    message = str(info.value)
    assert str(root) in message
    assert "python scripts/download_paper15.py" in message and "dataset.root=" in message


def test_paper15_config_lists_every_argument(tmp_path, remote, extractor):
    cfg = OmegaConf.load(CONF)
    assert set(cfg.keys()) - {"_target_"} == set(inspect.signature(Paper15Targets).parameters)
    assert cfg.root == inspect.signature(Paper15Targets).parameters["root"].default
    OmegaConf.set_struct(cfg, True)
    source = instantiate(OmegaConf.merge(cfg, {"root": str(remote), "limit": 3}))
    assert isinstance(source, Paper15Targets)
    assert [t.name for t in source.load(extractor)] == [Path(n).stem for n in sorted(dl.PAPER15_FILES)[:3]]


def test_default_root_names_the_download_script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/paper15 here
    with pytest.raises(TargetError, match=r"data/paper15' does not exist.*download_paper15\.py"):
        Paper15Targets()
    with pytest.raises(InstantiationException, match="download_paper15.py"):  # Hydra wraps the TargetError
        instantiate(OmegaConf.load(CONF))


def test_script_help_runs_without_fsa_import():
    """The downloader needs only the standard library and PIL: no torch start-up for a download."""
    env = {**os.environ, "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(SCRIPT), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and "--source" in result.stdout
    assert " torch" not in result.stderr and " fsa" not in result.stderr
