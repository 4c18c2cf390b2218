"""evaluate.py: the importance-weighted log-likelihood against exact answers.

The exact log p(x) of a model with a 2-dimensional latent space comes from
numerical integration (grid.exact_log_px, itself checked against
scipy.integrate and against closed forms); the estimator must approach it as
K grows and, in expectation, never exceed it (Burda et al. 2016, Theorem 1).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, optimize, stats
from scipy.special import expit, log_expit, logsumexp

import evaluate
from vaelib import checkpoints, grid, importance, runs, training
from vaelib import networks
from data import DATA_DIM, load_data
import vae
from holding import hold_lock


def initial_params(config, dtype, seed):
    """networks.initial_params with the skeleton's init_net_params, as vae.py passes it."""
    return networks.initial_params(config, dtype, seed, vae.init_net_params)


def tiny_model(seed=0, data_dim=12, hidden=8, latent_dim=2, num_images=6):
    """A small random VAE whose encoder is a poor proposal (ELBO 3 to 13
    nats below log p(x)) and a few random binary images. -> (gen_params, rec_params, x)."""
    rs = np.random.RandomState(seed)
    gen = [(1.5 * rs.randn(latent_dim, hidden), 0.5 * rs.randn(hidden)),
           (1.5 * rs.randn(hidden, data_dim), 0.5 * rs.randn(data_dim))]
    rec = [(0.5 * rs.randn(data_dim, hidden), 0.5 * rs.randn(hidden)),
           (0.3 * rs.randn(hidden, 2 * latent_dim),
            np.r_[np.zeros(latent_dim), -0.7 * np.ones(latent_dim)])]
    x = (rs.uniform(size=(num_images, data_dim)) < 0.5).astype(float)
    return gen, rec, x


def repeated_curves(gen, rec, x, K, repeats):
    """IW estimates from independent seeds: (repeats, len(curve), N) and the Ks."""
    runs = [importance.evaluate(gen, rec, x, iw_samples=K, elbo_samples=1, seed=r)
            for r in range(repeats)]
    ks = list(runs[0]["iw_curve"])
    return np.array([[run["iw_curve"][k] for k in ks] for run in runs]), ks


# ----------------------------------------------------------------------------
# The exact answer
# ----------------------------------------------------------------------------

def test_exact_log_px_agrees_with_monte_carlo_from_the_prior():
    # p(x) = E_{z ~ p(z)}[p(x|z)], estimated with 10^6 prior samples and
    # scipy's Bernoulli pmf: independent of the grid, within 4 standard errors.
    gen, _, x = tiny_model()
    z = np.random.RandomState(0).randn(10 ** 6, 2)
    logits = vae.neural_net_predict(gen, z)
    for image in x[:3]:
        p_x_given_z = np.exp(stats.bernoulli.logpmf(image, expit(logits)).sum(axis=1))
        p_x, se = p_x_given_z.mean(), p_x_given_z.std() / np.sqrt(len(z))
        exact = np.exp(grid.exact_log_px(gen, image[None])[0])
        assert abs(exact - p_x) < 4 * se
        assert se < 0.01 * p_x                                 # the test has power


def test_exact_log_px_has_converged_on_the_grid():
    gen, _, x = tiny_model()
    np.testing.assert_allclose(grid.exact_log_px(gen, x),
                               grid.exact_log_px(gen, x, half_width=8, points=1601),
                               atol=1e-5)


def test_exact_p_x_sums_to_one_over_every_binary_image():
    # sum_x p(x|z) = 1 for every z, so sum_x p(x) is the prior's mass on the
    # grid, 1 up to the tails beyond 6 standard deviations (about 2e-9).
    gen, _, _ = tiny_model(data_dim=4)
    every_image = np.array(np.meshgrid(*[[0.0, 1.0]] * 4)).reshape(4, -1).T
    total = np.exp(logsumexp(grid.exact_log_px(gen, every_image)))
    assert total == pytest.approx(1.0, abs=1e-8)


def test_exact_log_px_of_a_decoder_that_ignores_z_is_the_bernoulli_log_pmf():
    gen, _, x = tiny_model()
    gen[-1] = (np.zeros_like(gen[-1][0]), gen[-1][1])     # logits = b for every z
    expected = stats.bernoulli.logpmf(x, expit(gen[-1][1])).sum(axis=1)
    np.testing.assert_allclose(grid.exact_log_px(gen, x), expected, atol=1e-8)


def separable_model(centre, pixels=20, slope=2.0):
    """A linear decoder whose first `pixels` logits are slope (z_1 - centre_1)
    and the next `pixels` slope (z_2 - centre_2), and one image with half of
    each group on: p(x|z) = f(z_1) g(z_2), so p(x) is the product of two 1-D
    integrals, and the posterior sits near centre (pulled towards 0 by the
    prior). -> (gen_params, x (1, 2 pixels))."""
    W, b = np.zeros((2, 2 * pixels)), np.zeros(2 * pixels)
    for axis in range(2):
        W[axis, axis * pixels:(axis + 1) * pixels] = slope
        b[axis * pixels:(axis + 1) * pixels] = -slope * centre[axis]
    half = np.r_[np.ones(pixels // 2), np.zeros(pixels - pixels // 2)]
    return [(W, b)], np.tile(half, 2)[None]


def quad_log_px_and_mean(gen, x):
    """log p(x) and E[z | x] of separable_model by scipy.integrate.quad, one
    axis at a time on [-40, 40] (no grid): independent of evaluate's grid."""
    (W, b), = gen
    log_px, mean = 0.0, []
    for axis in range(2):
        cols = W[axis] != 0

        def log_f(z):
            logits = W[axis, cols] * z + b[cols]
            return (np.sum(x[0, cols] * log_expit(logits) + (1 - x[0, cols]) * log_expit(-logits))
                    + stats.norm.logpdf(z))
        mode = optimize.minimize_scalar(lambda z: -log_f(z), bounds=(-40, 40),
                                        method="bounded", options={"xatol": 1e-10}).x
        top = log_f(mode)
        kwargs = dict(points=[mode], limit=500, epsabs=1e-13, epsrel=1e-12)
        mass = integrate.quad(lambda z: np.exp(log_f(z) - top), -40, 40, **kwargs)[0]
        first = integrate.quad(lambda z: z * np.exp(log_f(z) - top), -40, 40, **kwargs)[0]
        log_px += top + np.log(mass)
        mean.append(first / mass)
    return log_px, np.array(mean)


@pytest.mark.parametrize("centre", [(7, -9), (-7.5, 8), (0.5, -1)])
def test_the_box_follows_a_posterior_far_outside_the_starting_box(centre):
    # Posterior modes near (6.6, -8.5) and (-7.1, 7.6): [-6, 6]^2 misses them.
    gen, x = separable_model(centre)
    expected, expected_mean = quad_log_px_and_mean(gen, x)
    check = grid.grid_check(gen, x, points=201, moments=True)
    np.testing.assert_allclose(check["log_px"], expected, atol=1e-8)
    np.testing.assert_allclose(check["mean"][0], expected_mean, atol=1e-6)
    assert check["converged"][0]
    far = max(abs(c) for c in centre) > 6
    assert check["widened"][0] == far
    assert (check["half_width"][0] > 8) if far else (check["half_width"][0] == 6.0)
    # The fixed box [-6, 6]^2: far off, and reported as not converged in extent.
    fixed = grid.grid_check(gen, x, points=201, max_half_width=6)
    if far:
        assert fixed["log_px"][0] < expected - 20
        assert not fixed["extent_converged"][0] and not fixed["converged"][0]
    else:
        assert fixed["converged"][0]


def test_only_the_extent_check_sees_a_broad_posterior_cut_by_the_box():
    # A broad posterior around z_2 = 4 (sd about 0.9): on [-6, 6]^2 halving
    # the points changes nothing, yet 0.02 nats of mass lie outside the box.
    gen, x = separable_model((0, 12), pixels=8, slope=1.0)
    expected, _ = quad_log_px_and_mean(gen, x)
    fixed = grid.grid_check(gen, x, points=201, max_half_width=6)
    assert fixed["spacing_converged"][0]
    assert expected - fixed["log_px"][0] > 2 * grid.GRID_TOLERANCE
    assert not fixed["extent_converged"][0] and not fixed["converged"][0]
    widened = grid.grid_check(gen, x, points=201)
    assert widened["converged"][0]
    np.testing.assert_allclose(widened["log_px"], expected, atol=1e-8)


def test_a_box_that_cannot_widen_far_enough_is_not_converged():
    gen, x = separable_model((0, -30))                  # the mode near z_2 = -27
    check = grid.grid_check(gen, x, points=201)
    assert 16 < check["half_width"][0] <= grid.GRID_MAX_HALF_WIDTH
    assert not check["extent_converged"][0] and not check["converged"][0]


def test_the_ordering_check_counts_an_exact_value_below_the_estimate():
    exact = np.array([-10.0, -10.0, -10.0, -10.0])
    iw = np.array([-10.5, -9.0, -9.0, -10.02])         # image 1: 10 s.e. above exact
    se = np.array([0.1, 0.1, 0.1, 0.01])                # image 3: 2 s.e. above, allowed
    converged = np.array([True, True, False, True])     # image 2 is not checked
    o = grid.ordering_check(exact, iw, se, converged)
    assert o["violations"] == 1 and o["violating_images"] == [1]
    assert o["checked_images"] == 3
    assert o["largest_shortfall_in_ses"] == pytest.approx(10.0)


def test_the_report_says_not_exact_and_prints_the_violation():
    rs = np.random.RandomState(0)
    per_image = {"elbo": rs.randn(4) - 12, "log_px_given_z": rs.randn(4), "kl": rs.rand(4),
                 "log_px": np.array([-10.5, -9.0, -9.0, -10.02]),
                 "log_px_se": np.array([0.1, 0.1, 0.1, 0.01]),
                 "iw_curve": {10: rs.randn(4)}, "kl_per_unit": rs.rand(4, 2),
                 "posterior_mean": rs.randn(4, 2)}
    check = {"log_px": np.full(4, -10.0), "half_points": np.full(4, -10.0),
             "log_px_start_box": np.r_[-10.0, -10.0, -30.0, -10.0],
             "widened": np.array([False, False, True, False]),
             "half_width": np.r_[6.0, 6.0, 17.94, 6.0],
             "log_band_fraction": np.r_[-50.0, -50.0, -1.0, -50.0],
             "spacing_converged": np.ones(4, bool),
             "extent_converged": np.array([True, True, False, True])}
    check["converged"] = check["extent_converged"]
    exact = {**check, "grid": {**grid.grid_settings(), **grid.grid_facts(check)}}
    s = evaluate.summarize(per_image, exact)
    assert "exact_log_px" not in s and s["grid_log_px"]["mean"] == -10.0
    assert s["exact_converged_images"] == 3 and s["exact_not_converged_image_indices"] == [2]
    lines = evaluate.exact_lines(s, 4, 10, lambda name, e: name)
    assert lines[0] == "log p(x), grid: NOT exact, 1 images not converged"
    assert ("  The grid converged for 3 of 4 images: halving its points moves log p(x) by "
            "less than 0.01 (fails for 0) and its outer band, 1 wide, holds less than 0.001 "
            "of the mass (fails for 1)") in lines
    assert ("  The box [-6, 6]^2 was widened (same spacing) for 1 images, to at most "
            "[-17.9, 17.9]^2, moving log p(x) by up to 20") in lines
    assert "  Not converged: images 2; their grid values are approximations, not exact" in lines
    assert lines[-1].startswith("PROBLEM: exact < importance weighted - 3 s.e. for 1 of 3 "
                                "converged images (images 1; up to 10.0 s.e.)")


def test_exact_log_px_refuses_other_latent_dimensions():
    gen, _, x = tiny_model(latent_dim=3)
    with pytest.raises(ValueError, match="2-dimensional"):
        grid.exact_log_px(gen, x)


# ----------------------------------------------------------------------------
# The importance-weighted estimator
# ----------------------------------------------------------------------------

def test_log_weight_terms_against_scipy_densities():
    gen, rec, x = tiny_model()
    eps = np.random.RandomState(1).randn(len(x), 3, 2)
    log_px_given_z, log_prior_ratio = importance.log_weight_terms(gen, rec, x, eps)
    q = vae.neural_net_predict(rec, x)
    mean, std = q[:, None, :2], np.exp(q[:, None, 2:])
    z = mean + std * eps
    log_q = stats.norm.logpdf(z, mean, std).sum(-1)
    log_p = stats.norm.logpdf(z).sum(-1)
    logits = vae.neural_net_predict(gen, z.reshape(-1, 2)).reshape(len(x), 3, -1)
    log_lik = stats.bernoulli.logpmf(x[:, None, :], expit(logits)).sum(-1)
    np.testing.assert_allclose(log_prior_ratio, log_p - log_q, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(log_px_given_z, log_lik, rtol=1e-12)


def test_estimate_approaches_the_exact_log_px_as_K_grows():
    gen, rec, x = tiny_model()
    exact = grid.exact_log_px(gen, x)
    estimates, ks = repeated_curves(gen, rec, x, K=10000, repeats=20)
    assert ks == [1, 10, 100, 1000, 10000]
    gap = exact - estimates.mean(axis=0)                       # (len(ks), N)
    se = estimates.std(axis=0, ddof=1) / np.sqrt(len(estimates))
    mean_gap = gap.mean(axis=1)
    assert np.all(np.diff(mean_gap) < 0), mean_gap             # closer with every K
    assert mean_gap[0] > 2.0                                   # K = 1 is far off...
    assert np.all(np.abs(gap[-1]) < 0.05)                      # ...K = 10^4 is not
    # Never above the exact value by more than its standard error (3 s.e.).
    assert np.all(gap > -3 * se), (gap / se).min()


def test_estimate_of_p_x_is_unbiased():
    # E[mean of K weights] = p(x) for every K: the lower bound on log p(x)
    # comes only from the log (Jensen). Checked for p(x) / exact in 4 s.e.,
    # with K large enough that the weights' heavy tail does not dominate.
    gen, rec, x = tiny_model()
    exact = grid.exact_log_px(gen, x)
    estimates, ks = repeated_curves(gen, rec, x, K=10000, repeats=40)
    ratio = np.exp(estimates[:, -1] - exact)                   # (repeats, N)
    se = ratio.std(axis=0, ddof=1) / np.sqrt(len(ratio))
    assert np.all(np.abs(ratio.mean(axis=0) - 1) < 4 * se + 1e-12)
    assert np.all(se < 0.1)                                    # the test has power


def test_K_equal_to_one_is_the_elbo_with_a_sampled_kl():
    gen, rec, x = tiny_model()
    out = importance.evaluate(gen, rec, x, iw_samples=1, elbo_samples=1, seed=3)
    eps = np.stack([rng.standard_normal((1, 2)) for rng in importance.image_rngs(3, range(len(x)))])
    log_px_given_z, log_prior_ratio = importance.log_weight_terms(gen, rec, x, eps)
    np.testing.assert_allclose(out["log_px"], (log_px_given_z + log_prior_ratio)[:, 0],
                               rtol=1e-12)
    # In expectation over z: E[log p(x|z)] - KL, the ELBO with the KL in closed form.
    single = np.array([importance.evaluate(gen, rec, x, 1, 1, seed=r)["log_px"]
                       for r in range(400)])
    elbo = importance.evaluate(gen, rec, x, iw_samples=1, elbo_samples=20000, seed=0)["elbo"]
    se = single.std(axis=0, ddof=1) / np.sqrt(len(single))
    assert np.all(np.abs(single.mean(axis=0) - elbo) < 4 * se)


def test_with_the_same_samples_log_mean_exp_is_at_least_the_mean_log_weight():
    gen, rec, x = tiny_model()
    for seed in range(5):
        eps = np.random.RandomState(seed).randn(len(x), 50, 2)
        log_w = sum(importance.log_weight_terms(gen, rec, x, eps))
        assert np.all(importance.log_mean_exp(log_w) >= log_w.mean(axis=1))


def test_prior_as_proposal_and_a_decoder_that_ignores_z_give_exact_weights():
    # Every weight p(x|z) p(z) / q(z|x) equals p(x): exact for K = 1.
    gen, rec, x = tiny_model()
    gen[-1] = (np.zeros_like(gen[-1][0]), gen[-1][1])
    rec[-1] = (np.zeros_like(rec[-1][0]), np.zeros_like(rec[-1][1]))   # q = N(0, I)
    expected = stats.bernoulli.logpmf(x, expit(gen[-1][1])).sum(axis=1)
    for K in (1, 7):
        out = importance.evaluate(gen, rec, x, iw_samples=K, elbo_samples=K)
        np.testing.assert_allclose(out["log_px"], expected, rtol=1e-12)
        np.testing.assert_allclose(out["elbo"], expected, rtol=1e-12)
        np.testing.assert_allclose(out["kl"], 0, atol=1e-15)


def test_log_mean_exp_is_finite_where_the_naive_formula_underflows():
    a = np.array([-1000.0, -1000.0 + np.log(3.0)])
    with np.errstate(divide="ignore"):
        assert np.log(np.mean(np.exp(a))) == -np.inf
    assert importance.log_mean_exp(a) == pytest.approx(-1000.0 + np.log(2.0), abs=1e-12)


def test_results_do_not_depend_on_chunking_or_on_how_many_images():
    gen, rec, x = tiny_model()
    whole = importance.evaluate(gen, rec, x, iw_samples=30, elbo_samples=40, seed=5)
    chunked = importance.evaluate(gen, rec, x, iw_samples=30, elbo_samples=40, seed=5,
                                max_rows=7)
    first = importance.evaluate(gen, rec, x[:2], iw_samples=30, elbo_samples=40, seed=5)
    for key in ("log_px", "elbo", "log_px_given_z", "kl"):
        np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-13)
        np.testing.assert_allclose(first[key], whole[key][:2], rtol=1e-13)
    assert list(whole["iw_curve"]) == [1, 10, 30]
    np.testing.assert_array_equal(whole["iw_curve"][30], whole["log_px"])


def test_elbo_terms_use_the_closed_form_kl():
    gen, rec, x = tiny_model()
    out = importance.evaluate(gen, rec, x, iw_samples=5, elbo_samples=5)
    q = vae.neural_net_predict(rec, x)
    np.testing.assert_allclose(out["kl"], vae.compute_KL(q), rtol=1e-12)
    np.testing.assert_allclose(out["kl_per_unit"].sum(axis=1), out["kl"], rtol=1e-12)
    np.testing.assert_allclose(out["elbo"], out["log_px_given_z"] - out["kl"], rtol=1e-12)
    np.testing.assert_allclose(out["posterior_mean"], q[:, :2])


def interrupt_at_batch(monkeypatch, batch):
    """Ctrl-C as importance.evaluate starts its batch-th pass over images."""
    calls, original = [], importance.image_rngs

    def image_rngs(seed, indices):
        calls.append(1)
        if len(calls) == batch:
            raise KeyboardInterrupt
        return original(seed, indices)

    monkeypatch.setattr(importance, "image_rngs", image_rngs)


def test_an_interrupted_evaluation_keeps_the_finished_images(monkeypatch):
    gen, rec, x = tiny_model()
    interrupt_at_batch(monkeypatch, 3)
    out = importance.evaluate(gen, rec, x, iw_samples=10, elbo_samples=10, max_rows=20)
    assert out["n_done"] == 4                                  # 2 images per pass
    assert out["log_px"].shape == (4,) and out["kl_per_unit"].shape == (4, 2)
    assert np.all(np.isfinite(out["log_px"]))


# ----------------------------------------------------------------------------
# Diagnostics and conventions
# ----------------------------------------------------------------------------

def test_active_units_threshold_the_variance_of_the_posterior_mean():
    rs = np.random.RandomState(0)
    means = np.column_stack([rs.randn(5000), 0.05 * rs.randn(5000), np.full(5000, 2.0)])
    variance, active = importance.active_units(means)
    np.testing.assert_allclose(variance, [1.0, 0.0025, 0.0], atol=0.05)
    assert active.tolist() == [True, False, False]


def test_mean_and_se():
    values = np.array([1.0, 2.0, 3.0, 6.0])
    mean, se = importance.mean_and_se(values)
    assert mean == 3.0
    assert se == pytest.approx(stats.sem(values))
    assert np.isnan(importance.mean_and_se([1.0])[1])


def test_binarisations():
    images = np.array([[0.0, 0.3, 0.5, 0.51, 1.0]] * 4000)
    thresholded, text = training.binarize_split(images, "threshold")
    assert thresholded[0].tolist() == [0, 0, 0, 1, 1] and "0.5" in text
    sampled, text = training.binarize_split(images, "sample")
    assert "1234" in text
    # Pixel d is 1 with probability images[:, d]: within 4 standard errors.
    p = images[0]
    se = np.sqrt(p * (1 - p) / len(images))
    assert np.all(np.abs(sampled.mean(axis=0) - p) <= 4 * se)
    # The same binarisation as vae.py's test set.
    np.testing.assert_array_equal(
        sampled, vae.binarize(images, np.random.RandomState(training.TEST_BINARIZATION_SEED)))


# ----------------------------------------------------------------------------
# The command line, end to end on a tiny trained checkpoint
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    assert vae.main(["--epochs", "1", "--n-train", "300", "--latent-dim", "2",
                     "--hidden-units", "16", "--output-dir", str(out), "--no-progress"]) == 0
    return out / "checkpoint.npz"


def run_cli(capsys, *argv):
    code = evaluate.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_the_table_and_the_json(tiny_checkpoint, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code, out, _ = run_cli(capsys, tiny_checkpoint, "--n", 30, "--iw-samples", 200,
                           "--elbo-samples", 20, "--exact", "--json", report_path,
                           "--no-progress")
    assert code == 0
    report = json.loads(report_path.read_text())
    s = report["summary"]
    assert report["status"] == "complete" and report["n"] == 30
    assert report["binarization"] == training.TEST_BINARIZATION
    assert "nats per image" in report["units"]
    assert s["log_px"]["mean"] >= s["elbo"]["mean"] - 3 * s["elbo"]["se"]
    assert s["exact_log_px"]["mean"] >= s["log_px"]["mean"] - 3 * s["log_px"]["se"]
    assert s["exact_grid"]["max_change_from_half_the_points"] < 1e-2
    assert s["exact_converged_images"] == 30
    assert s["ordering"]["checked_images"] == 30 and s["ordering"]["violations"] == 0
    assert "  Ordering: exact >= importance weighted - 3 s.e. for all 30 converged images" in out
    assert "NOT exact" not in out and "PROBLEM" not in out
    assert s["latent_dim"] == 2 and len(s["units"]) == 2
    for text in ("Nats per image", "importance weighted, K=200", "exact",
                 "RandomState(1234)", "Active units"):
        assert text in out
    per_image = np.load(report_path.with_suffix(".npz"))
    assert per_image["log_px"].shape == per_image["exact_log_px_half_points"].shape == (30,)
    assert np.mean(per_image["log_px"]) == pytest.approx(s["log_px"]["mean"])


def test_cli_threshold_and_train_split(tiny_checkpoint, capsys):
    code, out, _ = run_cli(capsys, tiny_checkpoint, "--n", 10, "--iw-samples", 10,
                           "--split", "train", "--binarize", "threshold", "--no-progress")
    assert code == 0
    report = json.loads((tiny_checkpoint.parent / "evaluation_train_threshold_n10.json").read_text())
    assert report["split"] == "train" and report["binarization"] == "thresholded: x > 0.5"
    assert "Train set: 10 images (first 10 of 60000)" in out


def test_the_default_report_is_where_metrics_json_points(tiny_checkpoint, capsys):
    metrics = json.loads((tiny_checkpoint.parent / runs.METRICS_NAME).read_text())
    command = metrics["log_likelihood"]["command"].split()
    assert command[:2] == ["python", "evaluate.py"]
    report = Path(metrics["log_likelihood"]["report"])
    assert not report.exists()
    code, _, _ = run_cli(capsys, *command[2:], "--iw-samples", 2, "--elbo-samples", 2,
                         "--no-progress")
    assert code == 0 and report.is_file()


def test_a_partial_evaluation_gets_a_name_of_its_own(tiny_checkpoint, capsys):
    code, _, _ = run_cli(capsys, tiny_checkpoint, "--n", 7, "--iw-samples", 3, "--no-progress")
    report = json.loads((tiny_checkpoint.parent / "evaluation_test_sample_n7.json").read_text())
    assert code == 0 and report["n"] == 7 and report["n_split"] == 10000


def complete_report(path):
    path.write_text(json.dumps({"status": "complete", "n": 10000, "n_split": 10000}))
    return path.read_bytes()


def test_a_partial_evaluation_never_replaces_a_complete_one(tiny_checkpoint, tmp_path, capsys):
    path = tmp_path / "report.json"
    before = complete_report(path)
    code, out, err = run_cli(capsys, tiny_checkpoint, "--n", 5, "--iw-samples", 3,
                             "--json", path, "--no-progress")
    assert code == 1 and path.read_bytes() == before
    assert "log p(x), importance weighted" in out          # the numbers were shown
    assert "Not written" in err and "pass another --json" in err


def test_an_interrupted_evaluation_never_replaces_a_complete_one(tiny_checkpoint, tmp_path,
                                                                 capsys, monkeypatch):
    path = tmp_path / "report.json"
    before = complete_report(path)
    interrupt_at_batch(monkeypatch, 2)
    code, out, _ = run_cli(capsys, tiny_checkpoint, "--n", 50, "--iw-samples", 5000,
                           "--json", path, "--no-progress")
    assert code == 130 and path.read_bytes() == before
    assert "INTERRUPTED" in out


def test_an_unwritable_report_folder_is_refused_before_evaluating(tiny_checkpoint, tmp_path,
                                                                  capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: every folder is writable")
        code, err = refusal(capsys, tiny_checkpoint, "--json", folder / "report.json")
    finally:
        folder.chmod(0o700)
    assert code == 1 and "cannot write into" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where, message", [
    ("folder", "folder is a folder; name a file, for example"),
    ("missing/report.json", "the folder {tmp}/missing does not exist"),
    ("a_file/report.json", "a_file is not a folder"),
    ("report.npz", "name the report .json")])
def test_a_report_path_that_cannot_be_written_is_refused_before_evaluating(
        tiny_checkpoint, tmp_path, capsys, monkeypatch, where, message):
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("")
    code, err = refusal(capsys, tiny_checkpoint, "--json", tmp_path / where)
    assert code == 2 and message.format(tmp=tmp_path) in err
    assert ": error:" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "folder"]   # no stray file
    assert list((tmp_path / "folder").iterdir()) == []


def test_samples_that_cannot_fit_in_memory_are_refused_before_evaluating(
        tiny_checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated"))
    monkeypatch.setattr(evaluate.runs, "available_memory", lambda: 2 ** 30)
    code, err = refusal(capsys, tiny_checkpoint, "--iw-samples", 10 ** 8, "--json",
                        tmp_path / "r.json")
    # Two float64 per sample of the one image of a pass (1.6 GB) and a pass of 8192 rows.
    assert code == 2 and err == ("evaluate.py: error: --iw-samples 100000000 with --elbo-samples "
                                 "100 would need about 1.7 GiB of memory and 1.0 GiB is "
                                 "available; choose a smaller --iw-samples\n")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_mid_evaluation_saves_the_finished_images_like_ctrl_c(
        tiny_checkpoint, tmp_path, capsys, monkeypatch):
    calls, original = [], importance.image_rngs

    def image_rngs(seed, indices):     # SIGTERM to this process as the 6th pass starts
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(seed, indices)

    monkeypatch.setattr(importance, "image_rngs", image_rngs)
    report_path = tmp_path / "report.json"
    code, out, _ = run_cli(capsys, tiny_checkpoint, "--n", 50, "--iw-samples", 5000,
                           "--json", report_path, "--no-progress")
    report = json.loads(report_path.read_text())
    assert code == 143 and report["status"] == "terminated" and report["n"] == 5
    assert "TERMINATED (SIGTERM): these numbers cover the first 5 images only" in out
    assert np.load(report_path.with_suffix(".npz"))["log_px"].shape == (5,)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL     # restored


def test_a_long_evaluation_estimates_its_duration_and_sigterm_saves_a_partial_report(
        tiny_checkpoint, tmp_path):
    # A subprocess on all 10,000 test images: it says how long it will take
    # (stderr is no terminal: lines, not a bar); SIGTERM once it has, then the
    # images finished so far are reported and saved, exit code 143.
    report_path = tmp_path / "report.json"
    process = subprocess.Popen(
        [sys.executable, "evaluate.py", str(tiny_checkpoint), "--iw-samples", "5000",
         "--json", str(report_path)], cwd=Path(evaluate.__file__).parent,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    first = process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert re.fullmatch(r"evaluate\.py: log p\(x\) of 10000 images, K=5000: about \d+ "
                        r"(seconds|minutes) in all \(measured on the first \d+\.\d%\)\n", first)
    assert process.returncode == 143 and "Traceback" not in err
    report = json.loads(report_path.read_text())
    assert report["status"] == "terminated" and 0 < report["n"] < 10000
    assert f"TERMINATED (SIGTERM): these numbers cover the first {report['n']} images" in out


def test_the_report_is_printed_even_when_writing_fails(tiny_checkpoint, tmp_path, capsys,
                                                       monkeypatch):
    def fail(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluate.runs, "atomic_write", fail)
    code, out, err = run_cli(capsys, tiny_checkpoint, "--n", 5, "--iw-samples", 3,
                             "--json", tmp_path / "r.json", "--no-progress")
    assert code == 1 and "log p(x), importance weighted" in out
    assert "No space left on device" in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


def refusal(capsys, *argv):
    """(exit code, stderr) of a command line that evaluate.py refuses."""
    try:
        code = evaluate.main([str(a) for a in argv])
    except SystemExit as e:           # argparse's refusals
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--n", "20000"], "--n 20000 but the test set has 10000 images"),
    (["--iw-samples", "0"], "expected a positive integer"),
])
def test_cli_refuses_bad_arguments(tiny_checkpoint, capsys, argv, message):
    code, err = refusal(capsys, tiny_checkpoint, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_cli_refuses_exact_for_a_latent_space_that_is_not_2d(tiny_checkpoint, tmp_path,
                                                            capsys):
    checkpoint = tmp_path / "three.npz"
    _, _, config, history = checkpoints.load_model(tiny_checkpoint)
    config = dict(config, latent_dim=3)
    checkpoints.save_model(checkpoint, *initial_params(config, "float64", 0), config, history)
    code, err = refusal(capsys, checkpoint, "--exact")
    assert code == 2
    assert "--exact needs a 2-dimensional latent space" in err and "Traceback" not in err


def test_cli_interrupted_reports_and_saves_the_finished_images(tiny_checkpoint, tmp_path,
                                                               capsys, monkeypatch):
    interrupt_at_batch(monkeypatch, 6)
    report_path = tmp_path / "report.json"
    code, out, _ = run_cli(capsys, tiny_checkpoint, "--n", 50, "--iw-samples", 5000,
                           "--json", report_path, "--no-progress")
    report = json.loads(report_path.read_text())
    assert code == 130
    assert report["status"] == "interrupted" and report["n"] == 5
    assert "INTERRUPTED: these numbers cover the first 5 images only" in out
    assert np.load(report_path.with_suffix(".npz"))["log_px"].shape == (5,)


def test_cli_refuses_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bogus = tmp_path / "notes.npz"
    bogus.write_text("not a checkpoint")
    code, _, err = run_cli(capsys, bogus)
    assert code == 1 and "is not a checkpoint written by vae.py" in err


def test_a_tanh_checkpoint_is_evaluated_with_tanh(tmp_path, capsys):
    # The per-image KL is deterministic: it must be the tanh encoder's, not the relu one's.
    out = tmp_path / "tanh"
    assert vae.main(["--epochs", "1", "--n-train", "300", "--latent-dim", "2",
                     "--hidden-units", "16", "--activation", "tanh",
                     "--output-dir", str(out), "--no-progress"]) == 0
    report_path = tmp_path / "report.json"
    code, printed, _ = run_cli(capsys, out / "checkpoint.npz", "--n", 20, "--iw-samples", 10,
                               "--elbo-samples", 5, "--exact", "--json", report_path,
                               "--no-progress")
    assert code == 0 and "tanh units" in printed
    report = json.loads(report_path.read_text())
    assert report["checkpoint"]["activation"] == "tanh"
    gen, rec, _, _ = checkpoints.load_model(out / "checkpoint.npz")
    x, _ = training.binarize_split(load_data()[3][:20], "sample")
    kl = {name: vae.compute_KL(vae.neural_net_predict(rec, x, f))
          for name, f in vae.ACTIVATIONS.items()}
    per_image = np.load(report_path.with_suffix(".npz"))
    np.testing.assert_allclose(per_image["kl"], kl["tanh"], rtol=1e-10)
    assert not np.allclose(per_image["kl"], kl["relu"], rtol=1e-3)
    np.testing.assert_allclose(per_image["exact_log_px"],
                               grid.exact_log_px(gen, x, activation="tanh"), rtol=1e-12)


# ----------------------------------------------------------------------------
# Messages that say what is true: another model's checkpoint, a run being trained
# ----------------------------------------------------------------------------

VARIANT_KINDS = ("gaussian", "laplace", "binary", "autoencoder")


@pytest.fixture(scope="module")
def variant_checkpoints(tmp_path_factory):
    import variants
    folder, paths = tmp_path_factory.mktemp("variants"), {}
    for kind in VARIANT_KINDS:
        assert variants.main([kind, "--n-train", "200", "--epochs", "1", "--batch-size", "100",
                              "--hidden-units", "8", "--latent-dim", "2", "--no-progress",
                              "--output-dir", str(folder / kind)]) == 0
        paths[kind] = folder / kind / runs.CHECKPOINT_NAME
    return paths


@pytest.mark.parametrize("kind", VARIANT_KINDS)
@pytest.mark.parametrize("script", ["evaluate.py", "conditional.py", "vae.py"])
def test_another_model_s_checkpoint_is_named_with_the_scripts_that_read_it(
        variant_checkpoints, capsys, kind, script):
    import conditional
    path = variant_checkpoints[kind]
    before = sorted(p.name for p in path.parent.iterdir())
    main, argv = {"evaluate.py": (evaluate.main, [str(path), "--n", "2"]),
                  "conditional.py": (conditional.main, [str(path), "--n", "2"]),
                  "vae.py": (vae.main, ["--from-checkpoint", str(path)])}[script]
    assert main(argv) == 1
    article = "an" if kind[0] in "aeiou" else "a"
    assert capsys.readouterr().err == (
        f"{script}: error: {path} holds {article} {kind} model written by variants.py "
        f"(`python variants.py {kind}`), and this script reads vae.py's model only; that "
        f"run's figures and metrics.json are beside it, and `python classifier.py --score "
        f"{path}` scores its prior samples\n")
    assert sorted(p.name for p in path.parent.iterdir()) == before


def test_the_script_it_names_reads_the_checkpoint(variant_checkpoints):
    from vaelib import models
    for kind, path in variant_checkpoints.items():
        images, config = models.prior_samples(path, 3)
        assert config["model"] == kind and images.shape == (3, DATA_DIM)




@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_a_report_on_a_run_being_trained_says_so_first_and_in_its_json(tiny_checkpoint,
                                                                      tmp_path, capsys):
    import conditional
    training = tmp_path / "training"
    training.mkdir()
    checkpoint = Path(shutil.copy(tiny_checkpoint, training / runs.CHECKPOINT_NAME))
    note = (f"note: {training} is being trained right now (pid {{}}); this report is of "
            "epoch 1 (of 1 planned) of the checkpoint as it was read")
    holder = hold_lock(training)
    try:
        code, out, _ = run_cli(capsys, checkpoint, "--n", 2, "--iw-samples", 3, "--no-progress",
                               "--json", tmp_path / "report.json")
        assert code == 0 and out.splitlines()[0] == note.format(holder.pid)
        report = json.loads((tmp_path / "report.json").read_text())
        assert next(iter(report)) == "note" and report["note"] == note.format(holder.pid)
        assert conditional.main([str(checkpoint), "--n", "1", "--steps", "5", "--samples", "2",
                                 "--predictive-samples", "5", "--grid-points", "20",
                                 "--no-progress", "--output-dir", str(tmp_path / "c")]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[0] == note.format(holder.pid)
        assert json.loads(next((tmp_path / "c").glob("*.json")).read_text())["note"] == \
            note.format(holder.pid)
        assert vae.main(["--from-checkpoint", str(checkpoint), "--output-dir",
                         str(tmp_path / "f")]) == 0
        assert capsys.readouterr().out.splitlines()[0] == note.format(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    code, out, _ = run_cli(capsys, checkpoint, "--n", 2, "--iw-samples", 3, "--no-progress",
                           "--json", tmp_path / "free.json")
    assert code == 0 and "being trained" not in out
    assert "note" not in json.loads((tmp_path / "free.json").read_text())
