"""Paired bootstrap against hand-computed metrics and a plain loop over the same draws; ranks; power-law fits."""

import numpy as np
import pytest

from geognn.training import stats
from geognn.training.stats import paired_bootstrap, power_law_fit, shared_ranks


def brute_force_replicates(errors_a, errors_b, counts, samples, seed):
    """Each replicate scored one structure and one seed at a time, on the module's own draws."""
    num_seeds_a, num_structures = errors_a.shape
    num_seeds_b = errors_b.shape[0]
    draws = stats._resamples(np.random.default_rng(seed), samples, num_structures, num_seeds_a, num_seeds_b)
    replicates = []
    for structure_chunk, seed_chunk_a, seed_chunk_b in draws:
        for structures, seeds_a, seeds_b in zip(structure_chunk, seed_chunk_a, seed_chunk_b):
            denominator = sum(counts[j] for j in structures)
            metric_a = np.mean([sum(errors_a[s, j] for j in structures) / denominator for s in seeds_a])
            metric_b = np.mean([sum(errors_b[s, j] for j in structures) / denominator for s in seeds_b])
            replicates.append(metric_a - metric_b)
    return np.array(replicates)


def width(result):
    return result["high"] - result["low"]


def test_observed_difference_is_the_mean_over_seeds_of_the_mean_over_structures():
    errors_a = [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]  # seed means 2 and 4: metric 3
    errors_b = [[1.0, 1.0, 1.0]]
    result = paired_bootstrap(errors_a, errors_b, samples=100)
    assert result["difference"] == pytest.approx(2.0)
    assert result["samples"] == 100 and result["level"] == 0.95


def test_with_counts_the_metric_is_a_ratio_of_sums():
    # Seed 0: (2 + 9) / (1 + 3); seed 1: (6 + 3) / 4; b: (1 + 3) / 4.
    errors_a = [[2.0, 9.0], [6.0, 3.0]]
    errors_b = [[1.0, 3.0]]
    result = paired_bootstrap(errors_a, errors_b, counts=[1, 3], samples=100)
    assert result["difference"] == pytest.approx((11 / 4 + 9 / 4) / 2 - 1.0)
    # Not the mean of per-structure ratios, which would weigh the small structure as much as the large one.
    assert result["difference"] != pytest.approx(((2 + 9 / 3) / 2 + (6 + 1) / 2) / 2 - (1 + 1) / 2)


@pytest.mark.parametrize("use_counts", [False, True])
def test_replicates_match_a_plain_loop_over_the_same_draws(use_counts, monkeypatch):
    rng = np.random.default_rng(3)
    errors_a = rng.exponential(size=(3, 7))
    errors_b = rng.exponential(size=(2, 7))
    counts = rng.integers(1, 9, size=7).astype(float) if use_counts else np.ones(7)
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 7 * 16)  # several chunks, the last one short
    samples = 50
    expected = brute_force_replicates(errors_a, errors_b, counts, samples, seed=5)
    replicates = stats._bootstrap_replicates(errors_a, errors_b, counts, samples, seed=5)
    np.testing.assert_allclose(replicates, expected, rtol=1e-12)

    result = paired_bootstrap(errors_a, errors_b, counts=counts if use_counts else None, samples=samples,
                              level=0.9, seed=5)
    assert result["low"] == pytest.approx(np.percentile(expected, 5.0))
    assert result["high"] == pytest.approx(np.percentile(expected, 95.0))
    opposite = (expected <= 0).sum() if result["difference"] > 0 else (expected >= 0).sum()
    assert result["p_value"] == pytest.approx(min(1.0, 2 * (1 + opposite) / (1 + samples)))
    assert result["significant"] == (result["low"] > 0 or result["high"] < 0)


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    errors_a, errors_b = rng.exponential(size=(2, 30)), rng.exponential(size=(2, 30))
    first = paired_bootstrap(errors_a, errors_b, samples=300, seed=1)
    assert paired_bootstrap(errors_a, errors_b, samples=300, seed=1) == first
    assert paired_bootstrap(errors_a, errors_b, samples=300, seed=2)["low"] != first["low"]


def test_identical_models_are_not_significantly_different():
    errors = np.random.default_rng(1).exponential(size=(3, 40))
    result = paired_bootstrap(errors, errors, samples=2000)
    assert result["difference"] == 0.0
    assert result["low"] < 0 < result["high"]  # the seeds of each model are resampled independently
    assert not result["significant"]
    assert result["p_value"] == 1.0


def test_a_constant_offset_gives_a_degenerate_significant_interval():
    errors_a = np.random.default_rng(2).exponential(size=(1, 50)) + 1.0
    result = paired_bootstrap(errors_a, errors_a - 0.25, samples=1000)
    assert result["difference"] == pytest.approx(0.25)
    assert result["low"] == pytest.approx(0.25) and result["high"] == pytest.approx(0.25)
    assert result["significant"]
    assert result["p_value"] == pytest.approx(2 / 1001)
    # Swapping the models flips the sign and nothing else.
    swapped = paired_bootstrap(errors_a - 0.25, errors_a, samples=1000)
    assert swapped["low"] == pytest.approx(-0.25) and swapped["significant"]


def test_a_constant_offset_per_component_with_counts():
    rng = np.random.default_rng(4)
    counts = rng.integers(3, 30, size=40).astype(float)
    errors_a = rng.exponential(size=(1, 40)) * counts + counts
    result = paired_bootstrap(errors_a, errors_a - 0.1 * counts, counts=counts, samples=500)
    assert result["low"] == pytest.approx(0.1) and result["high"] == pytest.approx(0.1)
    assert result["significant"]


def test_replicates_with_no_difference_count_against_significance():
    # The models differ on one structure of three; about (2/3)^3 of the replicates miss it and tie at 0.
    samples = 3000
    result = paired_bootstrap([[1.0, 1.0, 2.0]], [[1.0, 1.0, 1.0]], samples=samples)
    replicates = stats._bootstrap_replicates(np.array([[1.0, 1.0, 2.0]]), np.ones((1, 3)), np.ones(3), samples, 0)
    ties = (replicates == 0).sum()
    assert ties / samples == pytest.approx((2 / 3) ** 3, abs=0.03)
    assert result["p_value"] == pytest.approx(2 * (1 + ties) / (1 + samples))
    assert result["low"] == 0.0 and not result["significant"]


def test_pairing_removes_the_shared_difficulty_of_structures():
    # Both models find the same structures hard; b is a little better on each one.
    difficulty = np.random.default_rng(5).exponential(size=(1, 200)) * 10
    result = paired_bootstrap(difficulty + 0.1, difficulty, samples=1000)
    assert result["significant"]


def test_width_shrinks_as_one_over_sqrt_of_the_number_of_structures():
    rng = np.random.default_rng(6)
    errors_a, errors_b = rng.exponential(size=(1, 200)), rng.exponential(size=(1, 200))
    narrow = paired_bootstrap(np.tile(errors_a, 4), np.tile(errors_b, 4), samples=2000)
    wide = paired_bootstrap(errors_a, errors_b, samples=2000)
    assert narrow["difference"] == pytest.approx(wide["difference"])
    assert width(narrow) / width(wide) == pytest.approx(0.5, abs=0.06)


def test_disagreeing_seeds_widen_the_interval():
    rng = np.random.default_rng(7)
    errors_b = rng.exponential(size=(1, 100))
    base = errors_b + 0.2
    spread = np.array([[0.0], [0.4], [0.8]])
    agreeing = paired_bootstrap(base + spread.mean(), errors_b, samples=2000)
    disagreeing = paired_bootstrap(base + spread, errors_b, samples=2000)
    assert disagreeing["difference"] == pytest.approx(agreeing["difference"])
    assert width(disagreeing) > 3 * width(agreeing)
    # Fewer seeds than needed to see it: one seed of the same model gives the narrow interval again.
    single = paired_bootstrap((base + spread)[1:2], errors_b, samples=2000)
    assert width(single) == pytest.approx(width(agreeing), rel=1e-9)


@pytest.mark.parametrize("errors_a, errors_b, counts, message", [
    (np.ones(5), np.ones((1, 5)), None, "2D"),
    (np.ones((2, 5)), np.ones((2, 4)), None, r"\(2, 5\).*\(2, 4\)"),
    (np.ones((0, 5)), np.ones((1, 5)), None, "empty"),
    (np.ones((1, 0)), np.ones((1, 0)), None, "empty"),
    (np.array([[1.0, np.nan]]), np.ones((1, 2)), None, "NaN"),
    (np.ones((1, 2)), np.array([[1.0, np.inf]]), None, "errors_b"),
    (-np.ones((1, 2)), np.ones((1, 2)), None, "absolute"),
    (np.ones((1, 3)), np.ones((1, 3)), [1.0, 2.0], "counts"),
    (np.ones((1, 3)), np.ones((1, 3)), [1.0, 0.0, 2.0], "positive"),
])
def test_bad_inputs_are_refused(errors_a, errors_b, counts, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(errors_a, errors_b, counts=counts, samples=10)


@pytest.mark.parametrize("options, message", [({"samples": 0}, "samples"), ({"level": 1.0}, "level")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(np.ones((1, 3)), np.ones((1, 3)), **options)


def test_models_not_separable_share_a_rank():
    means = {"egnn": 1.0, "schnet": 1.1, "gin": 2.0}
    significant = {("egnn", "schnet"): False, ("gin", "egnn"): True, ("schnet", "gin"): True}
    assert shared_ranks(means, significant) == {"egnn": 1, "schnet": 1, "gin": 3}


def test_a_fully_significant_chain_ranks_one_two_three():
    means = {"c": 3.0, "a": 1.0, "b": 2.0}
    significant = {("a", "b"): True, ("b", "c"): True, ("a", "c"): True}
    assert shared_ranks(means, significant) == {"a": 1, "b": 2, "c": 3}


def test_rank_counts_only_the_models_significantly_better():
    # c is separable from a but not from b: one model is significantly better than it.
    means = {"a": 1.0, "b": 2.0, "c": 3.0}
    significant = {("a", "b"): False, ("b", "c"): False, ("a", "c"): True}
    assert shared_ranks(means, significant) == {"a": 1, "b": 1, "c": 2}


def test_ranks_refuse_missing_or_contradictory_pairs():
    with pytest.raises(ValueError, match="no entry"):
        shared_ranks({"a": 1.0, "b": 2.0}, {})
    with pytest.raises(ValueError, match="disagrees"):
        shared_ranks({"a": 1.0, "b": 2.0}, {("a", "b"): True, ("b", "a"): False})


def test_power_law_fit_recovers_slope_and_prefactor():
    sizes = np.array([100, 200, 400, 800, 1600])
    fit = power_law_fit(sizes, 3.0 * sizes**-0.5)
    assert fit["slope"] == pytest.approx(-0.5, rel=1e-12)
    assert fit["prefactor"] == pytest.approx(3.0, rel=1e-12)
    assert fit["r2"] == pytest.approx(1.0)


def test_power_law_fit_uses_every_point_of_each_size():
    # Two seeds per size, off by factors e^±0.1: the fit passes through their geometric mean.
    sizes = np.repeat([10.0, 100.0, 1000.0], 2)
    errors = 2.0 * sizes**-1.0 * np.exp(np.tile([0.1, -0.1], 3))
    fit = power_law_fit(sizes, errors)
    assert fit["slope"] == pytest.approx(-1.0) and fit["prefactor"] == pytest.approx(2.0)
    log_spread = np.log(errors) - np.log(errors).mean()
    assert fit["r2"] == pytest.approx(1 - 6 * 0.1**2 / (log_spread @ log_spread))


@pytest.mark.parametrize("sizes, errors, message", [
    ([100, 100], [1.0, 0.9], "two distinct sizes"),
    ([100, 200], [1.0, 0.0], "positive"),
    ([0, 200], [1.0, 0.5], "positive"),
    ([100, 200, 300], [1.0, 0.5], "equal length"),
    ([100, 200], [1.0, np.nan], "finite"),
])
def test_power_law_fit_refuses_bad_points(sizes, errors, message):
    with pytest.raises(ValueError, match=message):
        power_law_fit(sizes, errors)
