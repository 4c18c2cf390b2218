"""The models of variants.py, written once: their lower bounds, sizes,
initialisation, checkpoints and prior samples.

Each model is a function terms(gen_params, rec_params, data, randn) ->
(log p(x|z) (N,), KL (N,)); lower_bound(terms) is the objective vaelib.training.fast_train
maximises. variants.py trains them; classifier.py scores their samples
(prior_samples reads any checkpoint of vae.py or variants.py).

    gaussian      grey levels, p(x|z) = N(x; sigmoid(decoder(z)), diag(sigma^2)),
                  sigma^2 = min_std^2 + exp(2 s) learnt per pixel or shared
    laplace       prior Lap(0, tau), posterior Lap(mu, b); z by the inverse CDF
                  at u = Phi(eps), written as mu - b sign(eps) log(2 Phi(-|eps|))
    binary        Bernoulli(1/2) prior and Bernoulli posterior; relaxed
                  (binary Concrete) samples in training, hard ones otherwise
    autoencoder   no noise and no KL; a Gaussian mixture fitted to the codes
                  serves as the prior afterwards
    vae           vae.py's model (vaelib.training.fused_elbo_terms)
"""
from functools import partial
from pathlib import Path

import autograd.numpy as np
import autograd.numpy.random as npr
import numpy as onp
from scipy.special import log_ndtr

from vaelib import fastgrad
from vaelib import runs
from vaelib import checkpoints, networks
from vaelib.training import fused_elbo_terms
from vaelib.latents import GaussianLatent
from vaelib.networks import cast_params
import vae
from data import DATA_DIM

NOISE_INIT_STD = 0.2        # the Gaussian model's sigma before training
MIXTURE_NAME = "mixture.npz"   # the autoencoder's mixture, beside its checkpoint


# ----------------------------------------------------------------------------
# Gaussian pixels
# ----------------------------------------------------------------------------

def noise_log_std(raw, min_std):
    """log sigma with sigma^2 = min_std^2 + exp(2 raw): smooth, and never below min_std."""
    return 0.5 * np.logaddexp(2 * np.log(min_std), 2 * raw)


def gaussian_log_prob(x, mean, log_std):
    """sum_d log N(x_d; mean_d, exp(log_std_d)^2): x, mean (N, D), log_std
    (D,) or (1,) -> (N,), in nats."""
    return np.sum(-0.5 * ((x - mean) * np.exp(-log_std)) ** 2 - log_std
                  - 0.5 * np.log(2 * np.pi), axis=-1)


def squared_error_sigma(scale, per="image", data_dim=DATA_DIM):
    """The sigma for which scale * squared error is -log N(x; mean, sigma^2)
    up to a constant: scale * sum_d (x_d - m_d)^2 ("image") or scale * the
    mean over pixels ("pixel"), against sum_d (x_d - m_d)^2 / (2 sigma^2)."""
    weight = scale if per == "image" else scale / data_dim
    return (2 * weight) ** -0.5


def gaussian_elbo_terms(gen_params, rec_params, images, randn, activation="relu",
                        min_std=0.01):
    """log p(x|z) (N,) and KL (N,) of the Gaussian-pixel model; gen_params ends
    with the noise layer (W of shape (0, D), b = raw log-std)."""
    decoder, (_, raw) = gen_params[:-1], gen_params[-1]
    q_means_and_log_stds = fastgrad.neural_net_predict(rec_params, images, activation)
    eps = randn(len(images), q_means_and_log_stds.shape[-1] // 2)
    z = fastgrad.reparameterize(q_means_and_log_stds, eps)
    mean = vae.sigmoid(fastgrad.neural_net_predict(decoder, z, activation))
    return (gaussian_log_prob(images, mean, noise_log_std(raw, min_std)),
            fastgrad.compute_KL(q_means_and_log_stds))


def noise_layer(noise, dtype):
    """The learnt log-std as a layer without inputs: (W (0, D or 1), raw (D or 1,))."""
    size = DATA_DIM if noise == "per-pixel" else 1
    return (onp.zeros((0, size), dtype), onp.full(size, onp.log(NOISE_INIT_STD), dtype))


# ----------------------------------------------------------------------------
# The Laplace prior
# ----------------------------------------------------------------------------

def laplace_inverse_cdf(u, loc, scale):
    """The quantile function of Lap(loc, scale) at u in (0, 1)."""
    return loc - scale * onp.sign(u - 0.5) * onp.log1p(-2 * onp.abs(u - 0.5))


def standard_laplace_from_normal(eps):
    """Lap(0, 1) draws from standard normal ones: the inverse CDF at u = Phi(eps),
    written as -sign(eps) log(2 Phi(-|eps|)) (equal, and exact in the tails)."""
    eps = onp.asarray(eps)
    return -onp.sign(eps) * (onp.log(2.0) + log_ndtr(-onp.abs(eps)))


def laplace_reparameterize(q_means_and_log_scales, eps):
    """z = mu + b * e, e ~ Lap(0, 1) from eps: (N, 2L), (N, L) -> (N, L).
    Differentiable in mu and log b; the noise is a constant."""
    mean, log_scale = vae.unpack_gaussian_params(q_means_and_log_scales)
    return mean + np.exp(log_scale) * standard_laplace_from_normal(eps).astype(eps.dtype)


def laplace_kl(q_means_and_log_scales, prior_scale):
    """KL(Lap(mu, b) || Lap(0, tau)) summed over units: (N, 2L) -> (N,).
    Per unit, log(tau / b) + |mu| / tau + (b / tau) exp(-|mu| / b) - 1."""
    mean, log_scale = vae.unpack_gaussian_params(q_means_and_log_scales)
    b = np.exp(log_scale)
    return np.sum(np.log(prior_scale) - log_scale + np.abs(mean) / prior_scale
                  + b / prior_scale * np.exp(-np.abs(mean) / b) - 1, axis=-1)


def laplace_elbo_terms(gen_params, rec_params, binary, randn, activation="relu",
                       prior_scale=1.0):
    """log p(x|z) (N,) and KL (N,) of the Laplace-prior model."""
    q = fastgrad.neural_net_predict(rec_params, binary, activation)
    z = laplace_reparameterize(q, randn(len(binary), q.shape[-1] // 2))
    logits = fastgrad.neural_net_predict(gen_params, z, activation)
    return fastgrad.bernoulli_log_prob(binary, logits), laplace_kl(q, prior_scale)


class LaplaceLatent:
    """write_figures' view of the Laplace latent space (see GaussianLatent)."""

    def __init__(self, prior_scale):
        self.prior_scale = prior_scale

    def sample_prior(self, rs, shape):
        return self.prior_scale * standard_laplace_from_normal(rs.randn(*shape))

    def ppf(self, p):
        return laplace_inverse_cdf(p, 0.0, self.prior_scale)

    reparameterize = staticmethod(laplace_reparameterize)
    locations = staticmethod(GaussianLatent.locations)


# ----------------------------------------------------------------------------
# Binary latent variables
# ----------------------------------------------------------------------------

def logistic_from_normal(eps):
    """Logistic(0, 1) draws, log u - log(1 - u) at u = Phi(eps), from standard
    normal ones, as log Phi(eps) - log Phi(-eps): exact in both tails."""
    eps = onp.asarray(eps)
    return log_ndtr(eps) - log_ndtr(-eps)


def relaxed_bernoulli(logits, eps, temperature):
    """The binary Concrete (Gumbel-sigmoid) relaxation of Bernoulli(sigmoid(logits))
    (Maddison, Mnih and Teh 2017; Jang, Gu and Poole 2017):
    sigmoid((logits + L) / temperature), L ~ Logistic(0, 1) from eps. In (0, 1),
    differentiable in the logits; hard as the temperature falls to 0."""
    return vae.sigmoid((logits + logistic_from_normal(eps).astype(eps.dtype)) / temperature)


def hard_bernoulli(logits, eps):
    """Bernoulli(sigmoid(logits)) draws from the same noise: 1 where logits + L > 0."""
    return (onp.asarray(logits) + logistic_from_normal(eps) > 0).astype(onp.float64)


def bernoulli_kl(logits):
    """KL(Bern(sigmoid(l)) || Bern(1/2)) summed over units, (N, L) -> (N,):
    theta log theta + (1 - theta) log(1 - theta) + log 2, with
    log theta = -softplus(-l) and log(1 - theta) = -softplus(l)."""
    theta = vae.sigmoid(logits)
    return np.sum(np.log(2.0) - theta * np.logaddexp(0.0, -logits)
                  - (1 - theta) * np.logaddexp(0.0, logits), axis=-1)


def binary_elbo_terms(gen_params, rec_params, binary, randn, activation="relu",
                      temperature=2 / 3, hard=False):
    """log p(x|z) (N,) and KL (N,) of the binary-latent model: z relaxed for
    training, or hard (a discrete sample) for an ELBO of the discrete model."""
    logits = fastgrad.neural_net_predict(rec_params, binary, activation)
    eps = randn(*logits.shape)
    z = hard_bernoulli(logits, eps) if hard else relaxed_bernoulli(logits, eps, temperature)
    log_px_given_z = fastgrad.bernoulli_log_prob(
        binary, fastgrad.neural_net_predict(gen_params, z, activation))
    return log_px_given_z, bernoulli_kl(logits)


class BinaryLatent:
    """write_figures' view of binary codes: the prior Bern(1/2), hard samples
    from q, and theta = sigmoid(logits) as the location (decoded as is)."""

    @staticmethod
    def sample_prior(rs, shape):
        return (rs.randn(*shape) > 0).astype(onp.float64)

    @staticmethod
    def ppf(p):
        return p

    reparameterize = staticmethod(hard_bernoulli)
    locations = staticmethod(vae.sigmoid)


# ----------------------------------------------------------------------------
# A deterministic autoencoder, made generative by a Gaussian mixture
# ----------------------------------------------------------------------------

def autoencoder_terms(gen_params, rec_params, binary, randn, activation="relu"):
    """log p(x | decoder(encoder(x))) (N,), and 0 for the KL: no noise, no prior."""
    code = fastgrad.neural_net_predict(rec_params, binary, activation)
    log_px = fastgrad.bernoulli_log_prob(binary,
                                         fastgrad.neural_net_predict(gen_params, code, activation))
    return log_px, 0.0 * log_px


def fit_mixture(codes, components, seed):
    """scikit-learn's GaussianMixture with full covariances on the codes (N, L).
    -> {"weights" (K,), "means" (K, L), "covariances" (K, L, L)}."""
    from sklearn.mixture import GaussianMixture
    mixture = GaussianMixture(n_components=components, covariance_type="full",
                              random_state=seed).fit(codes)
    return {"weights": mixture.weights_, "means": mixture.means_,
            "covariances": mixture.covariances_}


def sample_mixture(mixture, rs, n):
    """n draws from the mixture with RandomState rs: a component by its
    weight, then its Gaussian through the Cholesky factor. -> (n, L)."""
    k = rs.choice(len(mixture["weights"]), size=n, p=mixture["weights"])
    chol = onp.linalg.cholesky(mixture["covariances"])
    eps = rs.randn(n, mixture["means"].shape[1])
    return mixture["means"][k] + onp.einsum("nij,nj->ni", chol[k], eps)


class MixtureLatent:
    """write_figures' view of an autoencoder's codes: the mixture as prior,
    the code itself as the posterior's location and sample, and quantiles of
    the training codes (pooled over coordinates) for the manifold."""

    def __init__(self, mixture, codes):
        self.mixture, self.codes = mixture, codes

    def sample_prior(self, rs, shape):
        return sample_mixture(self.mixture, rs, shape[0])

    def ppf(self, p):
        return onp.quantile(self.codes, p)

    @staticmethod
    def reparameterize(codes, eps):
        return codes

    @staticmethod
    def locations(codes):
        return codes


# ----------------------------------------------------------------------------
# The models, the loop and the evaluation
# ----------------------------------------------------------------------------

def elbo_terms(config, training=True):
    """The model's terms(gen_params, rec_params, data, randn) -> (log p(x|z), KL);
    for the binary model, relaxed samples in training and hard ones otherwise."""
    model, activation = config["model"], config["activation"]
    if model == "binary":
        return partial(binary_elbo_terms, activation=activation,
                       temperature=config["temperature"], hard=not training)
    if model == "autoencoder":
        return partial(autoencoder_terms, activation=activation)
    if model == "gaussian":
        return partial(gaussian_elbo_terms, activation=activation, min_std=config["min_std"])
    if model == "laplace":
        return partial(laplace_elbo_terms, activation=activation,
                       prior_scale=config["prior_scale"])
    return partial(fused_elbo_terms, activation=activation)


def lower_bound(terms):
    """The objective the fast loop maximises: the batch mean of log p(x|z) - KL."""
    def objective(gen_params, rec_params, data, randn):
        log_px_given_z, kl = terms(gen_params, rec_params, data, randn)
        return fastgrad.batch_mean(log_px_given_z - kl)
    return objective


def layer_sizes(config):
    """(generator sizes, recognition sizes): vae.py's, except that the binary
    and autoencoder encoders output L numbers (logits, or the code), not 2L."""
    gen, rec = networks.layer_sizes(config)
    if config["model"] in ("binary", "autoencoder"):
        rec = rec[:-1] + [config["latent_dim"]]
    return gen, rec


def initial_params(config, seed):
    """As networks.initial_params (the global stream seeded, generator first), with
    this model's sizes and, for the Gaussian model, its noise layer."""
    npr.seed(seed)
    gen, rec = (cast_params(vae.init_net_params(sizes), onp.float64)
                for sizes in layer_sizes(config))
    if config["model"] == "gaussian":
        gen = gen + [noise_layer(config["noise"], onp.float64)]
    return gen, rec


def load_model(path):
    """-> (gen_params, rec_params, config, history, mixture or None) of a
    checkpoint written by variants.py or vae.py, validated; gen_params ends
    with the noise layer for the Gaussian model. Raises runs.RunError."""
    def sizes(config):
        gen, rec = layer_sizes({"model": "vae", **config})
        networks = {"gen": gen, "rec": rec}
        if config.get("model") == "gaussian":
            networks["noise"] = [0, DATA_DIM if config["noise"] == "per-pixel" else 1]
        return networks
    networks, config, history = checkpoints.load_checkpoint(path, sizes, written_by="variants.py")
    config.setdefault("model", "vae")
    config.setdefault("activation", checkpoints.DEFAULT_ACTIVATION)
    gen = networks["gen"] + networks.get("noise", [])
    mixture = None
    if config["model"] == "autoencoder":
        mixture_path = Path(path).parent / MIXTURE_NAME
        try:
            with onp.load(mixture_path, allow_pickle=False) as f:
                mixture = {key: f[key] for key in ("weights", "means", "covariances")}
        except (OSError, KeyError, ValueError) as e:
            raise runs.RunError(f"{mixture_path}, the autoencoder's mixture, cannot be read "
                                f"({type(e).__name__}: {e})") from None
    return gen, networks["rec"], config, history, mixture


def prior_samples(path, n, seed=0):
    """n images drawn from the prior of the model in a checkpoint (vae.py's
    or variants.py's), as pixel means in [0, 1]: z from the model's prior
    (the mixture for the autoencoder), decoded. Draws from RandomState(seed).
    -> (images (n, D), config)."""
    gen, rec, config, _, mixture = load_model(path)
    model, rs = config["model"], onp.random.RandomState(seed)
    shape = (n, config["latent_dim"])
    latent = {"laplace": lambda: LaplaceLatent(config.get("prior_scale", 1.0)),
              "binary": lambda: BinaryLatent,
              "autoencoder": lambda: MixtureLatent(mixture, None)}.get(
                  model, lambda: GaussianLatent)()
    decoder = gen[:-1] if model == "gaussian" else gen
    logits = fastgrad.neural_net_predict(decoder, latent.sample_prior(rs, shape),
                                         config["activation"])
    return vae.sigmoid(logits), config
