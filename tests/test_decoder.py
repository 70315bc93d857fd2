"""The guided decoder (Algorithm 1) on tiny random models: determinism, batching, and that it guides."""

import pytest
import torch
from helpers import SmallConvExtractor

from fsa.diffusion.backbones import build_tiny_latent_diffusion
from fsa.diffusion.samplers import DDIMSampler, DDPMSampler, DPMSolverPPSampler
from fsa.diffusion.schedule import predict_x0
from fsa.guidance.decoder import POST, PRE, guided_decode
from fsa.guidance.feature_guidance import FeatureGuidance


@pytest.fixture(scope="module")
def setup():
    backbone = build_tiny_latent_diffusion(num_train_timesteps=1000)
    extractor = SmallConvExtractor()
    target = extractor(
        extractor.prepare_generated(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1)
    )
    return backbone, extractor, target


def generators(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


SHORT = FeatureGuidance(early_steps=1, early_k=3, k=2)


def decode(setup, seeds, guidance=SHORT, sampler=None, **kwargs):
    backbone, extractor, target = setup
    return guided_decode(
        backbone, sampler or DDIMSampler(4, eta=0.5), guidance, extractor, target, generators(seeds), **kwargs
    )


def test_same_seed_same_outputs(setup):
    a, b = decode(setup, [3, 4]), decode(setup, [3, 4])
    assert torch.equal(a.best_image, b.best_image) and torch.equal(a.final_image, b.final_image)
    assert torch.equal(a.best_distance, b.best_distance)
    c = decode(setup, [5, 6])
    assert not torch.equal(a.final_image, c.final_image)


def test_sample_result_does_not_depend_on_its_batch(setup):
    """Same noise per sample whatever the batch; only float summation order differs.

    Unguided, that leaves ~1e-6. Guided, a last-bit difference can flip one pixel's rounding in
    the virtual save, which changes the gradient a little, so the tolerance is looser there.
    """
    unguided = FeatureGuidance(w_g=0.0, early_steps=1, early_k=3, k=2)
    alone, batch = decode(setup, [11], guidance=unguided), decode(setup, [7, 11, 13], guidance=unguided)
    torch.testing.assert_close(batch.final_image[1:2], alone.final_image, rtol=0, atol=1e-4)
    alone, batch = decode(setup, [11]), decode(setup, [7, 11, 13])
    torch.testing.assert_close(batch.final_image[1:2], alone.final_image, rtol=0, atol=0.05)
    torch.testing.assert_close(batch.best_distance[1:2], alone.best_distance, rtol=1e-2, atol=0)


def test_callback_reports_every_evaluation_and_best_is_their_minimum(setup):
    events = []
    result = decode(setup, [0, 1], callback=events.append)
    iterations = SHORT.total_iterations(4)
    assert result.guided_iterations == iterations == 3 + 3 * 2
    assert [e.phase for e in events] == [PRE, POST] * iterations
    assert all(e.stats is not None for e in events if e.phase == PRE)
    distances = torch.stack([e.distance for e in events])
    torch.testing.assert_close(result.best_distance, distances.min(dim=0).values)
    where = distances.argmin(dim=0)
    for i in range(2):
        ev = events[where[i]]
        assert (result.best_t[i], result.best_k[i], result.best_phase[i]) == (ev.t, ev.k, ev.phase)
    assert result.unet_evaluations == iterations
    assert result.feature_evaluations == 2 * iterations + 1  # pre, post, and the final image


def test_unguided_skips_gradient_and_post_check(setup):
    events = []
    result = decode(
        setup, [0], guidance=FeatureGuidance(w_g=0.0, early_steps=1, early_k=3, k=2), callback=events.append
    )
    assert {e.phase for e in events} == {PRE} and all(e.stats is None for e in events)
    assert result.feature_evaluations == result.guided_iterations + 1


def test_guided_beats_unguided_for_the_same_seeds(setup):
    seeds = [0, 1, 2]
    guided = decode(setup, seeds)
    unguided = decode(setup, seeds, guidance=FeatureGuidance(w_g=0.0, early_steps=1, early_k=3, k=2))
    assert (guided.best_distance < unguided.best_distance).all()
    assert guided.best_distance.mean() < 0.5 * unguided.best_distance.mean()


def test_paper_sign_does_worse_than_descending(setup):
    descend = decode(setup, [0, 1])
    ascend = decode(setup, [0, 1], guidance=FeatureGuidance(early_steps=1, early_k=3, k=2, direction="ascend"))
    assert (ascend.final_distance > descend.final_distance).all()


def test_ddpm_sampler_runs_and_final_is_post_guidance_image_of_last_step(setup):
    _, extractor, target = setup
    short = build_tiny_latent_diffusion(num_train_timesteps=6)
    events = []
    result = guided_decode(short, DDPMSampler(), SHORT, extractor, target, generators([0]), callback=events.append)
    assert result.guided_iterations == 3 + 5 * 2
    last_post = events[-1]
    assert last_post.phase == POST and last_post.t == 0
    torch.testing.assert_close(result.final_image, last_post.image, rtol=1e-5, atol=1e-5)


def test_bfloat16_autocast_keeps_distances_fp32_and_close(setup):
    fp32 = decode(setup, [0])
    bf16 = decode(setup, [0], dtype=torch.bfloat16)
    assert bf16.best_distance.dtype == torch.float32 and torch.isfinite(bf16.best_distance).all()
    assert bf16.best_distance.item() == pytest.approx(fp32.best_distance.item(), rel=0.5)


def test_frozen_networks_get_no_parameter_gradients(setup):
    backbone, extractor, _ = setup
    decode(setup, [0])
    assert all(p.grad is None and not p.requires_grad for p in [*backbone.parameters(), *extractor.parameters()])


@pytest.mark.parametrize("sampler", [DDIMSampler(4, eta=0.5), DPMSolverPPSampler(4)], ids=["ddim", "dpmpp"])
def test_resuming_from_any_iteration_ends_exactly_as_an_uninterrupted_run(setup, sampler):
    """DPM-Solver++ also carries its history (the previous timestep's x0) in the state."""
    backbone, extractor, target = setup
    whole = decode(setup, [3, 4], sampler=sampler)
    for stop_after in (1, 4, 7):  # inside the early recurrences, at a step boundary, late
        states = []

        def keep(snapshot, states=states):
            states.append(snapshot())

        decode(setup, [3, 4], sampler=sampler, on_iteration=keep)
        state = states[stop_after - 1]
        fresh = [torch.Generator().manual_seed(s) for s in (3, 4)]  # as a new process would build them
        resumed = guided_decode(backbone, sampler, SHORT, extractor, target, fresh, resume=state)
        assert torch.equal(resumed.final_image, whole.final_image)
        assert torch.equal(resumed.best_image, whole.best_image)
        assert torch.equal(resumed.best_distance, whole.best_distance)
        assert (resumed.guided_iterations, resumed.feature_evaluations) == (
            whole.guided_iterations,
            whole.feature_evaluations,
        )


def test_dpm_solver_pp_unguided_decode_is_the_solver_on_the_backbones_noise(setup):
    """w_g = 0, K = 1: the decoder's trajectory is DPM-Solver++(2M) itself, its history the x0 of the
    previous timestep; each recurrence at a timestep (K = 2) steps from that same history."""
    backbone = setup[0]
    sampler = DPMSolverPPSampler(4)
    unguided = FeatureGuidance(w_g=0.0, early_steps=0, k=1)
    result = decode(setup, [2], guidance=unguided, sampler=sampler)
    z = torch.randn(backbone.latent_shape, generator=torch.Generator().manual_seed(2)).unsqueeze(0)
    timesteps, history = sampler.timesteps(1000), None
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            abar_t = backbone.schedule.abar(t)
            abar_prev = backbone.schedule.abar(timesteps[i + 1] if i + 1 < len(timesteps) else -1)
            eps = backbone.predict_noise(z, t)
            z, history = sampler.step(z, eps, abar_t, abar_prev, None, history), (predict_x0(z, eps, abar_t), abar_t)
        expected = backbone.decode(z)
    torch.testing.assert_close(result.final_image, expected, rtol=1e-5, atol=1e-5)
    states = []
    twice = FeatureGuidance(w_g=0.0, early_steps=0, k=2)
    decode(setup, [2], guidance=twice, sampler=sampler, on_iteration=lambda snapshot: states.append(snapshot()))
    remembered = [None if s.history is None else s.history[1] for s in states]
    abar = [backbone.schedule.abar(t) for t in timesteps]
    assert remembered == [None, abar[0], abar[0], abar[1], abar[1], abar[2], abar[2], abar[3]]


def test_the_post_check_scores_but_never_steers(setup):
    """Off, the trajectory and the final image are the same bit for bit; only the best image loses the
    post-guidance candidates (docs/schedules.md: why the preset drops it)."""
    on = decode(setup, [3, 4], guidance=FeatureGuidance(early_steps=1, early_k=3, k=2))
    off = decode(setup, [3, 4], guidance=FeatureGuidance(early_steps=1, early_k=3, k=2, post_check=False))
    assert torch.equal(on.final_image, off.final_image)
    assert (on.best_distance <= off.best_distance).all()
    assert off.feature_evaluations < on.feature_evaluations
