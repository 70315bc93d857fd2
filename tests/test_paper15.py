"""The paper's 15 images: the downloader (a local folder stands in for GitHub) and `dataset=paper15`."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TinyImageExtractor, compose_config
from hydra.utils import instantiate
from PIL import Image

from fsa import download as command
from fsa.data import paper15
from fsa.data.targets import ImageTargets, Paper15Targets, TargetError

ROOT = Path(__file__).resolve().parents[1]
# Nothing listens on the discard port: the connection is refused at once, no network needed.
REFUSED = "http://127.0.0.1:9/"


@pytest.fixture(scope="module")
def extractor() -> TinyImageExtractor:
    return TinyImageExtractor(16, 8)


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the authors' data/ folder: the 15 names in their subfolders, each a small image of
    its own colour; the checksums fsa checks against are made those of the stand-ins."""
    folder = tmp_path / "remote"
    stand_ins = []
    for i, image in enumerate(paper15.IMAGES):
        path = folder / image.folder / image.name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 36), (i * 15, 255 - i * 15, 90)).save(path)
        stand_ins.append(dataclasses.replace(image, sha256=paper15.sha256(path)))
    monkeypatch.setattr(paper15, "IMAGES", tuple(stand_ins))
    return folder


def files(folder: Path) -> list[str]:
    """Every file below, hidden temporary ones included: nothing partial may be left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def expected_layout() -> list[str]:
    return sorted(f"{image.folder}/{image.name}" for image in paper15.IMAGES)


def test_the_papers_fifteen_in_the_authors_three_folders():
    assert len({image.name for image in paper15.IMAGES}) == 15
    assert [len(paper15.images(s)) for s in ("imagenet", "mscoco", "bansal")] == [6, 6, 3]
    assert paper15.SOURCE.startswith("https://raw.githubusercontent.com/KimiakiShirahama/")
    assert all(len(image.sha256) == 64 for image in paper15.IMAGES)


@pytest.mark.parametrize("as_url", [True, False], ids=["file-url", "plain-path"])
def test_download_keeps_the_authors_layout(tmp_path, remote, as_url):
    root = tmp_path / "data" / "paper15"
    paths = paper15.download(remote.as_uri() if as_url else str(remote), root)
    assert paths == [root / image.folder / image.name for image in paper15.IMAGES]
    assert files(root) == expected_layout()
    assert all(p.read_bytes() == (remote / p.relative_to(root)).read_bytes() for p in paths)


def test_a_flat_local_copy_is_a_source_too(tmp_path, remote):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in remote.rglob("*.*"):
        path.rename(flat / path.name)
    assert len(paper15.download(str(flat), tmp_path / "out")) == 15


def test_a_file_that_is_not_the_papers_is_refused(tmp_path, remote, monkeypatch):
    bad = paper15.IMAGES[3]
    Image.new("RGB", (40, 36), "white").save(remote / bad.folder / bad.name)  # a readable image, another one
    with pytest.raises(paper15.DownloadError, match=rf"1 of 15 images failed.*{bad.name}: not the paper's.*SHA-256"):
        paper15.download(str(remote), tmp_path / "out")
    assert files(tmp_path / "out") == sorted(set(expected_layout()) - {f"{bad.folder}/{bad.name}"})
    assert len(paper15.download(str(remote), tmp_path / "out", verify=False)) == 15  # --no-verify


def test_a_page_that_is_not_an_image_and_a_missing_file_are_reported(tmp_path, remote):
    html, gone = paper15.IMAGES[0], paper15.IMAGES[-1]
    (remote / html.folder / html.name).write_bytes(b"<html>404: Not Found</html>")
    (remote / gone.folder / gone.name).unlink()
    with pytest.raises(paper15.DownloadError, match="2 of 15") as info:
        paper15.download(str(remote), tmp_path / "out")
    assert f"{html.name}: not the paper's image" in str(info.value) and f"{gone.name}: not found" in str(info.value)


def test_present_files_are_kept_unless_force(tmp_path, remote, capsys):
    root = tmp_path / "out"
    kept = root / paper15.IMAGES[0].name  # a flat copy counts as present
    root.mkdir()
    kept.write_bytes(b"already here")
    assert command.main(["--source", str(remote), "--root", str(root)]) == 0
    assert kept.read_bytes() == b"already here"
    assert "14 downloaded, 1 already present" in capsys.readouterr().out


def test_no_network_fails_cleanly_and_leaves_nothing(tmp_path):
    root = tmp_path / "data" / "paper15"
    with pytest.raises(paper15.DownloadError, match="cannot reach"):
        paper15.download(REFUSED, root, timeout=5)
    assert files(root) == []
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fsa.download", "--source", REFUSED, "--root", str(root), "--timeout", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert "cannot reach http://127.0.0.1:9/" in line and "dataset.root=" in line


def test_the_download_goes_where_data_dir_says_wherever_it_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("FSA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    assert command.configured_root() == tmp_path / "data" / "paper15"
    cfg = compose_config(["dataset=paper15"])
    assert cfg.dataset.root == str(tmp_path / "data" / "paper15")


# --- dataset=paper15 --------------------------------------------------------------------------


def test_paper15_targets_in_the_authors_order(tmp_path, remote, extractor):
    source = Paper15Targets(root=str(remote))
    assert isinstance(source, ImageTargets)
    targets = source.load(extractor)
    assert [t.name for t in targets] == [Path(image.name).stem for image in paper15.IMAGES]
    plain = ImageTargets(paths=[str(remote / image.folder / image.name) for image in paper15.IMAGES])
    assert all(torch.equal(a.feature, b.feature) for a, b in zip(targets, plain.load(extractor), strict=True))
    mscoco = Paper15Targets(root=str(remote), subset="mscoco", scale=2.0).load(extractor)
    assert [t.name for t in mscoco] == [Path(image.name).stem for image in paper15.images("mscoco")]


def test_paper15_says_which_images_are_missing(tmp_path, remote):
    gone = paper15.IMAGES[7]
    (remote / gone.folder / gone.name).unlink()
    with pytest.raises(
        TargetError, match=rf"1 of the paper's images are not in .*\({gone.name}\).*fsa-download-paper15"
    ):
        Paper15Targets(root=str(remote))
    with pytest.raises(TargetError, match="does not exist.*fsa-download-paper15"):
        Paper15Targets(root=str(tmp_path / "nowhere"))
    with pytest.raises(TargetError, match="subset must be one of"):
        Paper15Targets(root=str(remote), subset="coco")


def test_the_config_finds_them_under_data_dir(tmp_path, remote, extractor, monkeypatch):
    monkeypatch.setenv("FSA_DATA_DIR", str(remote.parent))
    remote.rename(remote.parent / "paper15")
    cfg = compose_config(["dataset=paper15_mscoco"])
    assert len(instantiate(cfg.dataset).load(extractor)) == 6


def test_a_root_that_cannot_be_made_is_one_line_and_exit_2(tmp_path, remote, capsys):
    (tmp_path / "a_file").write_bytes(b"")
    assert command.main(["--source", str(remote), "--root", str(tmp_path / "a_file" / "paper15")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cannot write" in line and "Not a directory" in line and "--root" in line
