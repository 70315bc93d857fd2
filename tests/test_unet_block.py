"""The denoiser's own representation (extractor=unet_block) and self-guided decoding
(guidance=self_guided, Kadkhodaie et al.), on the embedded digits DDPM and tiny random models."""

import json

import pytest
import torch
from helpers import compose_config, shared_run

from fsa import ASSETS_DIR
from fsa.config import validate
from fsa.data.digits import digits_images
from fsa.diffusion.backbones import build_tiny_latent_diffusion, load_pixel_diffusion
from fsa.diffusion.samplers import DDIMSampler
from fsa.errors import ConfigError, ExtractorError
from fsa.extractors.unet_block import UNetBlockExtractor, block_means, block_names, check_blocks
from fsa.guidance.self_guided import SelfGuidance, self_guided_decode


@pytest.fixture(scope="module")
def digits():
    backbone = load_pixel_diffusion(str(ASSETS_DIR / "digits" / "ddpm"), "unet")
    images, labels = digits_images("test")
    return backbone, images[:6] * 2 - 1, labels[:6]


def test_blocks_are_named_in_the_order_the_input_meets_them_and_a_wrong_name_lists_them(digits):
    backbone, _, _ = digits
    names = block_names(backbone.unet)
    assert names == [*(f"down_blocks.{i}" for i in range(3)), "mid_block", *(f"up_blocks.{i}" for i in range(3))]
    for wrong in ("middle", "up_blocks.3"):  # a misspelt block, and one this model does not have
        with pytest.raises(ExtractorError, match="its blocks: down_blocks.0, .*mid_block, .*up_blocks.2$"):
            check_blocks(backbone, [wrong])


def test_phi_is_the_noise_averaged_spatial_mean_of_the_block_output(digits):
    backbone, images, _ = digits
    extractor = UNetBlockExtractor(backbone, "down_blocks.1", timestep=250, noise_samples=3, noise_seed=7)
    phi = extractor(images[:2].expand(-1, 3, -1, -1))  # normalised input = the image in [-1, 1]
    # By hand: noise each image with the extractor's 3 fixed draws, run the whole UNet, read the block.
    abar = backbone.schedule.abar(250)
    draws = torch.randn((3, 1, 16, 16), generator=torch.Generator().manual_seed(7))
    expected = []
    for image in images[:2]:
        noisy = abar**0.5 * image[None] + (1 - abar) ** 0.5 * draws
        seen: list[torch.Tensor] = []
        handle = backbone.unet.down_blocks[1].register_forward_hook(lambda m, i, o, seen=seen: seen.append(o[0]))
        with torch.no_grad():
            backbone.predict_noise(noisy, 250)
        handle.remove()
        expected.append(seen[0].mean(dim=(2, 3)).mean(dim=0))
    torch.testing.assert_close(phi, torch.stack(expected), rtol=1e-5, atol=1e-6)
    assert torch.equal(extractor(images[:2].expand(-1, 3, -1, -1)), phi)  # fixed draws: deterministic


def test_an_encoder_block_never_runs_the_decoder(digits):
    backbone, images, _ = digits
    calls = []
    handle = backbone.unet.conv_out.register_forward_hook(lambda *_: calls.append(1))
    try:
        block_means(backbone, images[:1], 10, ["down_blocks.1", "mid_block"])
        assert calls == []
        backbone.predict_noise(images[:1], 10)
        assert calls == [1]
    finally:
        handle.remove()


def test_phi_of_a_latent_model_reads_the_vae_latent_and_passes_gradients_to_the_image():
    backbone = build_tiny_latent_diffusion(num_train_timesteps=1000)
    extractor = UNetBlockExtractor(backbone, "mid_block", timestep=500, noise_samples=2)
    assert extractor.input_size == backbone.latent_shape[1] * backbone.vae_factor
    image = (torch.rand(2, 3, extractor.input_size, extractor.input_size) * 2 - 1).requires_grad_()
    phi = extractor(image)
    assert phi.shape == (2, extractor.feature_dim)
    (grad,) = torch.autograd.grad(phi.pow(2).sum(), image)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    "override,message",
    [("extractor.timestep=1000", "timestep"), ("extractor.noise_samples=0", "noise_samples")],
)
def test_bad_extractor_settings_are_refused(override, message):
    from fsa.job import build

    with pytest.raises(ExtractorError, match=message):
        build(compose_config(["extractor=unet_block", override]).extractor)


def test_matching_moves_only_unconverged_samples_and_lowers_their_distance(digits):
    backbone, images, _ = digits
    extractor = UNetBlockExtractor(backbone, "mid_block", timestep=300)
    t = 300
    target = extractor.represent(images[:2], t)
    abar = backbone.schedule.abar(t)
    z = abar**0.5 * images[2:4] + (1 - abar) ** 0.5 * torch.randn(
        2, 1, 16, 16, generator=torch.Generator().manual_seed(1)
    )
    represent = lambda z_in: extractor.means(z_in, t)  # noqa: E731
    _, matching = SelfGuidance(lr=0.02, max_iterations=8, tolerance=0.0).match(represent, z, target)
    assert (matching.iterations == 8).all() and (matching.end < matching.start / 2).all()
    # A sample already within the tolerance stays where it is.
    tolerance = float(matching.start[0]) * 1.01
    kept, partial = SelfGuidance(lr=0.02, max_iterations=8, tolerance=tolerance).match(represent, z, target)
    assert int(partial.iterations[0]) == 0 and torch.equal(kept[0], z[0])
    unmoved, none = SelfGuidance(max_iterations=0).match(represent, z, target)
    assert torch.equal(unmoved, z) and (none.iterations == 0).all()


def test_self_guided_decoding_resumed_from_any_step_ends_exactly_as_without_a_stop(digits):
    backbone, images, _ = digits
    extractor = UNetBlockExtractor(backbone, "mid_block", timestep=100, noise_samples=2)
    sampler, guidance = DDIMSampler(6, eta=1.0), SelfGuidance(max_iterations=3)
    target_latent = images[:1]
    target = extractor(target_latent.expand(-1, 3, -1, -1))

    def decode(**kwargs):
        fresh = [torch.Generator().manual_seed(s) for s in (3, 4)]
        return self_guided_decode(backbone, sampler, guidance, extractor, target, target_latent, fresh, **kwargs)

    states, matchings = [], []
    whole = decode(on_iteration=lambda snapshot: states.append(snapshot()), on_matching=lambda *m: matchings.append(m))
    assert [s for s, _, _ in matchings] == list(range(6)) and whole.guided_iterations == 6
    for state in (states[0], states[3]):
        resumed = decode(resume=state)
        assert torch.equal(resumed.final_image, whole.final_image)
        assert torch.equal(resumed.best_distance, whole.best_distance)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["guidance=self_guided"], "needs extractor=unet_block"),
        (["guidance=self_guided", "extractor=unet_block", "guidance.max_iterations=-1"], "max_iterations"),
    ],
)
def test_bad_self_guided_settings_are_refused_before_any_model_loads(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_config(overrides))
        from fsa.job import build

        build(compose_config(overrides).guidance)


SELF_GUIDED = [  # CI size: 2 digits x 8 seeds, DDIM 20, about 20 s here; printed_sign does not apply
    "extractor=unet_block",
    "guidance=self_guided",
    "sampler.num_steps=20",
    "max_targets=2",
    "batch_size=8",
    "logger.mode=disabled",
    "progress=false",
    "device=cpu",
]


self_guided_run = shared_run("self_guided", SELF_GUIDED)


def test_self_guided_reconstructions_keep_the_class_and_beat_unguided_samples(self_guided_run):
    """Measured at this size: best distance 1.9 vs 21 unguided, final oracle agreement 0.88 vs 0.06."""
    out, summary = self_guided_run
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert summary["guided_iterations_per_sample"] == 20
    assert list(summary["baselines"]) == ["unguided"]  # printed_sign (the default's) is skipped: no Eq. 3
    unguided = summary["baselines"]["unguided"]
    assert summary["mean_best_distance"] < unguided["mean_best_distance"] / 5
    proof = summary["proof"]
    assert proof["final_oracle_agreement"]["guided"] >= 0.6 > 0.4 > proof["final_oracle_agreement"]["unguided"]


def test_eight_seeds_per_target_make_the_papers_fig_7_panels(self_guided_run, tmp_path):
    from fsa.report.command import main
    from fsa.report.layouts import RING, ring_panels
    from fsa.report.runs import load_run
    from fsa.tracking.run_folder import GUIDED

    out, summary = self_guided_run
    run = load_run(out)
    table = ring_panels(run, "fig 7")
    assert table is not None and [label for label, _ in table.rows] == ["fsa", "unguided"]
    assert table.columns == [summary["samples"][0]["target"], summary["samples"][RING]["target"]]
    for variant, panels in zip([GUIDED, "unguided"], (p for _, p in table.rows), strict=True):
        records = run.samples(variant)
        for t, panel in enumerate(panels):
            mine = [r for r in records if r.target_index == t]
            assert panel.target.image == run.folder.target_image(GUIDED, t, mine[0].target)
            assert [c.image for c in panel.around] == [run.folder.path(r.final_image) for r in mine]
            agreeing = sum(r.final_oracle_class == r.target_label for r in mine)
            mean = sum(r.final_distance for r in mine) / RING
            assert panel.caption == f"oracle {agreeing}/{RING}, mean distance {mean:.3g}"
    assert main([str(out), "--out", str(tmp_path / "report")]) == 0
    assert len(list((tmp_path / "report" / "figures").glob("panels_*.png"))) == 1


def test_participation_and_neighbour_agreement_on_known_answers():
    from fsa.representation.measures import neighbour_agreement, participation_fraction

    one_hot, flat = torch.eye(4)[:2], torch.ones(2, 4)
    assert participation_fraction(one_hot).tolist() == [0.25, 0.25]  # one channel of four carries it all
    assert participation_fraction(flat).tolist() == [1.0, 1.0]
    # the paper's definition, (L1 / L2)^2 / C: 16 / 6 / 4 (the L2 / L4 ratio would give 36 / 18 / 4 = 0.5)
    assert participation_fraction(torch.tensor([[2.0, 1.0, 1.0, 0.0]])).item() == pytest.approx(2 / 3)
    assert participation_fraction(torch.tensor([[-2.0, 1.0, -1.0, 0.0]])).item() == pytest.approx(2 / 3)
    points = torch.tensor([[0.0], [0.1], [5.0], [5.1], [10.0]])
    assert neighbour_agreement(points, torch.tensor([0, 0, 1, 1, 1])) == 1.0
    assert neighbour_agreement(points, torch.tensor([0, 1, 0, 1, 0])) == 0.0


def test_selectivity_separation_purity_and_bimodality_on_known_answers():
    import numpy as np
    from scipy.stats import kurtosis, skew

    from fsa.representation.measures import bimodality_coefficient, channel_selectivity, group_separations, purity

    phi = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    selectivity = channel_selectivity(phi)  # a common channel, one active on 1 image of 4, a dead one
    assert selectivity[:2].tolist() == [1.0, 0.25] and selectivity[2].isnan()
    rng = np.random.default_rng(0)
    x = rng.normal(size=40) ** 2
    g1, g2 = skew(x, bias=False), kurtosis(x, bias=False)  # Sarle's coefficient from scipy's moments
    assert bimodality_coefficient(x) == pytest.approx((g1**2 + 1) / (g2 + 3 * 39**2 / (38 * 37)))
    assert bimodality_coefficient(rng.normal(size=20000)) == pytest.approx(1 / 3, abs=0.01)
    two_modes = np.concatenate([rng.normal(0, 1, 5000), rng.normal(8, 1, 5000)])
    assert bimodality_coefficient(two_modes) > 5 / 9 > bimodality_coefficient(rng.normal(size=5000))
    # two groups on a line: centroids 10 apart, each with variance 1 along it (and none across it)
    points = np.array([[-1.0, 0.0], [1.0, 0.0], [9.0, 0.0], [11.0, 0.0]])
    assert group_separations(points, np.array([0, 0, 1, 1])).tolist() == [10.0]
    assert purity(np.array([0, 0, 1, 1]), np.array([3, 3, 3, 5])) == 0.75


def test_clusters_of_well_separated_groups_are_found_with_intervals():
    import numpy as np

    from fsa.representation import analyses

    rng = np.random.default_rng(0)
    centres = np.eye(4) * 20
    labels = np.repeat(np.arange(4), 25)
    phi = centres[labels] + rng.normal(size=(100, 4))
    clusters = analyses.clusters(phi, labels, k=4)
    assert clusters.figures["purity"] == 1.0 and clusters.figures["clusters_separated"] == 1.0
    assert len(clusters.cluster_separations) == 6 and clusters.intervals["purity"][0] > 0.9
    low, high = clusters.intervals["clusters_median"]
    assert low <= clusters.figures["clusters_median"] <= high
    assert clusters.figures["clusters_median"] > 5 * clusters.figures["gaussian_median"]  # real clusters
    mixed = analyses.clusters(rng.normal(size=(100, 4)), labels, k=4)  # no structure: no separation
    assert mixed.figures["classes_separated"] < 0.5 and mixed.figures["purity"] < 0.6
    # ... yet K-means cuts a structureless cloud into parts 2 sd apart: the Gaussian reference says so
    assert (
        mixed.figures["clusters_separated"] == 1
        and mixed.figures["clusters_median"] < 1.3 * mixed.figures["gaussian_median"]
    )
    study = analyses.selectivity(np.abs(phi), labels, shown=2, k=5)
    assert study.top_share == 1.0 > study.chance_share  # a channel per group: its top images are the group
    assert study.bimodality_interval[0] <= study.bimodality <= study.bimodality_interval[1]


def test_a_blocks_input_maps_are_every_map_it_reads_its_skips_too(digits):
    from fsa.diffusion.relu_unet import ReLUUNet
    from fsa.extractors.layers import module_calls

    backbone, images, _ = digits
    (call,) = module_calls([backbone.unet.up_blocks[0]], lambda: backbone.predict_noise(images, 10), "up_blocks.0")
    hidden, skips, embedding = call.args  # diffusers' UNet2DModel calls its up blocks with these, in order
    assert embedding.ndim == 2 and len(skips) == 2  # the time embedding is no feature map
    assert torch.equal(call.input_maps(), torch.cat([hidden, *skips], dim=1))
    torch.manual_seed(0)
    relu = ReLUUNet(block_out_channels=(4, 8, 8), mid_channels=16, decoder_layers=2)
    calls = module_calls([relu.down_blocks[2], relu.up_blocks[0]], lambda: relu(images), "blocks")
    up = relu.upsamplers[0](relu.mid_block(relu.pool(calls[0].output)))
    assert torch.equal(calls[1].input_maps(), torch.cat([up, calls[0].output], dim=1))  # below, then the skip


def test_the_relu_unet_is_a_blind_denoiser_whose_blocks_are_non_negative(tmp_path, digits):
    """Built like Kadkhodaie et al.'s: blocks of conv + layer norm + ReLU, so every block's output is
    >= 0; no timestep input; saved and loaded back through model=digits_relu's loader."""
    from diffusers import DDPMScheduler

    from fsa.diffusion.relu_unet import ReLUUNet
    from fsa.extractors.unet_block import represent_input_output

    _, images, _ = digits
    torch.manual_seed(0)
    ReLUUNet(block_out_channels=(4, 8, 8), mid_channels=16).save_pretrained(tmp_path / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "scheduler")
    backbone = load_pixel_diffusion(str(tmp_path), "unet")
    assert block_names(backbone.unet) == [*(f"down_blocks.{i}" for i in range(3)), "mid_block", "up_blocks.0",
                                          "up_blocks.1", "up_blocks.2"]  # fmt: skip
    assert torch.equal(backbone.predict_noise(images, 10), backbone.predict_noise(images, 900))
    noise = torch.randn(2, *backbone.latent_shape, generator=torch.Generator().manual_seed(0))
    inputs, outputs = represent_input_output(backbone, images, 100, noise, block_names(backbone.unet))
    assert [o.shape[1] for o in outputs] == [4, 8, 8, 16, 8, 8, 4] and all((o >= 0).all() for o in outputs)
    assert [i.shape[1] for i in inputs] == [1, 4, 8, 8, 16, 16, 8]  # a decoder block reads its skip too
    assert all((i >= 0).all() for i in inputs[1:4])  # max-pooled ReLU outputs (a decoder's up-sampling is linear)


REPRESENT = [  # CI size: 8 held-out digits per class, 4 noise levels: seconds
    "task=represent",
    "task.per_class=8",
    "task.timesteps=[0,100,500,900]",
    "logger.mode=offline",
    "progress=false",
    "device=cpu",
]


represent_run = shared_run("represent", REPRESENT)


def test_represent_run_writes_tables_that_agree_with_its_summary(represent_run):
    import pandas as pd

    out, summary = represent_run
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert summary["task"] == "represent" and summary["images"] == 80 and summary["chance"] == 0.1
    blocks = summary["blocks"]
    assert blocks[3] == "mid_block" and len(blocks) == 7  # every block of the digits UNet by default
    neighbours = pd.read_csv(out / "representation" / "neighbours.csv", index_col=0)
    assert list(neighbours.index) == [*blocks, "pixels", "digits_cnn"]
    for block in blocks:
        assert neighbours.loc[block, "t=100"] == pytest.approx(summary["neighbours"][block])
    for name in ("sparsity", "stability"):
        table = pd.read_csv(out / "representation" / f"{name}.csv", index_col=0)
        assert list(table.index) == blocks and list(table.columns) == ["t=0", "t=100", "t=500", "t=900"]
    stability = pd.read_csv(out / "representation" / "stability.csv", index_col=0)
    assert stability["t=100"].tolist() == pytest.approx([1.0] * 7)  # the reference level is itself
    for name in ("sparsity", "sparsity_input"):
        sparsity = pd.read_csv(out / "representation" / f"{name}.csv", index_col=0)
        assert ((sparsity > 0) & (sparsity <= 1)).all().all() and list(sparsity.index) == blocks
    figures = ["sparsity", "sparsity_input", "sparsity_histograms", "stability", "neighbours", "selectivity"]
    for png in [*figures, "selective_channels", "separation", "clusters"]:
        assert (out / "representation" / f"{png}.png").exists(), png


def test_represent_checks_each_of_the_papers_claims_with_an_interval(represent_run, tmp_path):
    import pandas as pd

    from fsa.report.command import main

    out, summary = represent_run
    assert main([str(out), "--out", str(tmp_path / "report")]) == 0  # the claims are on the report page
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Kadkhodaie et al.&#x27;s claims" in page and "Fig. 6: classes are less separated" in page
    findings = pd.read_csv(out / "representation" / "findings.csv", index_col=0)
    assert [claim.split(":")[0] for claim in findings.index] == ["Fig. 1"] * 2 + ["Fig. 2", "Fig. 3", "Fig. 4"] + [
        "Fig. 6"
    ] * 4 + ["Fig. 5"]
    assert set(findings.holds) <= {"yes", "no"} and not findings[["value", "low", "high"]].isna().any().any()
    assert ((findings.low <= findings.value + 1e-12) & (findings.value <= findings.high + 1e-12)).all()
    judged = {"high < 0": findings.high < 0, "low > 0": findings.low > 0, "high < 1": findings.high < 1}
    for claim, row in findings.iterrows():
        if row.rule in judged:
            assert (row.holds == "yes") == judged[row.rule][claim], claim
    assert summary["findings"][3]["value"] == pytest.approx(findings.iloc[3].value)
    assert summary["clusters"]["purity"] == pytest.approx(findings.iloc[8].value)
    # the digits' mid_block: K-means clusters are purer than chance and the top images of its
    # selective channels share a class more often than random images do (80 images: 0.6 and 0.6 here)
    assert summary["clusters"]["purity"] > 0.3 and findings.iloc[4].holds == "yes"


def test_represent_reads_the_relu_unet_built_like_the_papers(tmp_path):
    """model=digits_relu: the shipped network; its phi is non-negative, so its sparsity is the paper's."""
    import pandas as pd
    from helpers import run_fsa

    out = tmp_path / "run"
    run_fsa([*REPRESENT[:2], "model=digits_relu", "task.timesteps=[100,500]", "~logger", *REPRESENT[-2:]], out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "ddpm_relu" and len(summary["blocks"]) == 7
    # a trained denoiser: its middle block groups classes (80 images: 0.43; 300 images: 0.67; chance 0.10)
    assert summary["neighbours"]["mid_block"] > 0.25
    findings = pd.read_csv(out / "representation" / "findings.csv", index_col=0)
    assert len(findings) == 10 and set(findings.holds) <= {"yes", "no"}


def test_the_middle_block_groups_digits_by_class_without_labels(represent_run):
    """Measured at this size (80 images, t = 100): mid_block 0.79, down_blocks.0 0.24, digits CNN
    0.975, chance 0.10; at 300 images (`fsa task=represent`) mid_block 0.91, down_blocks.0 0.40."""
    _, summary = represent_run
    agreement = summary["neighbours"]
    assert agreement["mid_block"] > 0.6 > 0.1 == summary["chance"]
    assert agreement["mid_block"] > agreement["down_blocks.0"] + 0.2  # deeper than the first block
    assert agreement["digits_cnn"] > 0.9  # a classifier's features: the supervised ceiling


def test_represent_run_logs_its_tables_and_agreements_to_wandb(represent_run):
    from wandb_records import runs_by_job_type
    from wandb_records import summary as wandb_summary

    out, summary = represent_run
    ((_, records),) = runs_by_job_type(out)["represent"]
    logged = wandb_summary(records)
    assert float(logged["neighbours/mid_block"]) == pytest.approx(summary["neighbours"]["mid_block"])


def test_represent_refuses_a_block_the_model_has_not(tmp_path):
    from fsa.job import run

    with pytest.raises(ExtractorError, match="its blocks: down_blocks.0"):
        run(compose_config([*REPRESENT[:-3], "task.blocks=[middle]", "~logger"], tmp_path), tmp_path)
