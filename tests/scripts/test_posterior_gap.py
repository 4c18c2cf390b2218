"""posterior_gap.py: both sides of log p(x) - ELBO = KL(q(z|x) || p(z|x))
against independent computations (Monte Carlo, the posterior on a grid),
training left untouched by the tracking, and the script end to end."""
import json

import numpy as np
import pytest
from autograd.misc import flatten
from scipy import stats
from scipy.special import expit, logsumexp

import posterior_gap
from vaelib import grid
from vaelib import networks
import loops
import vae


def initial_params(config, dtype, seed):
    """networks.initial_params with the skeleton's init_net_params, as vae.py passes it."""
    return networks.initial_params(config, dtype, seed, vae.init_net_params)

SMALL = ["--n-train", "300", "--epochs", "2", "--hidden-units", "20", "--track", "20",
         "--grid-points", "61", "--no-progress"]
SMALL_CONFIG = {"epochs": 2, "batch_size": 200, "latent_dim": 2, "hidden_units": 20,
                "hidden_layers": 1, "activation": "tanh", "learning_rate": 1e-3, "seed": 0}


def tiny_model(seed=0, data_dim=12, hidden=8, num_images=6):
    """A small random tanh VAE with a 2-D latent space whose encoder is a poor
    match to the posterior (gaps of 0.5 to 11 nats), and random binary images.
    Its q's standard deviations reach 0.75, where 20 Gauss-Hermite nodes per
    dimension are off by up to 1e-4 nats and 60 have converged (measured; a
    trained MNIST model's reach 0.4, and 20 nodes agree with 40 to 2e-7).
    -> (gen_params, rec_params, x)."""
    rs = np.random.RandomState(seed)
    gen = [(rs.randn(2, hidden), 0.5 * rs.randn(hidden)),
           (rs.randn(hidden, data_dim), 0.5 * rs.randn(data_dim))]
    rec = [(0.5 * rs.randn(data_dim, hidden), 0.5 * rs.randn(hidden)),
           (0.3 * rs.randn(hidden, 4), np.r_[0.0, 0.0, -1.2, -1.2])]
    x = (rs.uniform(size=(num_images, data_dim)) < 0.5).astype(float)
    return gen, rec, x


def gaussian_q(rec, x):
    """q(z|x) as scipy sees it: mean (N, 1, 2), std (N, 1, 2)."""
    q = vae.neural_net_predict(rec, x, np.tanh)
    return q[:, None, :2], np.exp(q[:, None, 2:])


# ---- The ELBO by quadrature ---------------------------------------------------

def test_hermite_rule_integrates_gaussian_moments_exactly():
    eps, weights = posterior_gap.hermite_rule(nodes=6)
    assert eps.shape == (36, 2)
    assert weights.sum() == pytest.approx(1.0, abs=1e-14)
    # E[eps_1^2 eps_2^4] = 1 * 3 and E[eps_1^6] = 15: degree <= 2 * 6 - 1 is exact.
    assert weights @ (eps[:, 0] ** 2 * eps[:, 1] ** 4) == pytest.approx(3.0, abs=1e-12)
    assert weights @ eps[:, 0] ** 6 == pytest.approx(15.0, abs=1e-12)
    assert weights @ eps[:, 1] ** 3 == pytest.approx(0.0, abs=1e-12)


def test_quadrature_elbo_agrees_with_monte_carlo():
    # E_q[log p(x|z) + log p(z) - log q(z|x)] with scipy's densities and 20000
    # draws per image (the KL sampled too), within 4 standard errors.
    gen, rec, x = tiny_model()
    elbo, log_px_given_z, kl = posterior_gap.quadrature_elbo(gen, rec, x, "tanh")
    mean, std = gaussian_q(rec, x)
    z = mean + std * np.random.RandomState(1).randn(len(x), 20000, 2)
    logits = vae.neural_net_predict(gen, z.reshape(-1, 2), np.tanh).reshape(*z.shape[:2], -1)
    log_w = (stats.bernoulli.logpmf(x[:, None, :], expit(logits)).sum(-1)
             + stats.norm.logpdf(z).sum(-1) - stats.norm.logpdf(z, mean, std).sum(-1))
    se = log_w.std(axis=1, ddof=1) / np.sqrt(z.shape[1])
    assert np.all(np.abs(elbo - log_w.mean(axis=1)) < 4 * se), (elbo - log_w.mean(axis=1)) / se
    assert np.all(se < 0.05)                                   # the test has power
    np.testing.assert_allclose(elbo, log_px_given_z - kl, rtol=1e-14)


# ---- The gap is the KL to the exact posterior -----------------------------------

def test_gap_is_the_kl_from_q_to_the_posterior_on_the_grid():
    # Every binary image of 6 pixels. On the grid, with densities from scipy:
    # p(z|x) = p(x|z) p(z) / p(x), KL = sum_g q(z_g) (log q(z_g) - log p(z_g|x)) dA.
    gen, rec, _ = tiny_model(data_dim=6)
    x = np.array(np.meshgrid(*[[0.0, 1.0]] * 6)).reshape(6, -1).T        # (64, 6)
    tracked = posterior_gap.track_images(gen, rec, x, "tanh", grid_points=301, nodes=60)
    z, log_cell = grid.latent_grid(points=301)
    p = expit(vae.neural_net_predict(gen, z, np.tanh))                     # (G, 6)
    log_joint = (x @ np.log(p).T + (1 - x) @ np.log1p(-p).T
                 + stats.norm.logpdf(z).sum(-1))                           # (64, G)
    log_px = logsumexp(log_joint, axis=1, keepdims=True) + log_cell
    mean, std = gaussian_q(rec, x)
    log_q = stats.norm.logpdf(z, mean, std).sum(-1)                        # (64, G)
    kl = np.sum(np.exp(log_q + log_cell) * (log_q - (log_joint - log_px)), axis=1)
    np.testing.assert_allclose(tracked["log_px"], log_px[:, 0], rtol=1e-12)
    np.testing.assert_allclose(tracked["gap"], kl, atol=1e-6)
    assert np.all(tracked["gap"] > 0)
    assert tracked["gap"].max() > 0.5                          # not 0 = 0


# ---- Training is vae.py's ----------------------------------------------------------

def plain_training(images):
    """vae.train with SMALL_CONFIG, no tracking, as vae.py runs it."""
    gen, rec = initial_params(SMALL_CONFIG, "float64", 0)
    return loops.train(loops.SKELETON, gen, rec, images, 2, 200, 1e-3, activation="tanh")[0]


def test_a_draw_from_the_global_stream_would_change_training(mnist):
    # What the end-to-end comparison below guards against.
    images = mnist[1][:300]
    binary = vae.binarize(images[:20], np.random.RandomState(0))
    tracked = posterior_gap.train_and_track(SMALL_CONFIG, images, binary, 61,
                                            lambda record, now: np.random.rand())
    assert not np.array_equal(flatten(tracked)[0], flatten(plain_training(images))[0])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gap") / "run"
    assert posterior_gap.main(SMALL + ["--output-dir", str(out)]) == 0
    return out


def test_tracking_leaves_the_trained_parameters_bit_identical(small_run, mnist):
    gen, rec = plain_training(mnist[1][:300])
    with np.load(small_run / posterior_gap.ARRAYS_NAME) as arrays:
        for name, net in (("gen", gen), ("rec", rec)):
            for i, (W, b) in enumerate(net):
                np.testing.assert_array_equal(arrays[f"{name}_W{i}"], W)
                np.testing.assert_array_equal(arrays[f"{name}_b{i}"], b)


def test_the_run_writes_its_report_and_figure(small_run):
    report = json.loads((small_run / posterior_gap.JSON_NAME).read_text())
    assert report["status"] == "complete"
    assert report["vae_command"].startswith("python vae.py --latent-dim 2 ")
    assert [r["epoch"] for r in report["epochs"]] == [0, 1, 2]
    for record in report["epochs"][1:]:
        assert {"train_elbo", "elbo", "log_px", "gap", "images_elbo_rose", "images_gap_grew",
                "seconds", "tracking_seconds"} <= set(record)
        assert record["gap"]["mean"] == pytest.approx(
            record["log_px"]["mean"] - record["elbo"]["mean"], abs=1e-9)
    assert report["summary"]["image_epoch_pairs"] == 2 * 20
    assert report["convergence"]["grid"]["max_abs_difference"] < 1e-3
    assert report["convergence"]["quadrature"]["max_abs_difference"] < 1e-3
    with np.load(small_run / posterior_gap.ARRAYS_NAME) as arrays:
        assert arrays["elbo"].shape == arrays["log_px"].shape == (3, 20)
    assert (small_run / posterior_gap.FIGURE_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_run_into_the_same_folder_is_refused(small_run, capsys):
    before = (small_run / posterior_gap.JSON_NAME).read_bytes()
    assert posterior_gap.main(SMALL + ["--output-dir", str(small_run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert (small_run / posterior_gap.JSON_NAME).read_bytes() == before


def test_an_interrupted_run_keeps_what_was_tracked(tmp_path, monkeypatch):
    calls, track = [], posterior_gap.track_images

    def interrupted_at_epoch_2(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return track(*args)
    monkeypatch.setattr(posterior_gap, "track_images", interrupted_at_epoch_2)
    assert posterior_gap.main(SMALL + ["--output-dir", str(tmp_path)]) == 130
    report = json.loads((tmp_path / posterior_gap.JSON_NAME).read_text())
    assert report["status"] == "interrupted"
    assert [r["epoch"] for r in report["epochs"]] == [0, 1]
    assert report["summary"]["epochs_compared"] == 1


@pytest.mark.parametrize("argv", [["--track", "0"], ["--grid-points", "1"], ["--epochs", "0"],
                                  ["--track", "301"]])
def test_bad_options_are_refused_in_one_line(argv, tmp_path, capsys):
    try:
        code = posterior_gap.main(SMALL + argv + ["--output-dir", str(tmp_path)])
    except SystemExit as e:           # argparse's refusals
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("epochs", [2, 3, 7])
def test_the_figure_s_epoch_axis_has_whole_epochs_only(epochs):
    records = [{"epoch": e, "elbo": {"mean": -200.0 + e}, "log_px": {"mean": -199.0 + e},
                "gap": {"mean": 1.0 + 0.1 * e, "se": 0.05}} for e in range(epochs)]
    figure = posterior_gap.gap_figure(records, [1])
    figure.canvas.draw()
    top, bottom = figure.axes
    low, high = bottom.get_xlim()
    ticks = [t for t in bottom.get_xticks() if low <= t <= high]
    assert len(ticks) >= 2 and all(t == int(t) for t in ticks)
    assert bottom.get_xlabel() == "epoch"


# ---- The checks that must hold -----------------------------------------------

def test_a_posterior_far_outside_the_starting_box_keeps_its_gap_positive():
    # The separable model of test_evaluate: the posterior near (6.6, -8.5). An
    # encoder that ignores x puts q at (6.5, -8.4) with sd 0.25.
    from test_evaluate import quad_log_px_and_mean, separable_model
    gen, x = separable_model((7, -9))
    rec = [(np.zeros((x.shape[1], 4)), np.r_[6.5, -8.4, np.log(0.25), np.log(0.25)])]
    tracked = posterior_gap.track_images(gen, rec, x, "tanh", grid_points=201, nodes=40)
    expected, _ = quad_log_px_and_mean(gen, x)
    np.testing.assert_allclose(tracked["log_px"], expected, atol=1e-8)
    assert tracked["converged"][0] and 0 < tracked["gap"][0] < 5
    # On the fixed box [-6, 6]^2 the "gap" would be about -33 nats.
    fixed = grid.grid_check(gen, x, points=201, max_half_width=6)["log_px"]
    assert fixed[0] - tracked["elbo"][0] < -20


def test_a_negative_gap_is_a_problem_and_withholds_the_conclusion():
    elbo = np.array([[-200.0, -190.0], [-150.0, -140.0], [-149.0, -139.5]])
    log_px = elbo + np.array([[3.0, 2.0], [1.0, 0.5], [1.5, -0.3]])   # image 1, epoch 2: -0.3
    allowance = np.full(elbo.shape, 0.01)
    s = posterior_gap.summarize([0, 1, 2], elbo, log_px, np.ones(elbo.shape, bool), allowance)
    assert s["checks"]["pairs_negative_gap"] == 1
    assert s["checks"]["negative_gap_pairs_image_epoch"] == [[1, 2]]
    text = posterior_gap.format_summary(s, None, 2)
    assert ("PROBLEM: the gap, a KL divergence, is negative beyond the grid's error for 1 of 6 "
            "(image, epoch) pairs (image 1 epoch 2)") in text
    assert text.splitlines()[-1] == ("No conclusion: the numbers above break the checks that "
                                     "must hold (try more --grid-points)")
    # Within the grid's error (allowance 0.5) it is no violation, and the conclusion stands.
    s = posterior_gap.summarize([0, 1, 2], elbo, log_px, np.ones(elbo.shape, bool),
                                allowance + 0.5)
    assert s["checks"]["pairs_negative_gap"] == 0
    text = posterior_gap.format_summary(s, None, 2)
    assert "PROBLEM" not in text
    assert ("Checks: in all 6 (image, epoch) pairs the grid converged (spacing and extent) and "
            "the gap is >= 0 within the grid's error") in text
    assert text.splitlines()[-1] == "So a rising ELBO does not imply a shrinking KL(q(z|x) || p(z|x))."
    # A grid that did not converge is a problem too.
    converged = np.ones(elbo.shape, bool)
    converged[1, 0] = False
    s = posterior_gap.summarize([0, 1, 2], elbo, log_px, converged, allowance + 0.5)
    text = posterior_gap.format_summary(s, None, 2)
    assert ("PROBLEM: the grid did not converge (spacing or extent) for 1 of 6 (image, epoch) "
            "pairs; their log p(x) is not exact") in text
    assert text.splitlines()[-1].startswith("No conclusion")
