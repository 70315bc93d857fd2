"""Every file and download a run needs, checked before any model loads: all missing pieces in one list,
each with the key that sets it and where (command line, local config, default), and the local config
read like the command line."""

from pathlib import Path

import pytest
from helpers import compose_config, fsa

from fsa import config as fsa_config
from fsa import hub
from fsa.errors import MissingPiecesError
from fsa.weights import check_available, missing_pieces

RESNET50_FILE = "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1 file name


def local_config(folder: Path, text: str) -> Path:
    file = folder / "local" / "default.yaml"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("# @package _global_\n" + text)
    return file


def test_a_missing_file_names_the_key_that_sets_it_and_where(tmp_path):
    (tmp_path / "models").mkdir()
    local = local_config(tmp_path, f"weights:\n  clip_rn50: {tmp_path}/models\n")
    cfg = compose_config(["extractor=clip_rn50", "model=sd14", f"weights.sd14={tmp_path}/sd.ckpt"], tmp_path / "run")
    cfg.weights.clip_rn50 = f"{tmp_path}/models"  # as the local config set it
    problems = missing_pieces(
        {"model": cfg.model, "extractor": cfg.extractor}, [f"weights.sd14={tmp_path}/sd.ckpt"], [local]
    )
    assert len(problems) == 2
    sd, clip = problems
    assert sd.startswith("Stable Diffusion v1.4 (model.path <- weights.sd14, set on the command line)")
    assert "sd.ckpt' does not exist; set weights.sd14=" in sd
    assert clip.startswith(f"CLIP RN50 (OpenAI) (extractor.weights <- weights.clip_rn50, set in {local})")
    assert "is a folder; the key expects a file" in clip


def test_a_download_that_cannot_be_made_is_missing_unless_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("fsa.extractors.torchvision_models.reachable", lambda url: False)
    extractor = compose_config(["extractor=resnet50"], tmp_path / "run").extractor
    (problem,) = missing_pieces({"extractor": extractor})
    assert problem.startswith("ResNet-50 (torchvision) (extractor.weights <- weights.resnet50, fsa's default)")
    assert f"not downloaded (https://download.pytorch.org/models/{RESNET50_FILE})" in problem
    cached = tmp_path / "torch" / "hub" / "checkpoints" / RESNET50_FILE
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert missing_pieces({"extractor": extractor}) == []


def test_a_hub_model_offline_and_not_cached_is_missing(tmp_path):
    model = compose_config(["model=sd14"], tmp_path / "run").model  # CompVis/stable-diffusion-v1-4, HF_HUB_OFFLINE=1
    (problem,) = missing_pieces({"model": model})
    assert "not downloaded (CompVis/stable-diffusion-v1-4)" in problem
    assert hub.hub_downloads() is False


def test_the_error_lists_every_piece_and_the_targets_problem(tmp_path):
    model = compose_config(["model=sd14"], tmp_path / "run").model
    with pytest.raises(MissingPiecesError, match=r"2 piece\(s\)") as raised:
        check_available({"model": model}, problems=["the targets: folder '/x' does not exist"])
    assert str(raised.value).count("\n  - ") == 2 and "A local config sets paths" in str(raised.value)


def test_the_embedded_setup_needs_nothing(tmp_path):
    cfg = compose_config([], tmp_path / "run")
    assert missing_pieces({"task": cfg.task, "model": cfg.model, "extractor": cfg.extractor}) == []


def test_the_package_local_config_wins_over_the_users(tmp_path, monkeypatch):
    package, user = tmp_path / "package", tmp_path / "user"
    monkeypatch.setattr(fsa_config, "CONF_DIR", package)
    monkeypatch.setenv("FSA_CONFIG_DIR", str(user))
    assert fsa_config.local_configs() == []
    mine = local_config(user, "seed: 1\n")
    assert fsa_config.local_configs() == [mine]
    ours = local_config(package, "seed: 2\n")
    assert fsa_config.local_configs() == [ours, mine]


@pytest.mark.slow  # two processes
def test_a_preset_with_missing_pieces_is_refused_in_one_list_and_writes_nothing(tmp_path):
    (tmp_path / "models").mkdir()
    local_config(tmp_path / "config", f"weights:\n  sd14: {tmp_path}/sd-v1-4.ckpt\n  clip_rn50: {tmp_path}/models\n")
    env = {"FSA_CONFIG_DIR": str(tmp_path / "config"), "FSA_DATA_DIR": str(tmp_path / "data")}
    result = fsa(
        "experiment=fig3_clip", "logger=null", f"hydra.run.dir={tmp_path / 'run'}", "data_dir=/nowhere", env=env
    )
    assert result.returncode == 2, result.stderr
    assert "3 piece(s) this run needs are not on this machine" in result.stderr
    for said in ("sd-v1-4.ckpt' does not exist", "is a folder", "fsa-download-paper15", "data_dir"):
        assert said in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    # A misspelt name in the local config is refused, naming the file, as on the command line.
    local_config(tmp_path / "config", "weights:\n  clip: /x\n")
    result = fsa("debug=tiny", f"hydra.run.dir={tmp_path / 'run2'}", env=env)
    assert result.returncode == 2 and "Key 'clip' not in 'WeightsConfig'" in result.stderr
    assert str(tmp_path / "config" / "local" / "default.yaml") in result.stderr
