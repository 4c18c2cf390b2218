"""conditional.py: completing digits by stochastic variational inference.

The pieces are checked against direct computations with scipy.stats on tiny
models, the fit against the exact posterior of a 2-dimensional latent space
(evaluate.py's grid), and the command line end to end on a small checkpoint.
"""
import json

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from scipy import stats
from scipy.special import expit, logsumexp

import conditional
from vaelib import grid, importance, runs, svi
import vae
from plotting import IMAGE_SIDE


def tiny_model(seed=0, data_dim=10, hidden=6, latent_dim=2, num_images=4):
    """A small random tanh VAE and a few random binary images."""
    rs = np.random.RandomState(seed)
    gen = [(1.5 * rs.randn(latent_dim, hidden), 0.5 * rs.randn(hidden)),
           (1.5 * rs.randn(hidden, data_dim), 0.5 * rs.randn(data_dim))]
    rec = [(0.5 * rs.randn(data_dim, hidden), 0.5 * rs.randn(hidden)),
           (0.3 * rs.randn(hidden, 2 * latent_dim), np.zeros(2 * latent_dim))]
    x = (rs.uniform(size=(num_images, data_dim)) < 0.5).astype(float)
    observed = np.arange(data_dim) < data_dim // 2
    return gen, rec, x, observed


def direct_log_px(gen, x_row, pixels, z):
    """sum over the given pixels of scipy's Bernoulli log pmf at z (L,)."""
    p = expit(vae.neural_net_predict(gen, z, anp.tanh))
    return sum(stats.bernoulli.logpmf(x_row[d], p[d]) for d in np.flatnonzero(pixels))


# ---------------------------------------------------------------- masks

@pytest.mark.parametrize("mask", conditional.MASKS)
def test_each_mask_observes_half_the_pixels(mask):
    observed = svi.observed_pixels(mask)
    assert observed.shape == (IMAGE_SIDE ** 2,) and observed.sum() == IMAGE_SIDE ** 2 // 2


def test_masks_are_the_halves_they_name():
    image = np.arange(IMAGE_SIDE ** 2).reshape(IMAGE_SIDE, IMAGE_SIDE)
    half = IMAGE_SIDE // 2
    for mask, part in (("top", image[:half]), ("bottom", image[half:]),
                       ("left", image[:, :half]), ("right", image[:, half:])):
        assert set(np.flatnonzero(svi.observed_pixels(mask))) == set(part.ravel())


# ---------------------------------------------------------------- the objective

def test_the_objective_equals_a_direct_computation():
    gen, _, x, observed = tiny_model()
    q = np.random.RandomState(1).randn(len(x), 4) * 0.5
    eps = np.random.RandomState(2).randn(3, len(x), 2)
    value = svi.svi_objective(q, gen, x, observed, eps, "tanh")
    mean, log_std = q[:, :2], q[:, 2:]
    for n in range(len(x)):
        log_px = np.mean([direct_log_px(gen, x[n], observed, mean[n] + np.exp(log_std[n]) * e)
                          for e in eps[:, n]])
        # KL(N(m, s^2) || N(0, 1)) per unit, from scipy's entropy and a cross entropy.
        s = np.exp(log_std[n])
        kl = np.sum(-stats.norm(mean[n], s).entropy() + 0.5 * np.log(2 * np.pi)
                    + 0.5 * (mean[n] ** 2 + s ** 2))
        assert value[n] == pytest.approx(log_px - kl, rel=1e-10)


def test_missing_pixels_do_not_enter_the_objective_or_its_gradient():
    gen, _, x, observed = tiny_model()
    q = np.random.RandomState(1).randn(len(x), 4) * 0.5
    eps = np.random.RandomState(2).randn(3, len(x), 2)
    flipped = x.copy()
    flipped[:, ~observed] = 1 - flipped[:, ~observed]

    def objective(images):
        return lambda q: anp.sum(svi.svi_objective(q, gen, images, observed, eps, "tanh"))
    assert objective(x)(q) == objective(flipped)(q)
    np.testing.assert_array_equal(grad(objective(x))(q), grad(objective(flipped))(q))
    # ...while an observed pixel does enter.
    flipped[:, observed] = 1 - flipped[:, observed]
    assert objective(x)(q) != objective(flipped)(q)


def test_the_fit_raises_the_objective_and_finds_the_exact_posterior_mean():
    gen, _, x, observed = tiny_model(seed=3, data_dim=30, num_images=5)
    q0 = np.zeros((len(x), 4))
    rngs = importance.image_rngs(0, range(len(x)), 0)
    q, trace = svi.fit_q(gen, x, observed, q0, rngs, steps=1500, samples=10,
                                 learning_rate=0.02, activation="tanh")
    eps = np.random.RandomState(5).randn(2000, len(x), 2)
    start = svi.svi_objective(q0, gen, x, observed, eps, "tanh")
    end = svi.svi_objective(q, gen, x, observed, eps, "tanh")
    assert np.all(end > start + 0.1)
    assert trace[-100:].mean() > trace[:10].mean()
    _, exact_mean, exact_cov = grid.grid_posterior(gen, x, observed, "tanh",
                                                          points=301)
    exact_sd = np.sqrt(np.diagonal(exact_cov, axis1=1, axis2=2))
    # The best diagonal Gaussian under KL(q || p) need not have the posterior's
    # mean when the posterior is skewed; here it lands within half an sd
    # (measured: 0.34 at most), where the start at the prior was 1-3 sds away.
    assert np.all(np.abs(q[:, :2] - exact_mean) < 0.5 * exact_sd)
    assert np.any(np.abs(q0[:, :2] - exact_mean) > exact_sd)


def test_an_image_s_fit_does_not_depend_on_the_other_images():
    gen, _, x, observed = tiny_model()

    def fit(images):
        rngs = importance.image_rngs(7, range(len(images)), 0)
        return svi.fit_q(gen, images, observed, np.zeros((len(images), 4)), rngs,
                                 steps=20, samples=3, learning_rate=0.05, activation="tanh")[0]
    np.testing.assert_allclose(fit(x)[:2], fit(x[:2]), rtol=1e-12)


# ---------------------------------------------------------------- prediction

def test_log_predictive_equals_a_direct_computation():
    gen, _, x, observed = tiny_model()
    z = np.random.RandomState(4).randn(7, len(x), 2)
    value = svi.log_predictive(gen, x, ~observed, z, "tanh")
    for n in range(len(x)):
        direct = logsumexp([direct_log_px(gen, x[n], ~observed, z[k, n]) for k in range(7)])
        assert value[n] == pytest.approx(direct - np.log(7), rel=1e-10)


def test_the_pixel_marginal_is_scipy_s_bernoulli():
    x = (np.random.RandomState(0).uniform(size=(3, 8)) < 0.5).astype(float)
    p = np.random.RandomState(1).uniform(0.05, 0.95, size=8)
    missing = np.arange(8) % 3 == 0
    expected = stats.bernoulli.logpmf(x[:, missing], p[missing]).sum(axis=1)
    np.testing.assert_allclose(svi.log_pixel_marginal(x, missing, p), expected)


def test_smoothed_pixel_probabilities_stay_inside_0_1():
    images = np.zeros((9, 4))
    images[:, 1] = 1
    images[:3, 2] = 0.5
    mean, probability = conditional.training_pixel_mean(images)
    np.testing.assert_allclose(mean, [0, 1, 1 / 6, 0])
    np.testing.assert_allclose(probability, [1 / 11, 10 / 11, 2.5 / 11, 1 / 11])


def test_pixels_given_one_z_are_uncorrelated():
    # p(x_missing | z) factorises over pixels: a predictive with one z has no correlation.
    means = np.random.RandomState(0).uniform(0.1, 0.9, size=(1, 6))
    corr = svi.pixel_correlations(means)
    np.testing.assert_allclose(corr, np.eye(6), atol=1e-12)


def test_predictive_correlations_agree_with_sampled_pixels():
    # A mixture over two z's: x ~ Bernoulli(p_k) with k uniform. The formula
    # against the correlation of 200,000 sampled images, within 5 standard errors
    # (about 1 / sqrt(n) for a correlation near 0.5).
    means = np.array([[0.9, 0.8, 0.2, 0.5], [0.1, 0.3, 0.7, 0.5]])
    rs = np.random.RandomState(0)
    k = rs.randint(2, size=200_000)
    x = (rs.uniform(size=(len(k), 4)) < means[k]).astype(float)
    sampled = np.corrcoef(x, rowvar=False)
    corr = svi.pixel_correlations(means)
    assert abs(corr[0, 1]) > 0.3 and abs(corr[0, 3]) < 1e-12
    np.testing.assert_allclose(corr, sampled, atol=5 / np.sqrt(len(k)))


def test_weights_count_as_repeated_samples():
    means = np.random.RandomState(0).uniform(0.1, 0.9, size=(3, 5))
    repeated = np.repeat(means, [1, 2, 5], axis=0)
    np.testing.assert_allclose(svi.pixel_correlations(means, np.array([1, 2, 5]) / 8),
                               svi.pixel_correlations(repeated), atol=1e-12)


# ---------------------------------------------------------------- the exact answers

def test_grid_log_p_observed_sums_the_missing_pixels_out():
    gen, _, x, observed = tiny_model(data_dim=8)
    missing = np.flatnonzero(~observed)
    completions = np.array([[(c >> i) & 1 for i in range(len(missing))]
                            for c in range(2 ** len(missing))], dtype=float)
    full = np.repeat(x[:1], len(completions), axis=0)
    full[:, missing] = completions
    total = logsumexp(grid.exact_log_px(gen, full, points=201, activation="tanh"))
    log_p_observed, _, _ = grid.grid_posterior(gen, x[:1], observed, "tanh", points=201)
    assert log_p_observed[0] == pytest.approx(total, abs=1e-9)


def test_the_exact_answers_follow_a_posterior_far_outside_the_starting_box():
    # test_evaluate's separable model: the first 20 pixels depend on z_1 only,
    # the other 20 on z_2 only; the posterior sits near (6.6, -8.5). Seeing the
    # first 20, log p(x_observed) and E[z_1 | x_observed] are 1-D integrals
    # (by quad), z_2 keeps its prior, and the conditional is the z_2 integral.
    from test_evaluate import quad_log_px_and_mean, separable_model
    gen, x = separable_model((7, -9))
    observed = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    out = conditional.exact_answers(gen, x, observed, "relu", points=201)
    (W, b), = gen
    log_p_observed, mean = quad_log_px_and_mean([(np.where(observed, W, 0), b)], x)
    log_p_all, _ = quad_log_px_and_mean(gen, x)
    assert out["grid_converged"][0]
    assert out["grid_facts"]["x"]["widened_images"] == 1
    np.testing.assert_allclose(out["log_p_observed"], log_p_observed, atol=1e-8)
    np.testing.assert_allclose(out["exact"], log_p_all - log_p_observed, atol=1e-8)
    np.testing.assert_allclose(out["exact_mean"][0], [mean[0], 0.0], atol=1e-6)
    np.testing.assert_allclose(out["exact_cov"][0, 1, 1], 1.0, atol=1e-6)


def test_the_grid_posterior_of_a_decoder_that_ignores_z_is_the_prior():
    gen, _, x, observed = tiny_model()
    flat = [(0 * W, b) for W, b in gen]
    log_p, mean, cov = grid.grid_posterior(flat, x, observed, "tanh", points=301)
    np.testing.assert_allclose(mean, 0, atol=1e-12)
    np.testing.assert_allclose(cov, np.broadcast_to(np.eye(2), cov.shape), atol=1e-9)
    p = expit(gen[-1][1])[observed]
    np.testing.assert_allclose(log_p, stats.bernoulli.logpmf(x[:, observed], p).sum(axis=1))


# ---------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def checkpoint_2d(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    assert vae.main(["--n-train", "300", "--epochs", "2", "--latent-dim", "2",
                     "--hidden-units", "20", "--hidden-layers", "1", "--activation", "tanh",
                     "--no-progress", "--output-dir", str(out)]) == 0
    return out / runs.CHECKPOINT_NAME


FAST = ["--n", "5", "--steps", "20", "--predictive-samples", "50", "--grid-points", "100",
        "--no-progress"]


@pytest.fixture(scope="module")
def report_2d(checkpoint_2d):
    assert conditional.main([str(checkpoint_2d), *FAST]) == 0
    return json.loads((checkpoint_2d.parent / "conditional_top.json").read_text())


def test_the_report_holds_the_three_scores_and_the_exact_conditional(report_2d):
    scores = report_2d["summary"]["missing_pixels_log_likelihood"]
    assert set(scores) == {"svi", "prior", "pixel_marginal", "exact", "prior_exact"}
    pmi = report_2d["summary"]["pointwise_mutual_information"]
    assert pmi["mean"] == pytest.approx(scores["exact"]["mean"] - scores["prior_exact"]["mean"])
    assert all(np.isfinite([e["mean"], e["se"]]).all() and e["mean"] < 0
               for e in scores.values())
    assert report_2d["settings"] == {"images": "test", "mask": "top", "steps": 20, "samples": 10,
                                     "learning_rate": 0.02, "init": "encoder",
                                     "predictive_samples": 50, "seed": 0, "grid_points": 100}
    assert report_2d["n"] == 5 and report_2d["missing_pixels"] == 392
    assert report_2d["config"]["activation"] == "tanh"


def test_the_run_writes_the_completions_and_the_contours(report_2d, checkpoint_2d):
    folder = checkpoint_2d.parent
    names = ["conditional_top_completions.png", "conditional_top_posteriors.png",
             "conditional_top_correlations.png"]
    assert [p.split("/")[-1] for p in report_2d["figures"]] == names
    assert all((folder / name).stat().st_size > 1000 for name in names)


def test_the_report_is_printed_before_it_is_written(checkpoint_2d, tmp_path, capsys,
                                                    monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(conditional.runs, "write_json", fail)
    with pytest.raises(OSError):
        conditional.main([str(checkpoint_2d), *FAST, "--output-dir", str(tmp_path)])
    assert "SVI predictive" in capsys.readouterr().out


def test_a_second_run_is_refused_and_overwrite_replaces_it(report_2d, checkpoint_2d, capsys):
    assert conditional.main([str(checkpoint_2d), *FAST]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert conditional.main([str(checkpoint_2d), *FAST, "--overwrite", "--seed", "1"]) == 0
    again = json.loads((checkpoint_2d.parent / "conditional_top.json").read_text())
    assert again["settings"]["seed"] == 1


def test_another_mask_writes_its_own_files(checkpoint_2d, tmp_path):
    assert conditional.main([str(checkpoint_2d), *FAST, "--mask", "left", "--init", "prior",
                             "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "conditional_left.json").read_text())
    assert report["settings"]["init"] == "prior" and report["observed_pixels"] == 392


def test_fewer_predictive_samples_than_shown_completions_still_work(checkpoint_2d, tmp_path):
    assert conditional.main([str(checkpoint_2d), "--n", "2", "--steps", "5",
                             "--predictive-samples", "2", "--grid-points", "40",
                             "--no-progress", "--output-dir", str(tmp_path)]) == 0


@pytest.mark.parametrize("images", ["test", "model"])
def test_the_figures_name_their_columns_rows_and_images(checkpoint_2d, tmp_path, monkeypatch,
                                                        images):
    import plotting
    figures = {}
    monkeypatch.setattr(plotting, "_save", lambda figure, f: figures.setdefault(
        f.name.split("_")[-1], figure))
    assert conditional.main([str(checkpoint_2d), "--n", "2", "--steps", "5",
                             "--predictive-samples", "2", "--grid-points", "40", "--images",
                             images, "--no-progress", "--output-dir", str(tmp_path)]) == 0
    completions = figures["completions.png"].axes[0]
    assert [t.get_text() for t in completions.get_xticklabels()] == [
        "original", "observed", "predictive\nmean", "sample 1", "sample 2"]
    assert [t.get_text() for t in completions.get_yticklabels()] == [
        f"{images} image 0", f"{images} image 1"]
    assert completions.get_title().startswith("completions of the missing pixels\n")
    assert [a.get_title() for a in figures["posteriors.png"].axes] == [
        f"{images} image 0", f"{images} image 1"]
    assert figures["correlations.png"].get_suptitle().startswith(f"{images} image 0: ")


def test_model_images_get_their_own_files_beside_the_test_images_run(report_2d, checkpoint_2d):
    folder = checkpoint_2d.parent
    before = {p: p.read_bytes() for p in folder.glob("conditional_top_*.png")}
    assert conditional.main([str(checkpoint_2d), *FAST, "--images", "model"]) == 0
    report = json.loads((folder / "conditional_top_model.json").read_text())
    assert report["images"] == "5 images sampled from the model"
    assert {p: p.read_bytes() for p in before} == before
    assert len(list(folder.glob("conditional_top_model_*.png"))) == 3


def test_on_its_own_samples_a_model_s_halves_share_information():
    # Averaged over images drawn from the model, log p(x_missing | x_observed)
    # - log p(x_missing) is the mutual information of the halves: >= 0. Exact
    # on the grid; 400 images, within 4 standard errors of a non-negative mean.
    gen, _, _, observed = tiny_model(seed=5, data_dim=12)
    x, _ = conditional.model_images(gen, "tanh", 400, seed=0)
    log_p = grid.exact_log_px(gen, x, points=151, activation="tanh")
    log_p_observed = grid.exact_log_px(gen, x, points=151, activation="tanh",
                                           observed=observed)
    log_p_missing = grid.exact_log_px(gen, x, points=151, activation="tanh",
                                          observed=~observed)
    pmi = log_p - log_p_observed - log_p_missing
    assert pmi.mean() > -4 * pmi.std(ddof=1) / np.sqrt(len(pmi))
    assert pmi.mean() > 0.25   # and this model's halves do share information (0.59)


def test_a_latent_space_above_2_has_no_exact_numbers(tmp_path):
    out = tmp_path / "run"
    assert vae.main(["--n-train", "200", "--epochs", "1", "--latent-dim", "3",
                     "--hidden-units", "10", "--no-progress", "--output-dir", str(out)]) == 0
    assert conditional.main([str(out / runs.CHECKPOINT_NAME), *FAST]) == 0
    report = json.loads((out / "conditional_top.json").read_text())
    assert set(report["summary"]["missing_pixels_log_likelihood"]) == {
        "svi", "prior", "pixel_marginal"}
    assert [p.split("_")[-1] for p in report["figures"]] == ["completions.png",
                                                             "correlations.png"]
    assert set(report["summary"]["predictive_correlation"]) == {"note", "svi", "prior"}


@pytest.mark.parametrize("argv", [["--mask", "diagonal"], ["--n", "0"], ["--steps", "-1"],
                                  ["--learning-rate", "0"], ["--init", "zeros"],
                                  ["--grid-points", "3"]])
def test_bad_options_are_refused_in_one_line(checkpoint_2d, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        conditional.main([str(checkpoint_2d), *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and argv[0] in err


def test_more_images_than_the_test_set_is_refused(checkpoint_2d, tmp_path, capsys):
    assert conditional.main([str(checkpoint_2d), "--n", "20000",
                             "--output-dir", str(tmp_path)]) == 2
    assert "--n 20000 but the test set has 10000 images" in capsys.readouterr().err


def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    bad = tmp_path / "checkpoint.npz"
    bad.write_text("not a checkpoint")
    assert conditional.main([str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("conditional.py: error:") and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--grid-points", "100001"], "--grid-points 100001 would need about 298.0 GiB of memory "
                                  "and 16.0 GiB is available; choose a smaller --grid-points"),
    (["--predictive-samples", "100000000"], "--predictive-samples 100000000 for 100 images "
                                            "would need about"),
    (["--samples", "10000000"], "choose a smaller --samples or --n")])
def test_sizes_that_cannot_fit_are_refused_before_any_work(checkpoint_2d, tmp_path, capsys,
                                                         monkeypatch, argv, message):
    monkeypatch.setattr(conditional.runs, "available_memory", lambda: 16 * 2 ** 30)
    monkeypatch.setattr(conditional, "fit_and_predict", lambda *a: pytest.fail("fitted"))
    out = tmp_path / "out"
    assert conditional.main([str(checkpoint_2d), *argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"conditional.py: error: {argv[0]}") and message in err
    assert err.count("\n") == 1 and not out.exists()


def test_the_memory_of_the_grid_and_of_the_samples_grows_as_they_do():
    config = {"latent_dim": 2, "hidden_units": 16, "hidden_layers": 1}
    assert conditional.grid_memory(100001) == 32 * 100001 ** 2          # 298 GiB
    assert conditional.sampling_memory(2000, config) == 2 * conditional.sampling_memory(
        1000, config) == 2000 * 8 * (16 + 32 + 4 * 392)


def test_a_report_path_that_is_a_folder_or_in_a_missing_folder_is_refused(checkpoint_2d,
                                                                          tmp_path, capsys):
    (tmp_path / "conditional_top.json").mkdir()       # where the default report would go
    assert conditional.main([str(checkpoint_2d), *FAST, "--output-dir", str(tmp_path)]) == 2
    assert "conditional_top.json is a folder" in capsys.readouterr().err
    for json_path, message in ((tmp_path, "is a folder"),
                               (tmp_path / "missing" / "r.json", "does not exist")):
        with pytest.raises(SystemExit) as exit_:
            conditional.main([str(checkpoint_2d), *FAST, "--json", str(json_path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and err.count("\n") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["conditional_top.json"]


def test_the_report_says_when_the_grid_did_not_converge(report_2d):
    g = report_2d["summary"]["grid"]
    assert g["converged_images"] == 5 and g["not_converged_image_indices"] == []
    assert set(g["integrals"]) == {"x", "x_observed", "x_missing"}
    facts = {"widened_images": 1, "largest_half_width": 17.94}
    g = {**grid.grid_settings(100), "max_change_from_half_the_points": 0.5,
         "converged_images": 4, "not_converged_image_indices": [3],
         "integrals": {"x": facts, "x_observed": facts, "x_missing": facts}}
    assert conditional.grid_lines(g, 5) == [
        "Grid: 100^2 cells from [-6, 6]^2, widened for 1 images (to at most [-17.9, 17.9]^2); "
        "converged (spacing and extent) for 4 of 5 images; halving the points moves the "
        "conditional by at most 5.0e-01",
        "PROBLEM: the grid did not converge for images 3; the 'exact' rows are approximations "
        "(try more --grid-points)"]
