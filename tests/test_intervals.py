"""Intervals on the figures a run reports: Wilson's for agreements, a bootstrap over targets (paired for
a ratio) for distances, on known answers."""

import numpy as np
import pytest

from fsa.evaluation import variant_figures
from fsa.intervals import distance_ratio_interval, target_bootstrap, wilson_interval


def test_wilson_interval_on_known_answers():
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)  # not empty at 0 of 10
    assert wilson_interval(10, 10) == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_the_bootstrap_draws_targets_and_keeps_their_samples_together():
    # Two targets of 50 identical samples each: over samples the mean would look certain (5 +- 0.1);
    # over targets it is not (draws of two targets give 0, 5 or 10).
    groups = [np.zeros((50, 1)), np.full((50, 1), 10.0)]
    assert target_bootstrap(groups, np.mean) == [0.0, 10.0]
    assert target_bootstrap([np.full((3, 1), 2.0)] * 5, np.mean) == [2.0, 2.0]  # no spread, no width
    assert target_bootstrap([np.ones((3, 1))], np.mean) is None  # one target: nothing to say


def test_the_mean_of_ten_targets_gets_about_the_normal_interval():
    groups = [np.array([[float(v)]]) for v in range(10)]  # mean 4.5, sd 3.03: 4.5 +- 1.8 by the normal
    low, high = target_bootstrap(groups, np.mean)
    assert 2.4 < low < 3.1 and 5.9 < high < 6.6


def test_a_run_variants_figures_carry_their_intervals_and_the_ratio_is_paired():
    samples = [
        {"target_index": t, "target_label": 1, "sample": s, "best_distance": 1.0 + t, "final_distance": 2.0 + t}
        | {"best_oracle_class": 1, "final_oracle_class": 1 if s else 0}
        | {"best_oracle_entropy": 0.1, "final_oracle_entropy": 0.2}
        for t in range(4)
        for s in range(2)
    ]
    figures = variant_figures(samples, reference=None)
    low, high = figures["intervals"]["mean_best_distance"]
    assert low <= figures["mean_best_distance"] == 2.5 <= high
    assert figures["intervals"]["best_oracle_agreement"] == wilson_interval(8, 8)
    assert figures["intervals"]["final_oracle_agreement"] == wilson_interval(4, 8)
    unguided = [s | {"best_distance": 2 * s["best_distance"]} for s in samples]
    assert distance_ratio_interval(samples, unguided) == pytest.approx([0.5, 0.5])  # paired: exactly half
