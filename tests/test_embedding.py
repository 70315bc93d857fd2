"""Embedding images into the DDIM latent (task=embed): the generator, inversion, gradient descent,
the embedding networks, the cloud analyses, and the whole job on the embedded digits model."""

import json

import pandas as pd
import pytest
import torch
from helpers import compose_config, load_script, shared_run
from PIL import Image
from wandb_records import history_rows, logged_table, run_id, runs_by_job_type
from wandb_records import summary as wandb_summary

from fsa import ASSETS_DIR
from fsa.config import validate
from fsa.data.digits import digits_images
from fsa.diffusion.backbones import load_pixel_diffusion
from fsa.diffusion.samplers import strided_timesteps
from fsa.embedding import analysis, ddim, networks
from fsa.errors import ConfigError
from fsa.tracking.checkpoint import load_checkpoint, save_checkpoint

STEPS = 10


@pytest.fixture(scope="module")
def digits():
    """The embedded digits DDPM, a 10-step DDIM generator and four held-out test digits in [-1, 1]."""
    backbone = load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), "unet")
    images, _ = digits_images("test")
    return backbone, strided_timesteps(1000, STEPS), images[:4] * 2 - 1


def test_checkpointed_generator_gives_the_same_images_and_gradients_with_memory_flat_in_steps(digits):
    backbone, _, images = digits
    seed = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    results = {}
    for checkpoint in (False, True):
        x = seed.clone().requires_grad_(True)
        made = ddim.generate(backbone, x, strided_timesteps(1000, 4), checkpoint)
        (made - images[:2]).pow(2).sum().backward()
        results[checkpoint] = (made.detach(), x.grad)
    assert torch.allclose(results[True][0], results[False][0], atol=1e-6)
    assert torch.allclose(results[True][1], results[False][1], rtol=1e-4, atol=1e-6)

    memory = load_script("embed_memory").saved_bytes  # the script that measures it for docs/embedding.md
    plain = [memory(backbone, n, 1, checkpoint=False) for n in (2, 4, 8)]
    flat = [memory(backbone, n, 1, checkpoint=True) for n in (2, 4, 8)]
    assert plain[2] > 3.5 * plain[0]  # without checkpointing every step's activations are kept
    assert flat[2] < plain[2] / 20 and flat[2] <= 8 * 1 * 16 * 16 * 4 * 2  # with it, only each step's input


def test_each_method_reconstructs_far_better_than_a_random_seed(digits):
    backbone, timesteps, images = digits
    random = ddim.reconstruct(
        backbone, torch.randn(images.shape, generator=torch.Generator().manual_seed(1)), images, timesteps
    )
    inverted = ddim.reconstruct(backbone, ddim.invert(backbone, images, timesteps), images, timesteps)
    losses = []
    descended = ddim.descend(
        backbone,
        images,
        torch.randn(images.shape, generator=torch.Generator().manual_seed(2)),
        timesteps,
        25,
        0.05,
        callback=lambda step: losses.append(step.loss),
    )
    assert inverted.mse.max() < random.mse.min() / 5
    assert descended.mse.mean() < random.mse.mean() / 5
    assert len(losses) == 25 and (losses[-1] < losses[0]).all()
    # The reported MSE is what the seeds give: generate again and compare.
    again = ddim.generate(backbone, descended.seed, timesteps)
    assert torch.allclose(again, descended.reconstruction)


def test_descent_is_batch_independent(digits):
    backbone, timesteps, images = digits
    starts = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    together = ddim.descend(backbone, images[:2], starts, timesteps, 3, 0.05)
    alone = ddim.descend(backbone, images[1:2], starts[1:2], timesteps, 3, 0.05)
    assert torch.allclose(together.seed[1:2], alone.seed, atol=1e-5)


def test_a_descent_resumed_from_any_iteration_ends_exactly_as_one_without_a_stop(digits, tmp_path):
    backbone, timesteps, images = digits
    starts = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    states: list[ddim.DescentState] = []
    whole = ddim.descend(
        backbone, images[:2], starts, timesteps, 5, 0.05, on_iteration=lambda snapshot: states.append(snapshot())
    )
    assert [s.iteration for s in states] == [1, 2, 3, 4, 5]
    for state in (states[0], states[3]):
        save_checkpoint({"descent": vars(state)}, tmp_path / "checkpoint.pt")  # as a resumed run reads it
        again = ddim.DescentState(**load_checkpoint(tmp_path / "checkpoint.pt")["descent"])
        resumed = ddim.descend(backbone, images[:2], torch.zeros_like(starts), timesteps, 5, 0.05, resume=again)
        assert torch.equal(resumed.seed, whole.seed)


def test_principal_components_recover_a_known_cloud():
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([5.0, 2.0, 0.5, 0.1])
    cloud = torch.randn(4000, 4, generator=generator) * scales + torch.tensor([1.0, 2.0, 3.0, 4.0])
    found = analysis.principal_components(cloud)
    assert torch.allclose(found.variances, scales**2, rtol=0.1)
    assert torch.allclose(found.mean, torch.tensor([1.0, 2.0, 3.0, 4.0]), atol=0.2)
    assert torch.allclose(found.components.abs(), torch.eye(4), atol=0.05)
    small = analysis.principal_components(cloud[:3])
    assert len(small.variances) == 2  # N seeds span at most N - 1 directions
    moved = analysis.along_components(found, [0, 3], [-1.0, 1.0])
    assert moved.shape == (4, 4) and torch.allclose((moved[1] - moved[0]).norm(), torch.tensor(2.0))


def test_convex_combinations_stay_inside_and_interpolation_ends_at_both_ends():
    corners = torch.eye(3)
    mixed = analysis.convex_combinations(corners, 50, torch.Generator().manual_seed(0))
    assert torch.allclose(mixed.sum(1), torch.ones(50)) and (mixed >= 0).all()
    path = analysis.interpolate(torch.zeros(2, 2), torch.ones(2, 2), 5)
    assert path.shape == (5, 2, 2) and path[0].eq(0).all() and path[-1].eq(1).all() and path[2].eq(0.5).all()


@pytest.mark.parametrize("kind", networks.KINDS)
def test_embedding_networks_keep_the_shape_and_load_back(kind, tmp_path):
    network = networks.build(kind, 1)
    image = torch.randn(2, 1, 16, 16)
    networks.save(network, tmp_path, {"kind": kind, "channels": 1, "num_steps": 20})
    loaded, info = networks.load(tmp_path, kind)
    assert info["num_steps"] == 20 and torch.equal(loaded(image), network.eval()(image))
    assert loaded(image).shape == image.shape
    with pytest.raises(ConfigError, match="kind must be one of"):
        networks.build("mlp", 1)
    networks.save(network, tmp_path, {"kind": kind, "name": f"{kind}_generator", "channels": 1, "num_steps": 20})
    through, _ = networks.load(tmp_path, f"{kind}_generator")  # the same architecture, under its own name
    assert torch.equal(through(image), network(image)) and (tmp_path / f"{kind}_generator.json").is_file()


def test_the_shipped_networks_reconstruct_held_out_digits_better_than_random_seeds(digits):
    backbone, _, images = digits
    timesteps = strided_timesteps(1000, 20)
    random = ddim.reconstruct(
        backbone, torch.randn(images.shape, generator=torch.Generator().manual_seed(4)), images, timesteps
    )
    for name in networks.NAMES:  # trained on the seed and through the generator
        network, info = networks.load(ASSETS_DIR / "digits" / "embedders", name)
        assert info["num_steps"] == 20 and info.get("name", name) == name
        with torch.no_grad():
            made = ddim.reconstruct(backbone, network(images), images, timesteps)
        assert made.mse.mean() < random.mse.mean() / 3, name


@pytest.mark.parametrize(
    "override,message",
    [
        ("task.num_steps=0", "num_steps"),
        ("task.cloud=1", "cloud"),
        ("task.methods=[magic]", "methods"),
        ("task.networks=[mlp]", "networks"),
        ("task.lr=-1", "lr"),
        ("+task.iteration=3", "iteration"),
    ],
)
def test_bad_embed_settings_are_refused_before_any_model_loads(override, message, tmp_path):
    cfg = compose_config(["task=embed", override], tmp_path)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


SMALL = [  # CI size: about a minute on 2 CPU cores
    "task=embed",
    "task.images=2",
    "task.generated=2",
    "task.iterations=10",
    "task.refine_iterations=3",
    "task.cloud=4",
    "task.combinations=4",
    "task.interpolation_steps=3",
    "task.independence=8",
    "logger.mode=offline",
    "progress=false",
    "device=cpu",
]


embed_run = shared_run("embed", SMALL)


def test_embed_run_writes_its_tables_figures_and_summary(embed_run):
    out, summary = embed_run
    assert json.loads((out / "summary.json").read_text())["task"] == summary["task"] == "embed"
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    table = pd.read_csv(out / "embedding" / "reconstruction.csv")
    methods = [
        "random seed",
        "inversion",
        "gradient_descent",
        "inversion+gd",
        "network conv1",
        "network conv3",
        "network unet",
        "network unet + gd",
    ]
    assert list(dict.fromkeys(table["method"])) == methods
    assert sorted(set(table["set"])) == ["dataset", "generated"]
    assert len(table) == (2 + 2) * len(methods)
    per_method = pd.read_csv(out / "embedding" / "methods.csv").set_index(["set", "method"])
    for (set_name, method), row in per_method.iterrows():  # the summary's means come from the table
        rows = table[(table["set"] == set_name) & (table["method"] == method)]
        assert row["mse"] == pytest.approx(rows["mse"].mean())
        random = per_method.loc[(set_name, "random seed"), "mse"]
        if method == "gradient_descent":  # from a random start: 10 iterations only begin (see the unit test)
            assert row["mse"] < random, (set_name, method)
        elif method != "random seed":  # every other method reconstructs clearly better than a random seed
            assert row["mse"] < random / 3, (set_name, method)
    for name in ("cloud_spectrum.png", "cloud_components.png", "interpolation.png"):
        with Image.open(out / "embedding" / name) as image:
            assert image.width > 100
    with Image.open(out / "overview.png") as image:
        assert image.width > 96 * len(methods)  # the image, then each method's reconstruction


def test_embed_cloud_figures_come_from_the_seeds(embed_run):
    _, summary = embed_run
    cloud = summary["cloud"]
    assert cloud["size"] == 4 and len(cloud["variances"]) == 3
    assert cloud["variances"] == sorted(cloud["variances"], reverse=True)
    assert cloud["spread"] > 0 and cloud["random_pair_distance"] > cloud["spread"]
    assert cloud["network"] == "unet" and cloud["mean_to_network"] > 0
    assert 0 <= cloud["combination_mse"] <= cloud["combination_mse_max"]
    assert cloud["combination_mse_interval"][0] <= cloud["combination_mse"] <= cloud["combination_mse_interval"][1]
    seeds_to_mean = cloud["mean_to_network"] / cloud["centre_ratio"]  # the cloud's spread, as the ratio reads it
    assert seeds_to_mean == pytest.approx(cloud["spread"], rel=1e-4)


def test_embed_checks_each_of_the_papers_claims_with_an_interval(embed_run):
    out, summary = embed_run
    findings = pd.read_csv(out / "embedding" / "findings.csv", index_col=0)
    assert [claim.split(":")[0] for claim in findings.index] == [
        "Table 1", "Sec. 5.2", "Table 2", "Sec. 3.3", "Fig. 12", "Sec. 5.2", "Sec. 5.1.1"
    ]  # fmt: skip
    table = pd.read_csv(out / "embedding" / "reconstruction.csv")
    held_out = table[table["set"] == "dataset"].groupby("method")["mse"].mean()
    best_conv = min(held_out["network conv1"], held_out["network conv3"])
    assert findings.iloc[0]["value"] == pytest.approx(held_out["network unet"] - best_conv)
    assert findings.iloc[1]["value"] == pytest.approx(held_out["network unet + gd"] - held_out["network unet"])
    ratio = summary["independence"]["same_seed_mse"] / summary["independence"]["other_seed_mse"]
    assert findings.iloc[3]["value"] == pytest.approx(ratio)
    bounded = findings.dropna(subset=["low"])
    assert ((bounded.low <= bounded.value + 1e-12) & (bounded.value <= bounded.high + 1e-12)).all()
    assert findings.iloc[-1]["holds"] == "untestable: 4 seeds span 3 directions"  # a PCA of 4 seeds in 256-d
    assert set(findings.holds[:-1]) <= {"yes", "no"} and summary["findings"][3]["holds"] == findings.iloc[3].holds
    assert findings.iloc[3]["holds"] == "yes"  # the same seed gives the same digit through both models


def test_embed_run_logs_one_wandb_run_with_the_descent_tables_figures_and_summary(embed_run):
    out, summary = embed_run
    ((wandb_file, records),) = runs_by_job_type(out)["embed"]
    rows = history_rows(records)
    descent = [r for r in rows if "cloud/mean_mse" in r]
    assert [int(r["iteration"]) for r in descent] == list(range(10))  # task.iterations
    table = logged_table(wandb_file, records, "methods")
    column = table["columns"].index("mse")
    assert [row[column] for row in table["data"]] == pytest.approx([m["mse"] for m in summary["methods"]])
    claims = logged_table(wandb_file, records, "findings")
    assert [row[claims["columns"].index("claim")] for row in claims["data"]] == [
        f["claim"] for f in summary["findings"]
    ]
    assert any(key.startswith("figures/cloud_components") for row in rows for key in row)
    logged = wandb_summary(records)
    assert float(logged["mse/dataset/inversion"]) == pytest.approx(
        next(m["mse"] for m in summary["methods"] if (m["set"], m["method"]) == ("dataset", "inversion"))
    )


def test_embed_refuses_a_latent_model_and_images_it_cannot_use(tmp_path):
    from fsa.job import run

    cfg = compose_config([*(o for o in SMALL if not o.startswith("logger")), "debug=tiny", "~logger"], tmp_path)
    with pytest.raises(ConfigError, match="pixel-space"):
        run(cfg, tmp_path)


@pytest.mark.slow  # the whole job again, stopped twice
def test_embed_stopped_by_signals_mid_descent_resumes_to_the_same_results(embed_run, tmp_path, monkeypatch):
    """SIGTERM in a method's descent, then in the cloud's: each time the run checkpoints at the end
    of the iteration under way and stops as interrupted; rerun, it ends as the run without a stop."""
    import signal

    from fsa.job import Interrupted, run
    from fsa.tasks.embed.units import Units

    stops = {"dataset/gradient_descent": 4, "cloud": 6}  # unit -> the iteration a signal comes in
    descent = Units.descent

    def descent_with_a_signal(self):
        hooks = descent(self)

        def on_iteration(snapshot):
            if stops.get(self.key) == snapshot().iteration:
                signal.raise_signal(signal.SIGTERM)
            hooks["on_iteration"](snapshot)

        return {**hooks, "on_iteration": on_iteration}

    monkeypatch.setattr(Units, "descent", descent_with_a_signal)
    cfg = compose_config([*SMALL, "checkpoint_every=0"], tmp_path)  # checkpoints: signals and finished units only
    for unit, iteration in list(stops.items()):
        with pytest.raises(Interrupted, match="SIGTERM"):
            run(cfg, tmp_path)
        assert json.loads((tmp_path / "status.json").read_text())["state"] == "interrupted"
        saved = load_checkpoint(tmp_path / "checkpoint.pt")["state"]["descent"]
        assert (saved["unit"], saved["state"]["iteration"]) == (unit, iteration)
        del stops[unit]
    summary = run(cfg, tmp_path)

    out, whole = embed_run
    timing = ["seconds", "seeds_per_second"]
    for table in ("reconstruction.csv", "methods.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "embedding" / table).drop(columns=timing, errors="ignore"),
            pd.read_csv(out / "embedding" / table).drop(columns=timing, errors="ignore"),
        )
    for key in ("cloud", "interpolation", "independence"):
        assert summary[key] == whole[key]
    for png in [*sorted((out / "embedding").glob("*.png")), out / "overview.png"]:
        with Image.open(png) as a, Image.open(tmp_path / png.relative_to(out)) as b:
            assert a.tobytes() == b.tobytes(), png.name
    assert not (tmp_path / "checkpoint.pt").exists()
    # One W&B run, continued twice: every iteration of the cloud's descent logged once.
    runs = runs_by_job_type(tmp_path)["embed"]
    assert len(runs) == 3 and len({run_id(records) for _, records in runs}) == 1
    logged = [int(r["iteration"]) for _, records in runs for r in history_rows(records) if "cloud/mean_mse" in r]
    assert logged == list(range(10))


def test_a_long_gradient_descent_says_where_it_is(caplog, monkeypatch):
    """A line every 30 s (here: every call, the clock moved on) and at the last step; none when off."""
    import logging

    from fsa.tracking import progress

    clock = iter(range(0, 10_000, 40))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: float(next(clock)))
    loop = progress.LoopProgress("gradient descent on 4 seed(s)", total=3)
    with caplog.at_level(logging.INFO, logger="fsa"):
        for done in (1, 2, 3):
            loop(done, f"mean MSE {0.1 / done:.4g}")
        progress.LoopProgress("quiet", total=2, enabled=False)(2, "x")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[-1].startswith("gradient descent on 4 seed(s): iteration 3/3, mean MSE 0.03333")
    assert "ETA 0s" in lines[-1] and not any(line.startswith("quiet") for line in lines)
