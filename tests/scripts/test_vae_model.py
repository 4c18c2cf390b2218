"""The assignment's functions: closed forms, Monte Carlo within standard errors,
gradient checks, extremes and shapes. Reference values come from scipy or from
hand calculations written out in the comments, never from vae.py itself."""
import warnings

import autograd.numpy.random as npr
import numpy as np
import pytest
import scipy.stats
from autograd import grad
from autograd.misc import flatten
from autograd.test_util import check_grads
from scipy.special import expit, logsumexp

import vae


def random_encoder_output(rs, n, latent_dim, log_std_scale=0.5):
    return np.hstack([rs.randn(n, latent_dim), log_std_scale * rs.randn(n, latent_dim)])


# ---------------------------------------------------------------- sigmoid, relu

def test_sigmoid_matches_the_logistic_function():
    x = np.linspace(-30, 30, 101)
    np.testing.assert_allclose(vae.sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-14)


def test_sigmoid_never_overflows_or_warns():
    x = np.array([-1e308, -1e4, -745.0, 0.0, 745.0, 1e4, 1e308])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = vae.sigmoid(x)
    np.testing.assert_array_equal(y, [0, 0, expit(-745.0), 0.5, 1, 1, 1])


def test_relu_is_max_of_zero_and_x():
    x = np.array([-2.0, -1e-300, 0.0, 1e-300, 3.0])
    np.testing.assert_array_equal(vae.relu(x), np.maximum(0, x))


# ---------------------------------------------------------------- networks

def test_init_net_params_draws_w_then_b_layer_by_layer_from_the_global_stream():
    npr.seed(3)
    params = vae.init_net_params([4, 3, 2], scale=0.5)
    rs = np.random.RandomState(3)
    expected = [(0.5 * rs.randn(4, 3), 0.5 * rs.randn(3)), (0.5 * rs.randn(3, 2), 0.5 * rs.randn(2))]
    for (W, b), (W_ref, b_ref) in zip(params, expected, strict=True):
        np.testing.assert_array_equal(W, W_ref)
        np.testing.assert_array_equal(b, b_ref)


def test_neural_net_predict_relu_hidden_layers_and_linear_output():
    rs = np.random.RandomState(0)
    (W1, b1), (W2, b2) = params = [(rs.randn(3, 4), rs.randn(4)), (rs.randn(4, 2), rs.randn(2))]
    x = rs.randn(5, 3)
    expected = np.maximum(0, x @ W1 + b1) @ W2 + b2   # negative outputs survive: linear last layer
    assert (expected < 0).any()
    np.testing.assert_allclose(vae.neural_net_predict(params, x), expected, rtol=1e-13)
    np.testing.assert_allclose(vae.neural_net_predict(params, x[0]), expected[0], rtol=1e-13)


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("n", [1, 7, 200])
@pytest.mark.parametrize("latent_dim", [1, 2, 50])
def test_shapes(n, latent_dim):
    rs = np.random.RandomState(0)
    q = random_encoder_output(rs, n, latent_dim)
    data_dim = 12
    x = (rs.rand(n, data_dim) > 0.5).astype(float)
    assert vae.sample_latent_variables_from_posterior(q).shape == (n, latent_dim)
    assert vae.compute_KL(q).shape == (n,)
    assert vae.bernoulli_log_prob(x, rs.randn(n, data_dim)).shape == (n,)
    npr.seed(0)
    gen = vae.init_net_params([latent_dim, 5, data_dim])
    rec = vae.init_net_params([data_dim, 5, 2 * latent_dim])
    assert np.shape(vae.vae_lower_bound(gen, rec, x)) == ()


# ---------------------------------------------------------------- sampler

def test_sampler_is_mean_plus_std_times_one_global_randn_draw():
    rs = np.random.RandomState(1)
    q = random_encoder_output(rs, 6, 3)
    npr.seed(7)
    z = vae.sample_latent_variables_from_posterior(q)
    npr.seed(7)
    eps = npr.randn(6, 3)
    np.testing.assert_array_equal(z, q[:, :3] + np.exp(q[:, 3:]) * eps)


def test_sampler_returns_the_mean_when_log_std_is_very_negative():
    mean = np.array([[0.5, -1.0, 2.0], [-3.0, 1.5, -0.75]])
    z = vae.sample_latent_variables_from_posterior(np.hstack([mean, np.full_like(mean, -50.0)]))
    np.testing.assert_array_equal(z, mean)   # exp(-50) * eps is below half an ulp of the mean


def test_sampler_moments_match_mean_and_std_not_variance():
    # One row repeated: mean (1, -2), std (exp(0.7), exp(-0.3)). Reading log_std as
    # log-variance would give std sqrt(exp(0.7)) = 1.42 instead of 2.01: far outside.
    S, mean, log_std = 40000, np.array([1.0, -2.0]), np.array([0.7, -0.3])
    npr.seed(0)
    z = vae.sample_latent_variables_from_posterior(np.tile(np.r_[mean, log_std], (S, 1)))
    std = np.exp(log_std)
    assert np.all(np.abs(z.mean(0) - mean) < 4 * std / np.sqrt(S))
    # The sample variance of a Gaussian has standard error sigma^2 sqrt(2 / (S - 1)).
    assert np.all(np.abs(z.var(0, ddof=1) - std ** 2) < 4 * std ** 2 * np.sqrt(2 / (S - 1)))


# ---------------------------------------------------------------- KL

def test_kl_of_the_prior_is_zero():
    np.testing.assert_array_equal(vae.compute_KL(np.zeros((3, 8))), np.zeros(3))


def test_kl_known_value():
    # mean 1, std 2 in one dimension: 1/2 (sigma^2 + mu^2 - 1 - log sigma^2) = 2 - log 2.
    np.testing.assert_allclose(vae.compute_KL(np.array([[1.0, np.log(2.0)]])), [2 - np.log(2)],
                               rtol=1e-15)


def test_kl_matches_monte_carlo_within_four_standard_errors():
    rs = np.random.RandomState(2)
    latent_dim, S = 3, 200000
    q = random_encoder_output(rs, 4, latent_dim)
    for row in q:
        mean, std = row[:latent_dim], np.exp(row[latent_dim:])
        z = mean + std * rs.randn(S, latent_dim)
        # log q(z) - log p(z), with densities from scipy.stats.
        log_ratio = (scipy.stats.norm.logpdf(z, mean, std).sum(1)
                     - scipy.stats.norm.logpdf(z).sum(1))
        se = log_ratio.std(ddof=1) / np.sqrt(S)
        assert abs(vae.compute_KL(row[None])[0] - log_ratio.mean()) < 4 * se


# ---------------------------------------------------------------- Bernoulli

def test_bernoulli_log_prob_matches_scipy():
    rs = np.random.RandomState(0)
    logits = 5 * rs.randn(4, 30)
    x = (rs.rand(4, 30) > 0.5).astype(float)
    expected = scipy.stats.bernoulli.logpmf(x, expit(logits)).sum(1)
    np.testing.assert_allclose(vae.bernoulli_log_prob(x, logits), expected, rtol=1e-10)


@pytest.mark.parametrize("magnitude", [1e3, 1e4])
def test_bernoulli_log_prob_is_exact_at_extreme_logits_where_the_naive_formula_fails(magnitude):
    x = np.array([[1.0, 1.0, 0.0, 0.0]])
    logits = np.array([[magnitude, -magnitude, magnitude, -magnitude]])
    # Limits: log sigmoid(l) -> 0 for l -> +inf and = l - log1p(exp(-|l|)) ~ l for l -> -inf;
    # log(1 - sigmoid(l)) -> -l for l -> +inf and -> 0 for l -> -inf.
    limits = [0.0, -magnitude, -magnitude, 0.0]
    per_pixel = np.array([vae.bernoulli_log_prob(x[:, [d]], logits[:, [d]])[0] for d in range(4)])
    np.testing.assert_array_equal(per_pixel, limits)
    with np.errstate(all="ignore"):
        p = 1 / (1 + np.exp(-logits))
        naive = x * np.log(p) + (1 - x) * np.log(1 - p)
    assert not np.isfinite(naive).all()


def test_bernoulli_gradient_is_targets_minus_sigmoid_even_at_extreme_logits():
    x = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])
    logits = np.array([[1e4, 1e4, -1e4, -1e4, 0.3]])
    g = grad(lambda l: vae.bernoulli_log_prob(x, l).sum())(logits)
    np.testing.assert_allclose(g, x - expit(logits), atol=1e-15)


# ---------------------------------------------------------------- the bound

def toy_model(seed, data_dim=6, hidden=5):
    """A 1-D latent model small enough to integrate exactly on a grid."""
    npr.seed(seed)
    gen = vae.init_net_params([1, hidden, data_dim], scale=1.5)
    rec = vae.init_net_params([data_dim, hidden, 2], scale=0.8)
    x = (np.random.RandomState(seed).rand(1, data_dim) > 0.5).astype(float)
    return gen, rec, x


def log_px_given_z_on_grid(gen, x, z):
    return vae.bernoulli_log_prob(np.broadcast_to(x, (len(z), x.shape[1])),
                                  vae.neural_net_predict(gen, z[:, None]))


def log_evidence_by_quadrature(gen, x):
    """log p(x) = log integral p(x|z) N(z; 0, 1) dz, trapezoid rule on [-12, 12]."""
    z = np.linspace(-12, 12, 40001)
    log_joint = log_px_given_z_on_grid(gen, x, z) + scipy.stats.norm.logpdf(z)
    return logsumexp(log_joint) + np.log(z[1] - z[0])


def elbo_by_quadrature(gen, rec, x):
    """E_q[log p(x|z)] - KL(q || p) with the expectation on a grid of +-12 sd."""
    mean, log_std = vae.neural_net_predict(rec, x)[0]
    std = np.exp(log_std)
    z = np.linspace(mean - 12 * std, mean + 12 * std, 40001)
    weights = scipy.stats.norm.pdf(z, mean, std) * (z[1] - z[0])
    expected_log_lik = np.sum(weights * log_px_given_z_on_grid(gen, x, z))
    kl = np.log(1 / std) + (std ** 2 + mean ** 2 - 1) / 2   # KL(N(m, s^2) || N(0, 1))
    return expected_log_lik - kl


@pytest.mark.parametrize("seed", range(5))
def test_elbo_never_exceeds_the_log_evidence(seed):
    gen, rec, x = toy_model(seed)
    assert elbo_by_quadrature(gen, rec, x) <= log_evidence_by_quadrature(gen, x)


def elbo_per_image(gen, rec, data, seed):
    """The terms vae_lower_bound averages, with the global stream seeded."""
    npr.seed(seed)
    q_means_and_log_stds = vae.neural_net_predict(rec, data)
    z = vae.sample_latent_variables_from_posterior(q_means_and_log_stds)
    return (vae.bernoulli_log_prob(data, vae.neural_net_predict(gen, z))
            - vae.compute_KL(q_means_and_log_stds))


@pytest.mark.parametrize("seed", range(5))
def test_monte_carlo_elbo_is_unbiased(seed):
    # Over S copies of x the one-sample estimates average to the quadrature
    # value of the ELBO within 4 standard errors.
    gen, rec, x = toy_model(seed)
    S = 20000
    per_image = elbo_per_image(gen, rec, np.repeat(x, S, axis=0), seed)
    se = per_image.std(ddof=1) / np.sqrt(S)
    assert abs(per_image.mean() - elbo_by_quadrature(gen, rec, x)) < 4 * se


def test_lower_bound_is_the_mean_of_the_per_image_terms():
    gen, rec, _ = toy_model(0)
    data = (np.random.RandomState(1).rand(8, 6) > 0.5).astype(float)
    per_image = elbo_per_image(gen, rec, data, seed=3)
    npr.seed(3)
    np.testing.assert_allclose(vae.vae_lower_bound(gen, rec, data), per_image.mean(),
                               rtol=1e-13)


def test_lower_bound_averages_over_the_batch():
    # With the posterior noise switched off (log_std far below zero, so z is
    # the mean), the bound of a batch is the mean of the images' bounds: a sum
    # over the batch would be 7 times larger.
    gen, rec, _ = toy_model(0)
    W, b = rec[-1]
    rec_deterministic = rec[:-1] + [(W * np.array([1.0, 0.0]), b * np.array([1.0, 0.0]) + np.array([0, -60.0]))]
    data = (np.random.RandomState(2).rand(7, 6) > 0.5).astype(float)
    each = [vae.vae_lower_bound(gen, rec_deterministic, row[None, :]) for row in data]
    np.testing.assert_allclose(vae.vae_lower_bound(gen, rec_deterministic, data),
                               np.mean(each), rtol=1e-13)


def test_lower_bound_gradient_matches_finite_differences():
    npr.seed(0)
    gen = vae.init_net_params([2, 4, 10], scale=0.5)
    rec = vae.init_net_params([10, 4, 4], scale=0.5)
    x = (np.random.RandomState(0).rand(5, 10) > 0.5).astype(float)
    flat, unflatten = flatten((gen, rec))

    def objective(flat_params):
        npr.seed(1)   # the same posterior sample at every evaluation
        return vae.vae_lower_bound(*unflatten(flat_params), x)

    check_grads(objective, modes=["rev"], order=1)(flat)


# ---------------------------------------------------------------- Adam

def test_adam_matches_the_published_update_rule():
    # Kingma & Ba 2015, Algorithm 1 (here ascending), written out for two steps.
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    theta, g1, g2 = np.array([1.0, -2.0, 0.5]), np.array([0.3, -4.0, 0.0]), np.array([-0.1, 2.0, 1e-3])
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1 ** 2
    theta1 = theta + lr * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2 ** 2
    theta2 = theta1 + lr * (m2 / (1 - b1 ** 2)) / (np.sqrt(v2 / (1 - b2 ** 2)) + eps)

    params, m, v = theta.copy(), np.zeros(3), np.zeros(3)
    params, m, v = vae.adam_step(params, g1, m, v, 1, lr, b1, b2, eps)
    np.testing.assert_allclose(params, theta1, rtol=1e-15)
    params, m, v = vae.adam_step(params, g2, m, v, 2, lr, b1, b2, eps)
    np.testing.assert_allclose(params, theta2, rtol=1e-15)
    np.testing.assert_allclose(m, m2, rtol=1e-15)
    np.testing.assert_allclose(v, v2, rtol=1e-15)


def test_adam_ascends_to_the_maximum():
    target = np.array([3.0, -1.0])
    objective = lambda p: -np.sum((p - target) ** 2)   # noqa: E731, concave, maximum at target
    params, m, v = np.zeros(2), np.zeros(2), np.zeros(2)
    values = []
    for t in range(1, 2001):
        params, m, v = vae.adam_step(params, grad(objective)(params), m, v, t, learning_rate=0.05)
        values.append(objective(params))
    assert values[-1] > values[0]
    np.testing.assert_allclose(params, target, atol=1e-3)
