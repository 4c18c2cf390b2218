"""vaelib/models.py and variants.py: Gaussian pixels, a Laplace prior, binary codes and an
autoencoder with a mixture, against scipy.stats and Monte Carlo, their derivatives
against finite differences, and short runs."""
import json
from pathlib import Path

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads
from scipy import stats
from scipy.special import ndtr

import evaluate
from vaelib import models
import variants
from vaelib import checkpoints, mixture, training
from vaelib import networks
import vae


def initial_params(config, dtype, seed):
    """networks.initial_params with the skeleton's init_net_params, as vae.py passes it."""
    return networks.initial_params(config, dtype, seed, vae.init_net_params)


def rand(*shape, seed=0, scale=1.0):
    return scale * np.random.RandomState(seed).randn(*shape)


# ---------------------------------------------------------------- Gaussian pixels

def test_gaussian_log_prob_is_scipy_s_normal_density():
    x = np.random.RandomState(0).uniform(size=(4, 6))
    mean, log_std = np.random.RandomState(1).uniform(size=(4, 6)), rand(6, seed=2, scale=0.5)
    expected = stats.norm.logpdf(x, mean, np.exp(log_std)).sum(axis=1)
    np.testing.assert_allclose(models.gaussian_log_prob(x, mean, log_std), expected,
                               rtol=1e-12)


def test_the_noise_floor_holds_and_vanishes_far_above_it():
    raw = np.array([-50.0, np.log(0.01), 0.0, 3.0])
    log_std = models.noise_log_std(raw, 0.01)
    assert np.all(np.exp(log_std) >= 0.01)
    np.testing.assert_allclose(np.exp(log_std[0]), 0.01, rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_std[1]), 0.01 * np.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(log_std[2:], raw[2:], atol=1e-4)


@pytest.mark.parametrize("per", ["image", "pixel"])
def test_scaled_squared_error_is_a_gaussian_log_density_up_to_a_constant(per):
    sigma = models.squared_error_sigma(1000, per)
    rs = np.random.RandomState(0)
    differences = []
    for _ in range(3):
        x, mean = rs.uniform(size=(1, 784)), rs.uniform(size=(1, 784))
        squared_error = np.sum((x - mean) ** 2) / (784 if per == "pixel" else 1)
        log_density = models.gaussian_log_prob(x, mean, np.log(sigma))[0]
        differences.append(-log_density - 1000 * squared_error)
    np.testing.assert_allclose(differences, differences[0], rtol=1e-12)
    assert sigma == pytest.approx({"image": 0.02236, "pixel": 0.6261}[per], rel=1e-3)


# ---------------------------------------------------------------- the Laplace prior

def test_the_inverse_cdf_is_scipy_s_laplace_quantile():
    u = np.linspace(0.001, 0.999, 101)
    np.testing.assert_allclose(models.laplace_inverse_cdf(u, 0.3, 1.7),
                               stats.laplace.ppf(u, 0.3, 1.7), rtol=1e-12, atol=1e-12)


def test_laplace_from_normal_is_the_inverse_cdf_at_phi_and_finite_in_the_tails():
    # The inverse CDF at u = Phi(eps) is -sign(u - 1/2) log(1 - 2 |u - 1/2|): for
    # u < 1/2 that is log(2 u), and Phi(eps) itself is accurate for eps < 0.
    # (Through u - 1/2 the naive formula loses digits: relative error 3e-9 at eps = 6.)
    eps = np.linspace(-6, 0, 31)[:-1]
    np.testing.assert_allclose(models.standard_laplace_from_normal(eps),
                               np.log(2 * ndtr(eps)), rtol=1e-13)
    np.testing.assert_array_equal(models.standard_laplace_from_normal(-eps),
                                  -models.standard_laplace_from_normal(eps))
    np.testing.assert_allclose(models.standard_laplace_from_normal(np.linspace(-2, 2, 9)),
                               models.laplace_inverse_cdf(ndtr(np.linspace(-2, 2, 9)), 0, 1),
                               rtol=1e-12, atol=1e-15)
    far = np.array([-40.0, 40.0])
    assert np.all(np.isfinite(models.standard_laplace_from_normal(far)))
    with np.errstate(divide="ignore"):   # the naive way: Phi(40) rounds to 1, log(0)
        assert not np.isfinite(models.laplace_inverse_cdf(ndtr(far), 0.0, 1.0)).all()


def test_reparameterised_laplace_samples_have_the_target_distribution():
    mu, log_b = 0.7, np.log(0.4)
    q = np.array([[mu, log_b]])
    eps = rand(200_000, 1, seed=3)
    z = models.laplace_reparameterize(np.repeat(q, len(eps), axis=0), eps).ravel()
    se_mean = np.sqrt(2 * 0.4 ** 2 / len(z))
    assert abs(z.mean() - mu) < 4 * se_mean
    # Var = 2 b^2; the s.e. of a sample variance is sqrt((mu4 - sigma^4) / n), mu4 = 24 b^4.
    se_var = np.sqrt((24 - 4) * 0.4 ** 4 / len(z))
    assert abs(z.var() - 2 * 0.4 ** 2) < 4 * se_var
    assert stats.kstest(z[:20_000], stats.laplace(mu, 0.4).cdf).pvalue > 0.01


def test_laplace_kl_against_monte_carlo_with_scipy_densities():
    q = np.array([[0.8, -0.3, np.log(0.5), np.log(1.3)]])
    tau = 1.5
    kl = models.laplace_kl(q, tau)[0]
    z = models.laplace_reparameterize(np.repeat(q, 400_000, axis=0), rand(400_000, 2, seed=4))
    log_ratio = (stats.laplace.logpdf(z, q[0, :2], np.exp(q[0, 2:]))
                 - stats.laplace.logpdf(z, 0, tau)).sum(axis=1)
    assert abs(kl - log_ratio.mean()) < 4 * log_ratio.std() / np.sqrt(len(log_ratio))


def test_laplace_kl_is_zero_at_the_prior_and_positive_elsewhere():
    tau = 0.7
    at_prior = np.array([[0.0, 0.0, np.log(tau), np.log(tau)]])
    assert models.laplace_kl(at_prior, tau)[0] == pytest.approx(0.0, abs=1e-14)
    assert np.all(models.laplace_kl(rand(50, 4, seed=5), tau) > 0)


def test_derivatives_through_the_inverse_cdf_match_finite_differences():
    eps = rand(5, 3, seed=6)
    check_grads(lambda q: anp.sum(models.laplace_reparameterize(q, eps) ** 2),
                modes=["rev"], order=1)(rand(5, 6, seed=7))
    check_grads(lambda q: anp.sum(models.laplace_kl(q, 1.3)), modes=["rev"],
                order=1)(rand(5, 6, seed=8) + 0.3)


@pytest.mark.parametrize("draw, kurtosis", [("laplace", 3.0), ("normal", 0.0)])
def test_code_statistics_measure_the_shape_of_the_active_units(draw, kurtosis):
    # A linear encoder whose posterior locations are the inputs themselves:
    # three units drawn from the named distribution, one nearly constant.
    rs = np.random.RandomState(0)
    codes = np.c_[getattr(rs, draw)(size=(100_000, 3)) * [1, 2, 5], 0.05 * rs.randn(100_000)]
    encoder = [(np.c_[np.eye(4), np.zeros((4, 4))], np.zeros(8))]
    stats_, standardised = models.code_statistics(encoder, codes, "relu")
    assert stats_["active_units"] == 3 and standardised.shape == (100_000, 3)
    # The s.e. of a sample excess kurtosis is about sqrt(24 / n) for normal data,
    # and larger for heavy tails; 0.1 is about 4 s.e. for the Laplace sample here.
    assert stats_["active_excess_kurtosis"] == pytest.approx(kurtosis, abs=0.1)


# ---------------------------------------------------------------- binary latent units

def test_bernoulli_kl_is_the_direct_sum_over_both_values():
    logits = rand(6, 4, seed=9, scale=3)
    theta = 1 / (1 + np.exp(-logits))
    direct = np.sum(theta * np.log(theta / 0.5) + (1 - theta) * np.log((1 - theta) / 0.5), axis=1)
    np.testing.assert_allclose(models.bernoulli_kl(logits), direct, rtol=1e-12)
    assert np.all(np.isfinite(models.bernoulli_kl(np.array([[-800.0, 800.0]]))))
    assert models.bernoulli_kl(np.array([[-800.0, 800.0]]))[0] == pytest.approx(2 * np.log(2))


def test_logistic_noise_from_normal_is_logistic_and_finite_in_the_tails():
    noise = models.logistic_from_normal(rand(20_000, seed=10))
    assert stats.kstest(noise, stats.logistic.cdf).pvalue > 0.01
    assert np.all(np.isfinite(models.logistic_from_normal(np.array([-40.0, 40.0]))))


def test_relaxed_samples_are_right_on_average_and_harden_as_the_temperature_falls():
    logits = np.array([[-1.5, 0.3, 2.0]])
    eps = rand(100_000, 3, seed=11)
    hard = models.hard_bernoulli(np.repeat(logits, len(eps), axis=0), eps)
    theta = 1 / (1 + np.exp(-logits[0]))
    se = np.sqrt(theta * (1 - theta) / len(eps))
    assert np.all(np.abs(hard.mean(axis=0) - theta) < 4 * se)
    gaps = []
    for temperature in (1.0, 0.3, 0.05):
        relaxed = models.relaxed_bernoulli(np.repeat(logits, len(eps), axis=0), eps, temperature)
        assert np.array_equal(relaxed > 0.5, hard == 1)   # the same side for any temperature
        gaps.append(np.mean(np.abs(relaxed - hard)))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.02


def test_derivatives_through_the_relaxed_samples_match_finite_differences():
    eps = rand(5, 3, seed=12)
    check_grads(lambda l: anp.sum(models.relaxed_bernoulli(l, eps, 0.5) ** 2),
                modes=["rev"], order=1)(rand(5, 3, seed=13))
    check_grads(lambda l: anp.sum(models.bernoulli_kl(l)), modes=["rev"],
                order=1)(rand(5, 3, seed=14))


# ---------------------------------------------------------------- the mixture

def test_mixture_samples_have_the_fitted_moments():
    rs = np.random.RandomState(0)
    codes = np.r_[rs.randn(3000, 2) @ [[1.0, 0.5], [0.0, 0.5]] + [3, 0], rs.randn(1000, 2) - 2]
    fitted = mixture.fit_mixture(codes, 2, seed=0)
    w, mu, cov = fitted["weights"], fitted["means"], fitted["covariances"]
    mean = w @ mu
    second = np.einsum("k,kij->ij", w, cov + mu[:, :, None] * mu[:, None, :])
    samples = mixture.sample_mixture(fitted, np.random.RandomState(1), 200_000)
    se = np.sqrt(np.diag(second - np.outer(mean, mean)) / len(samples))
    assert np.all(np.abs(samples.mean(axis=0) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(samples, rowvar=False), second - np.outer(mean, mean),
                               rtol=0.02)
    np.testing.assert_allclose(w, [0.75, 0.25], atol=0.02)   # the data's own shares


# ---------------------------------------------------------------- training

def small_config(model, **extra):
    return {"model": model, "activation": "relu", "latent_dim": 3, "hidden_units": 20,
            "hidden_layers": 1, **extra}


def tiny_params(config, seed=0):
    return models.initial_params(config, seed, vae.init_net_params)


MODELS = [small_config("gaussian", noise="per-pixel", min_std=0.01),
          small_config("gaussian", noise="shared", min_std=0.01),
          small_config("laplace", prior_scale=1.0), small_config("binary", temperature=0.5),
          small_config("autoencoder")]


@pytest.mark.parametrize("config", MODELS, ids=lambda c: f"{c['model']}-{c.get('noise', '')}")
def test_the_bound_s_gradient_matches_finite_differences(config, mnist_train_subset):
    gen, rec = tiny_params(config)
    data = mnist_train_subset[:5]
    if config["model"] != "gaussian":
        data = (data > 0.5).astype(float)
    objective = models.lower_bound(models.elbo_terms(config))

    def bound(gen, rec):
        return objective(gen, rec, data, np.random.RandomState(0).randn)
    check_grads(bound, argnum=(0, 1), modes=["rev"], order=1)(gen, rec)


@pytest.mark.parametrize("config", MODELS, ids=lambda c: f"{c['model']}-{c.get('noise', '')}")
def test_each_model_trains_and_its_held_out_bound_rises(config, mnist):
    train_images, test_images = mnist[1][:600], mnist[3][:500]
    gen, rec = tiny_params(config)
    grey = config["model"] == "gaussian"
    held_out = test_images if grey else (test_images > 0.5).astype(float)
    terms = models.elbo_terms(config, training=False)   # hard samples for the binary model
    elbos = [training.evaluate_elbo(gen, rec, held_out, terms=terms)["elbo"]]
    objective = training.on_flat_params(models.lower_bound(models.elbo_terms(config)), (gen, rec))
    training.final_params(training.fast_train(
        gen, rec, train_images, training.Settings(3, 100, 3e-3), objective,
        training.in_place_adam(), binarize=not grey),
        lambda end: elbos.append(training.evaluate_elbo(end.gen_params, end.rec_params, held_out,
                                                        terms=terms)["elbo"]))
    assert elbos[1] > elbos[0] + 5 and elbos[3] > elbos[1]


# ---------------------------------------------------------------- the command line

TINY = ["--n-train", "300", "--epochs", "2", "--batch-size", "100", "--hidden-units", "20",
        "--latent-dim", "2", "--no-progress"]


@pytest.mark.parametrize("model", ["gaussian", "laplace", "binary", "autoencoder", "vae"])
def test_a_run_writes_figures_checkpoint_and_metrics(model, tmp_path):
    out = tmp_path / model
    assert variants.main([model, *TINY, "--output-dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["model"] == model
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2]
    assert metrics["epochs"][-1]["test_elbo"] > metrics["epochs"][0]["test_elbo"]
    names = {p.name for p in out.glob("*.png")}
    assert {"samples_from_prior.png", "reconstructions.png", "learning_curve.png",
            "latent_scatter.png", "latent_manifold.png"} <= names
    active = metrics.get("code_statistics", {}).get("active_units", 0)
    assert ("code_histogram.png" in names) == (active > 0)
    assert ("code_statistics" in metrics) == (model in ("vae", "laplace"))
    if model == "autoencoder":   # 2-D codes: the mixture's figure too
        assert {"mixture.npz", "mixture.png"} <= {p.name for p in out.iterdir()}
    with np.load(out / "checkpoint.npz") as checkpoint:
        assert ("noise_b0" in checkpoint.files) == (model == "gaussian")
    images, config = models.prior_samples(out / "checkpoint.npz", 7)
    assert config["model"] == model and images.shape == (7, 784)
    assert np.all((images >= 0) & (images <= 1)) and images.std() > 0


@pytest.mark.parametrize("model, measure", [("autoencoder", "reconstruction log-likelihood"),
                                            ("laplace", "ELBO")])
def test_the_learning_curve_names_the_model_s_objective(model, measure, tmp_path, monkeypatch):
    import plotting
    figures = {}
    monkeypatch.setattr(plotting, "_save", lambda figure, f: figures.setdefault(
        Path(f).name, figure))
    assert variants.main([model, *TINY, "--latent-dim", "3", "--output-dir",
                          str(tmp_path / model)]) == 0
    label = figures["learning_curve.png"].axes[0].get_ylabel()
    assert label.split("\n")[0].removesuffix(" (nats per image, higher is better)") == measure


def test_prior_samples_of_a_vae_py_checkpoint_are_its_decoded_prior_draws(tmp_path):
    out = tmp_path / "vae"
    assert vae.main([*TINY, "--output-dir", str(out)]) == 0
    images, config = models.prior_samples(out / "checkpoint.npz", 5, seed=3)
    gen, _, _, _ = checkpoints.load_model(out / "checkpoint.npz")
    z = np.random.RandomState(3).randn(5, 2)
    np.testing.assert_allclose(images, 1 / (1 + np.exp(-vae.neural_net_predict(gen, z))),
                               rtol=1e-12)
    assert config["model"] == "vae"


def test_a_variant_checkpoint_is_refused_by_the_scripts_of_vae_py_s_model(tmp_path, capsys):
    out = tmp_path / "laplace"
    assert variants.main(["laplace", *TINY, "--epochs", "1", "--output-dir", str(out)]) == 0
    assert evaluate.main([str(out / "checkpoint.npz"), "--n", "2"]) == 1
    err = capsys.readouterr().err
    assert "holds a laplace model written by variants.py" in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["laplace", "--noise", "shared"], "error: unrecognized arguments: --noise shared"),
    (["gaussian", "--prior-scale", "2"], "unrecognized arguments: --prior-scale 2"),
    (["gaussian", "--min-std", "0"], "--min-std"), (["poisson"], "invalid choice"),
    (["vae", "--temperature", "1"], "unrecognized arguments: --temperature 1"),
    (["binary", "--components", "3"], "unrecognized arguments: --components 3"),
    ([], "the following arguments are required: model")])
def test_options_that_do_not_apply_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        variants.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "gaussian"
    assert variants.main(["gaussian", *TINY, "--epochs", "1", "--output-dir", str(out)]) == 0
    assert variants.main(["gaussian", *TINY, "--epochs", "1", "--output-dir", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_more_components_than_training_images_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "autoencoder"
    assert variants.main(["autoencoder", *TINY, "--n-train", "200", "--components", "5000",
                          "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err == (
        "variants.py: error: --components 5000 but the mixture is fitted to the codes of 200 "
        "training images; choose at most 200 components, or a larger --n-train\n")
    assert not out.exists()


def test_a_batch_larger_than_the_training_set_is_refused_as_by_vae_py(tmp_path, capsys):
    out = tmp_path / "binary"
    assert variants.main(["binary", *TINY, "--batch-size", "301", "--output-dir", str(out)]) == 2
    assert capsys.readouterr().err == (
        "variants.py: error: --batch-size 301 is larger than the 300 training images "
        "(--n-train); choose at most 300 (see --help)\n")
    assert not out.exists()


def test_a_failure_after_training_leaves_an_honest_status_and_overwrite_runs_again(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "autoencoder"
    argv = ["autoencoder", *TINY, "--epochs", "1", "--output-dir", str(out)]

    def fail(*args):
        raise ValueError("the mixture failed")
    monkeypatch.setattr(mixture, "fit_mixture", fail)
    with pytest.raises(ValueError, match="the mixture failed"):      # a bug: its traceback
        variants.main(argv)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["error"] == "ValueError: the mixture failed" and len(metrics["epochs"]) == 1
    assert variants.main(argv) == 2
    assert "status failed, 1 of 1 epochs" in capsys.readouterr().err
    monkeypatch.undo()
    assert variants.main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"


def test_a_full_disk_after_training_is_one_line_and_says_so_in_metrics(tmp_path, capsys,
                                                                       monkeypatch):
    out = tmp_path / "vae"

    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(variants, "figures_and_statistics", full)
    assert variants.main(["vae", *TINY, "--epochs", "1", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err == (f"Training stopped: the disk is full (No space left on device) in {out}; "
                   f"{out / 'checkpoint.npz'} holds epoch 1; run again with --overwrite, "
                   "once some space is free\n")
    assert json.loads((out / "metrics.json").read_text())["status"] == "stopped: disk full"


def test_a_new_model_is_one_entry_in_models(tmp_path, monkeypatch, capsys):
    # vae.py's model again under another name, with an option of its own: its
    # subcommand, option, objective and measure come from the entry alone, and
    # it trains exactly as the vae entry does.
    twin = models.Model("twin", "vae.py's model again", "the twin's bound (nats per image)",
                        training.fused_elbo_terms, measure="twin bound",
                        options=(models.Option("tag", 7, "a number", type=int),))
    monkeypatch.setitem(models.MODELS, "twin", twin)
    assert variants.main(["twin", *TINY, "--tag", "8", "--output-dir",
                          str(tmp_path / "twin")]) == 0
    assert "Final test twin bound " in capsys.readouterr().out
    assert variants.main(["vae", *TINY, "--output-dir", str(tmp_path / "vae")]) == 0
    metrics, reference = (json.loads((tmp_path / name / "metrics.json").read_text())
                          for name in ("twin", "vae"))
    assert metrics["objective"] == "the twin's bound (nats per image)"
    assert metrics["config"]["tag"] == 8 and "tag" not in reference["config"]
    assert ([r["test_elbo"] for r in metrics["epochs"]]
            == [r["test_elbo"] for r in reference["epochs"]])
    images, config = models.prior_samples(tmp_path / "twin" / "checkpoint.npz", 3)
    assert config["model"] == "twin" and images.shape == (3, 784)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        variants.main(["laplace", "--tag", "1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(": error: unrecognized arguments: --tag 1 (see --help)\n")
    assert err.count("\n") == 1
