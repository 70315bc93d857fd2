"""`sampler=fast guidance=fast`, the schedule study's pick: it composes to what its files say, runs at
CI size on the embedded digits, does per iteration exactly what its definition says, and guides."""

import pytest
from helpers import compose_config
from hydra.utils import instantiate

from fsa.job import run

FAST = ["sampler=fast", "guidance=fast"]


def test_the_preset_is_the_papers_eq3_at_w_g_1_once_per_ddim_timestep_without_the_post_check():
    cfg = compose_config(FAST)
    sampler, guidance = instantiate(cfg.sampler), instantiate(cfg.guidance)
    paper = instantiate(compose_config(["guidance=paper"]).guidance)
    # The paper's Eq. 3 as it is (normalisation, clip, sign, the gradient through the UNet) ...
    for key in ("normalise", "clip_mode", "clip_c", "direction", "gradient", "backward_steps"):
        assert getattr(guidance, key) == getattr(paper, key), key
    # ... at w_g = 1, K = 1 on every timestep of DDIM (eta = 0), with no post check.
    assert (guidance.w_g, guidance.post_check) == (1.0, False)
    assert (guidance.early_steps, guidance.k, guidance.late_steps) == (0, 1, 0)
    assert type(sampler).__name__ == "DDIMSampler" and sampler.eta == 0
    assert guidance.total_iterations(len(sampler.timesteps(1000))) == sampler.num_steps
    # The command line still wins over the preset.
    assert compose_config([*FAST, "sampler.num_steps=7"]).sampler.num_steps == 7


@pytest.mark.slow
def test_the_preset_runs_at_ci_size_as_defined_and_guides(tmp_path):
    """Two held-out digits, one seed, with the unguided twin: per sample, one guided iteration per
    timestep, one scoring per iteration (for g; no post check), and the final image's."""
    cfg = compose_config([*FAST, "dataset.limit=2", "max_samples=1", "baselines=[unguided]", "logger.mode=disabled"])
    summary = run(cfg, tmp_path)
    steps = cfg.sampler.num_steps
    assert summary["guided_iterations_per_sample"] == steps
    for sample in summary["samples"]:
        assert sample["guided_iterations"] == sample["network_evaluations"] == steps
        assert sample["feature_evaluations"] == steps + 1
    unguided = summary["baselines"]["unguided"]
    assert summary["mean_best_distance"] < unguided["mean_best_distance"] / 10
    assert summary["mean_final_distance"] < unguided["mean_final_distance"] / 10
    assert summary["final_oracle_agreement"] == 1.0
