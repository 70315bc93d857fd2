"""The paper's experiment presets: they compose, sweep what the paper swept, and run at smoke scale."""

import pytest
import torch
from helpers import CONF_DIR, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fsa.config import validate
from fsa.extractors.digits_cnn import INVARIANCES
from fsa.job import run

OWN = {"known_answer", "optuna_schedule"}  # fsa's own presets, on the embedded digits; the others are the paper's
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml") if p.stem not in OWN)
FILLS = {
    "fig8_caption": ["dataset.captions=[a dog on a beach]"],
    "paper": ["dataset.paths=[x.png]", "extractor=clip_rn50"],
}
# At smoke scale the data is the embedded digits; experiment=paper still wants its extractor named
# (a group chosen on the command line wins over smoke=digits, as any command-line choice does).
SMOKE_FILLS = {"paper": ["extractor=digits_cnn"]}
# What smoke=digits may change in a preset: the models and data, the steps, the sizes. Nothing else.
SMOKE_MAY_CHANGE = (
    "model",
    "extractor",
    "dataset",
    "oracle",
    "attributes",
    "judges",
    "sampler",
    "guidance.early_steps",
    "guidance.early_k",
    "guidance.k",
    "max_targets",
    "max_samples",
    "targets_per_batch",
)
SWEEPS = {
    "appb_wg": ("guidance.w_g", "0.5,1,2,4,8"),
    "appc_early_steps": ("guidance.early_steps", "5,0"),
    "appd_clip": ("guidance.clip_c", "2,3,0"),
    "fig8_caption": ("dataset.norm", "null,2.1776"),
    "fig8_scaled_images": ("dataset.scale", "1.2,0.8"),
}


def hydra_node(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True).hydra


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_has_the_papers_settings(name):
    cfg = compose_config([f"experiment={name}", *FILLS.get(name, [])])
    validate(cfg)
    assert cfg.model.path == "CompVis/stable-diffusion-v1-4" and cfg.sampler.num_steps is None
    assert (cfg.guidance.w_g, cfg.guidance.early_k, cfg.guidance.k) == (4.0, 1000, 8)
    assert cfg.dtype == "float32" and list(cfg.baselines) == []


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_preset_runs_at_smoke_scale_on_the_embedded_setup(name):
    cfg = compose_config([f"experiment={name}", *SMOKE_FILLS.get(name, []), "smoke=digits"])
    validate(cfg)
    assert cfg.extractor.name == "digits_cnn" and cfg.sampler.num_steps == 20


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """A nested config as {dotted key: value}."""
    flat: dict[str, object] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            flat |= leaves(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_changes_only_models_data_steps_and_sizes(name):
    overrides = [f"experiment={name}", *FILLS.get(name, [])]
    smoke_overrides = [f"experiment={name}", *SMOKE_FILLS.get(name, []), "smoke=digits"]
    full = leaves(OmegaConf.to_container(compose_config(overrides)))
    smoke = leaves(OmegaConf.to_container(compose_config(smoke_overrides)))
    changed = {key for key in full.keys() | smoke.keys() if full.get(key) != smoke.get(key)}
    allowed = [key for key in changed if any(key == p or key.startswith(p + ".") for p in SMOKE_MAY_CHANGE)]
    assert sorted(changed - set(allowed)) == []
    sweeps = [dict(hydra_node(o).sweeper.params or {}) for o in (overrides, smoke_overrides)]
    assert sweeps[0] == sweeps[1]
    # Sizes are capped, never grown: a preset with one target and one sample keeps them (Fig. 2).
    samples = (full["batch_size"], min(smoke["batch_size"], smoke["max_samples"]))
    assert samples[1] <= samples[0] and samples[1] == min(full["batch_size"], 2)
    if full.get("dataset.limit") is not None:
        assert smoke["dataset.limit"] == full["dataset.limit"]


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_presets_sweep_what_the_paper_swept(name):
    key, values = SWEEPS[name]
    assert dict(hydra_node([f"experiment={name}", *FILLS.get(name, [])]).sweeper.params) == {key: values}


def test_the_known_answer_preset_sweeps_every_digits_extractor_with_its_unguided_twin():
    extractors = hydra_node(["experiment=known_answer"]).sweeper.params.extractor.split(",")
    assert sorted(extractors) == sorted(["digits_cnn", "pixels", *(f"digits_cnn_{kind}" for kind in INVARIANCES)])
    for extractor in extractors:
        cfg = compose_config(["experiment=known_answer", f"extractor={extractor}"])
        validate(cfg)
        assert list(cfg.baselines) == ["unguided"] and cfg.extractor.name == extractor
        assert cfg.model.path.endswith("assets/digits/ddpm") and cfg.attributes is not None


def test_extractor_presets():
    assert compose_config(["experiment=fig3_clip"]).extractor.model_name == "RN50"
    assert compose_config(["experiment=fig5_resnet50"]).extractor.replace_with_identity == "fc"
    vit = compose_config(["experiment=fig7_vith14"])
    assert (vit.extractor.input_size, vit.guidance.clip_c) == (518, 2.0)


def test_fig8_target_transforms_give_the_intended_norms_and_directions():
    def features(overrides):
        cfg = compose_config(["experiment=fig8_scaled_images", "smoke=digits", *overrides])
        return torch.stack([t.feature for t in instantiate(cfg.dataset).load(instantiate(cfg.extractor))])

    plain = features(["dataset.scale=1.0"])
    for scale in (1.2, 0.8):
        scaled = features([f"dataset.scale={scale}"])
        torch.testing.assert_close(scaled.norm(dim=1), scale * plain.norm(dim=1))
        torch.testing.assert_close(torch.cosine_similarity(scaled, plain), torch.ones(len(plain)))
    normalised = features(["dataset.norm=2.1776"])
    torch.testing.assert_close(normalised.norm(dim=1), torch.full((len(plain),), 2.1776))
    torch.testing.assert_close(torch.cosine_similarity(normalised, plain), torch.ones(len(plain)))


def test_fig2_preset_records_the_first_seven_steps(tmp_path):
    cfg = compose_config(
        ["experiment=fig2_gradients", "smoke=digits", "logger.mode=disabled", "progress=false"], tmp_path
    )
    run(cfg, tmp_path)
    record = torch.load(tmp_path / "gradients.pt")
    assert record["values"].shape == (7, 1, 1, 16, 16)  # 7 steps x the preset's 1 target x 1 sample
    assert len(record["t"]) == 7 and record["t"] == sorted(record["t"], reverse=True)
    assert (record["clip_c"], record["clip_mode"]) == (3.0, "mean")
    eps_norm = record["values"].flatten(2).norm(dim=2)  # g_hat has the norm of eps (about sqrt(256))
    assert torch.isfinite(eps_norm).all() and (eps_norm > 0).all()
