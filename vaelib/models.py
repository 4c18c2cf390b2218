"""The models of variants.py, written once: their lower bounds, sizes,
initialisation, checkpoints and prior samples, and MODELS, the registry.

A model is one Model record in MODELS: its terms(gen_params, rec_params,
data, randn) -> (log p(x|z) (N,), KL (N,)), its options, its latent space,
its objective's description and the hooks for what it does beyond vae.py's
model (a noise layer, a prior fitted after training, reports and figures).
lower_bound(terms) is the objective training.fast_train maximises. variants.py trains
the models and builds its command line from MODELS; classifier.py scores
their samples (prior_samples reads any checkpoint of vae.py or variants.py).
A new model is its functions here and one entry in MODELS (docs/models.md).
"""
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import autograd.numpy as anp
import autograd.numpy.random as npr
import numpy as np
from scipy.special import log_ndtr

from autograd.scipy.special import expit

from data import DATA_DIM
from plotting import bernoulli_means
from vaelib import arguments, checkpoints, fastgrad, networks
from vaelib.importance import ACTIVE_UNIT_THRESHOLD
from vaelib.mixture import (MIXTURE_NAME, MixtureLatent, check_components, fit_code_mixture,
                            load_mixture, mixture_figure)
from vaelib.training import fused_elbo_terms
from vaelib.latents import GaussianLatent


NOISE_INIT_STD = 0.2        # the Gaussian model's sigma before training
CODE_NEAR_ZERO = 0.1        # share of standardised posterior locations within +- this


# ----------------------------------------------------------------------------
# The record of a model
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Option:
    """A model's own command-line option, --name with underscores as dashes,
    and its key in the run's config (and checkpoint)."""
    name: str
    default: Any
    help: str
    type: Optional[Callable] = None
    choices: Optional[tuple] = None
    metavar: Optional[str] = None

    def add_to(self, parser):
        extra = {key: getattr(self, key) for key in ("type", "choices", "metavar")
                 if getattr(self, key) is not None}
        parser.add_argument("--" + self.name.replace("_", "-"), default=self.default,
                            help=self.help, **extra)


@dataclass(frozen=True)
class Trained:
    """What a model's hooks see after training: the run's config, the
    parameters (gen_params with the noise layer, if any), the training images
    (grey) and labels, the test data as trained on (binarised or grey), and
    the output folder."""
    config: dict
    gen_params: list
    rec_params: list
    train_images: Any
    train_labels: Any
    test_data: Any
    out: Path


def no_options(config, training):
    return {}


def gaussian_latent(config, prior=None):
    return GaussianLatent


@dataclass(frozen=True)
class Model:
    """One model variant. terms(gen_params, rec_params, data, randn,
    activation=..., **term_options(config, training)) -> (log p(x|z), KL);
    training is False for the test-set evaluation (the binary model's hard
    samples). The hooks, where a model has them:

    latent(config, prior)        write_figures' and prior_samples' view of the
                                 latent space (see GaussianLatent); prior
                                 is what load_prior read, or None
    noise_layer(config, dtype)   a learnt layer without inputs appended to the
                                 generator ("noise" in the checkpoint)
    check(config, n_images)      refuses settings before training (RunError)
    fit_prior(trained)           after training, before the figures: fits the
                                 prior and writes it -> (latent, metrics extras)
    load_prior(folder)           reads that prior beside a checkpoint
    reports(trained, latent)     after the figures, each -> (metrics extras,
                                 paths of the figures it wrote)"""
    name: str
    summary: str                     # one line: variants.py --help
    objective: str                   # metrics.json's "objective", printed before training
    terms: Callable
    term_options: Callable = no_options
    options: tuple = ()              # Option records: its own command line and config keys
    measure: str = "ELBO"            # the learning curve's and the last line's name for it
    grey: bool = False               # trained and tested on grey levels, not binarised pixels
    code_size: int = 2               # encoder outputs per latent unit (location and log-scale)
    latent: Callable = gaussian_latent
    noise_layer: Optional[Callable] = None
    check: Optional[Callable] = None
    fit_prior: Optional[Callable] = None
    load_prior: Optional[Callable] = None
    reports: tuple = ()
    files: tuple = ()                # what it may write beyond runs.RUN_FILES

    def layer_sizes(self, config):
        """(generator sizes, recognition sizes): vae.py's, with code_size
        encoder outputs per latent unit."""
        gen, rec = networks.layer_sizes(config)
        return gen, rec[:-1] + [self.code_size * config["latent_dim"]]

    def decoder(self, gen_params):
        """The generator without its noise layer: z -> logits."""
        return gen_params[:-1] if self.noise_layer else gen_params

    def networks(self, gen_params, rec_params):
        """The checkpoint's networks: gen, rec and, with a noise layer, noise."""
        networks = {"gen": self.decoder(gen_params), "rec": rec_params}
        if self.noise_layer:
            networks["noise"] = gen_params[-1:]
        return networks

    def checkpoint_sizes(self, config):
        """{network: layer sizes} of a checkpoint, for checkpoints.load_checkpoint."""
        gen, rec = self.layer_sizes(config)
        networks = {"gen": gen, "rec": rec}
        if self.noise_layer:
            networks["noise"] = [0, len(self.noise_layer(config, np.float64)[1])]
        return networks


# ----------------------------------------------------------------------------
# Gaussian pixels
# ----------------------------------------------------------------------------

def noise_log_std(raw, min_std):
    """log sigma with sigma^2 = min_std^2 + exp(2 raw): smooth, and never below min_std."""
    return 0.5 * anp.logaddexp(2 * anp.log(min_std), 2 * raw)


def gaussian_log_prob(x, mean, log_std):
    """sum_d log N(x_d; mean_d, exp(log_std_d)^2): x, mean (N, D), log_std
    (D,) or (1,) -> (N,), in nats."""
    return anp.sum(-0.5 * ((x - mean) * anp.exp(-log_std)) ** 2 - log_std
                  - 0.5 * anp.log(2 * anp.pi), axis=-1)


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
    mean = expit(fastgrad.neural_net_predict(decoder, z, activation))
    return (gaussian_log_prob(images, mean, noise_log_std(raw, min_std)),
            fastgrad.compute_KL(q_means_and_log_stds))


def noise_layer(noise, dtype):
    """The learnt log-std as a layer without inputs: (W (0, D or 1), raw (D or 1,))."""
    size = DATA_DIM if noise == "per-pixel" else 1
    return (np.zeros((0, size), dtype), np.full(size, np.log(NOISE_INIT_STD), dtype))


def report_noise(trained, latent):
    """The learnt pixel standard deviations, printed and in metrics.json."""
    min_std = trained.config["min_std"]
    sigma = np.exp(noise_log_std(trained.gen_params[-1][1], min_std))
    print(f"Learnt pixel standard deviation: median {np.median(sigma):.3f}, "
          f"range {sigma.min():.3f} to {sigma.max():.3f} (floor {min_std})")
    return {"noise_std": {"min": float(sigma.min()), "median": float(np.median(sigma)),
                          "max": float(sigma.max()), "floor": min_std}}, []


# ----------------------------------------------------------------------------
# The Laplace prior
# ----------------------------------------------------------------------------

def laplace_inverse_cdf(u, loc, scale):
    """The quantile function of Lap(loc, scale) at u in (0, 1)."""
    return loc - scale * np.sign(u - 0.5) * np.log1p(-2 * np.abs(u - 0.5))


def standard_laplace_from_normal(eps):
    """Lap(0, 1) draws from standard normal ones: the inverse CDF at u = Phi(eps),
    written as -sign(eps) log(2 Phi(-|eps|)) (equal, and exact in the tails)."""
    eps = np.asarray(eps)
    return -np.sign(eps) * (np.log(2.0) + log_ndtr(-np.abs(eps)))


def laplace_reparameterize(q_means_and_log_scales, eps):
    """z = mu + b * e, e ~ Lap(0, 1) from eps: (N, 2L), (N, L) -> (N, L).
    Differentiable in mu and log b; the noise is a constant."""
    mean, log_scale = fastgrad.unpack_gaussian_params(q_means_and_log_scales)
    return mean + anp.exp(log_scale) * standard_laplace_from_normal(eps).astype(eps.dtype)


def laplace_kl(q_means_and_log_scales, prior_scale):
    """KL(Lap(mu, b) || Lap(0, tau)) summed over units: (N, 2L) -> (N,).
    Per unit, log(tau / b) + |mu| / tau + (b / tau) exp(-|mu| / b) - 1."""
    mean, log_scale = fastgrad.unpack_gaussian_params(q_means_and_log_scales)
    b = anp.exp(log_scale)
    return anp.sum(anp.log(prior_scale) - log_scale + anp.abs(mean) / prior_scale
                  + b / prior_scale * anp.exp(-anp.abs(mean) / b) - 1, axis=-1)


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
    eps = np.asarray(eps)
    return log_ndtr(eps) - log_ndtr(-eps)


def relaxed_bernoulli(logits, eps, temperature):
    """The binary Concrete (Gumbel-sigmoid) relaxation of Bernoulli(sigmoid(logits))
    (Maddison, Mnih and Teh 2017; Jang, Gu and Poole 2017):
    sigmoid((logits + L) / temperature), L ~ Logistic(0, 1) from eps. In (0, 1),
    differentiable in the logits; hard as the temperature falls to 0."""
    return expit((logits + logistic_from_normal(eps).astype(eps.dtype)) / temperature)


def hard_bernoulli(logits, eps):
    """Bernoulli(sigmoid(logits)) draws from the same noise: 1 where logits + L > 0."""
    return (np.asarray(logits) + logistic_from_normal(eps) > 0).astype(np.float64)


def bernoulli_kl(logits):
    """KL(Bern(sigmoid(l)) || Bern(1/2)) summed over units, (N, L) -> (N,):
    theta log theta + (1 - theta) log(1 - theta) + log 2, with
    log theta = -softplus(-l) and log(1 - theta) = -softplus(l)."""
    theta = expit(logits)
    return anp.sum(anp.log(2.0) - theta * anp.logaddexp(0.0, -logits)
                  - (1 - theta) * anp.logaddexp(0.0, logits), axis=-1)


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
        return (rs.randn(*shape) > 0).astype(np.float64)

    @staticmethod
    def ppf(p):
        return p

    reparameterize = staticmethod(hard_bernoulli)
    locations = staticmethod(expit)


# ----------------------------------------------------------------------------
# A deterministic autoencoder, made generative by a Gaussian mixture
# ----------------------------------------------------------------------------

def autoencoder_terms(gen_params, rec_params, binary, randn, activation="relu"):
    """log p(x | decoder(encoder(x))) (N,), and 0 for the KL: no noise, no prior."""
    code = fastgrad.neural_net_predict(rec_params, binary, activation)
    log_px = fastgrad.bernoulli_log_prob(binary,
                                         fastgrad.neural_net_predict(gen_params, code, activation))
    return log_px, 0.0 * log_px
















# ----------------------------------------------------------------------------
# The shape of the codes (the Gaussian and Laplace posteriors' locations)
# ----------------------------------------------------------------------------

def code_statistics(rec_params, images, activation):
    """How the posterior locations of a test set spread. Inactive units (the
    variance of their location over images at most 0.01, Burda et al. 2016)
    sit at 0 under either prior, so the shape is measured on the active units,
    each standardised over images: the excess kurtosis of the pooled values
    (0 for Gaussian codes, 3 for Laplace ones) and their share within
    +-CODE_NEAR_ZERO. -> (statistics, standardised locations (N, active))."""
    from scipy.stats import kurtosis
    mean, _ = fastgrad.unpack_gaussian_params(fastgrad.neural_net_predict(rec_params, images,
                                                                     activation))
    active = np.var(mean, axis=0) > ACTIVE_UNIT_THRESHOLD
    if not active.any():
        return {"active_units": 0, "latent_dim": int(mean.shape[1])}, mean[:, active]
    standardised = (mean[:, active] - mean[:, active].mean(axis=0)) / mean[:, active].std(axis=0)
    return {"active_units": int(active.sum()), "latent_dim": int(mean.shape[1]),
            "active_excess_kurtosis": float(kurtosis(standardised.ravel())),
            f"active_share_within_{CODE_NEAR_ZERO}_sd": float(
                np.mean(np.abs(standardised) < CODE_NEAR_ZERO))}, standardised


def report_codes(trained, latent):
    """The code statistics of the test set, printed and in metrics.json, and
    the histogram of the active units' standardised locations."""
    import plotting
    config = trained.config
    stats, means = code_statistics(trained.rec_params, trained.test_data, config["activation"])
    if stats["active_units"] == 0:
        print("No active latent unit: every posterior location is the same for all images")
        return {"code_statistics": stats}, []
    path = trained.out / "code_histogram.png"
    plotting.save_histogram(
        means, path, f"test-set posterior locations, {stats['active_units']} "
        f"active units of {config['latent_dim']}, each standardised",
        "location of q(z|x) in standard deviations over images")
    print(f"Posterior locations of the {stats['active_units']} active units, "
          f"standardised: excess kurtosis {stats['active_excess_kurtosis']:.2f}, "
          f"{stats[f'active_share_within_{CODE_NEAR_ZERO}_sd']:.1%} within "
          f"+-{CODE_NEAR_ZERO} sd")
    return {"code_statistics": stats}, [path]


# ----------------------------------------------------------------------------
# The registry: one entry per model
# ----------------------------------------------------------------------------

MODELS = {model.name: model for model in (
    # p(x|z) = N(x; sigmoid(decoder(z)), diag(sigma^2)) on the grey levels,
    # sigma^2 = min_std^2 + exp(2 s) learnt per pixel or shared
    Model("gaussian", "grey-level pixels, Gaussian p(x|z) with a learnt sigma",
          "ELBO with a Gaussian density of the grey levels (nats per image; a density "
          "on [0, 1], not comparable with a Bernoulli log-probability)",
          gaussian_elbo_terms, lambda config, training: {"min_std": config["min_std"]},
          options=(Option("noise", "per-pixel", "one learnt standard deviation per pixel "
                          "or one for all", choices=("per-pixel", "shared")),
                   Option("min_std", 0.01, "the floor of the standard deviation",
                          type=arguments.positive_float)),
          grey=True, noise_layer=lambda config, dtype: noise_layer(config["noise"], dtype),
          reports=(report_noise,)),
    # prior Lap(0, tau), posterior Lap(mu, b); z by the inverse CDF at
    # u = Phi(eps), written as mu - b sign(eps) log(2 Phi(-|eps|))
    Model("laplace", "Laplace prior and posterior",
          "ELBO of binarised pixels, Laplace prior and posterior (nats per image)",
          laplace_elbo_terms, lambda config, training: {"prior_scale": config["prior_scale"]},
          options=(Option("prior_scale", 1.0, "the prior's scale tau, Lap(0, tau) per unit",
                          type=arguments.positive_float, metavar="TAU"),),
          latent=lambda config, prior: LaplaceLatent(config.get("prior_scale", 1.0)),
          reports=(report_codes,), files=("code_histogram.png",)),
    # Bernoulli(1/2) prior and Bernoulli posterior; relaxed (binary Concrete)
    # samples in training, hard ones otherwise
    Model("binary", "binary latent units",
          "ELBO of binarised pixels, Bernoulli(1/2) prior, Bernoulli posterior, with a discrete "
          "sample per image (nats per image; trained on relaxed samples)",
          binary_elbo_terms, lambda config, training: {"temperature": config["temperature"],
                                                       "hard": not training},
          options=(Option("temperature", 2 / 3, "the temperature of the relaxed Bernoulli "
                          "samples in training (default: 2/3, Maddison et al. 2017)",
                          type=arguments.positive_float),),
          code_size=1, latent=lambda config, prior: BinaryLatent),
    # no noise and no KL; a Gaussian mixture fitted to the codes serves as the
    # prior afterwards
    Model("autoencoder", "a deterministic autoencoder with a Gaussian mixture fitted to "
          "its codes",
          "log-likelihood of the reconstruction, log p(x | decoder(encoder(x))), of "
          "binarised pixels (nats per image; not a bound on log p(x))",
          autoencoder_terms,
          options=(Option("components", 10, "Gaussian components of the mixture fitted to "
                          "the codes", type=arguments.positive_int),),
          measure="reconstruction log-likelihood", code_size=1,
          latent=lambda config, prior: MixtureLatent(prior, None), check=check_components,
          fit_prior=fit_code_mixture, load_prior=load_mixture, reports=(mixture_figure,),
          files=(MIXTURE_NAME, "mixture.png")),
    # vae.py's model through variants.py's loop
    Model("vae", "vae.py's model through the same loop",
          "ELBO of binarised pixels, Gaussian prior and posterior (nats per image)",
          fused_elbo_terms, reports=(report_codes,), files=("code_histogram.png",)),
)}


# ----------------------------------------------------------------------------
# Any model: the bound, sizes, initialisation, checkpoints and prior samples
# ----------------------------------------------------------------------------

def model_of(config):
    """The Model of a run's config; vae.py's name none: "vae"."""
    name = config.get("model", "vae")
    if name not in MODELS:
        raise ValueError(f"its model {name!r} is none of {', '.join(MODELS)}")
    return MODELS[name]


def elbo_terms(config, training=True):
    """The model's terms(gen_params, rec_params, data, randn) -> (log p(x|z), KL);
    for the binary model, relaxed samples in training and hard ones otherwise."""
    model = model_of(config)
    return partial(model.terms, activation=config["activation"],
                   **model.term_options(config, training))


def lower_bound(terms):
    """The objective training.fast_train maximises: the batch mean of log p(x|z) - KL."""
    def objective(gen_params, rec_params, data, randn):
        log_px_given_z, kl = terms(gen_params, rec_params, data, randn)
        return fastgrad.batch_mean(log_px_given_z - kl)
    return objective


def layer_sizes(config):
    """(generator sizes, recognition sizes) of the config's model (Model.layer_sizes)."""
    return model_of(config).layer_sizes(config)


def initial_params(config, seed, init_net_params):
    """As networks.initial_params (the global stream seeded, generator first,
    with the assignment's init_net_params, passed in), with this model's sizes
    and its noise layer, if any."""
    model = model_of(config)
    npr.seed(seed)
    gen, rec = (networks.cast_params(init_net_params(sizes), np.float64)
                for sizes in model.layer_sizes(config))
    if model.noise_layer:
        gen = gen + [model.noise_layer(config, np.float64)]
    return gen, rec


def load_model(path):
    """-> (gen_params, rec_params, config, history, prior or None) of a
    checkpoint written by variants.py or vae.py, validated; gen_params ends
    with the noise layer of a model that has one, and the prior is what the
    model's load_prior reads beside it (the autoencoder's mixture). Raises
    runs.RunError."""
    networks, config, history = checkpoints.load_checkpoint(
        path, lambda config: model_of(config).checkpoint_sizes(config), written_by="variants.py")
    config.setdefault("model", "vae")
    config.setdefault("activation", checkpoints.DEFAULT_ACTIVATION)
    gen = networks["gen"] + networks.get("noise", [])
    model = MODELS[config["model"]]
    prior = model.load_prior(Path(path).parent) if model.load_prior else None
    return gen, networks["rec"], config, history, prior


def prior_samples(path, n, seed=0):
    """n images drawn from the prior of the model in a checkpoint (vae.py's
    or variants.py's), as pixel means in [0, 1]: z from the model's prior
    (the mixture for the autoencoder), decoded. Draws from RandomState(seed).
    -> (images (n, D), config)."""
    gen, rec, config, _, prior = load_model(path)
    model, rs = MODELS[config["model"]], np.random.RandomState(seed)
    latent = model.latent(config, prior)
    logits = fastgrad.neural_net_predict(
        model.decoder(gen), latent.sample_prior(rs, (n, config["latent_dim"])),
        config["activation"])
    return bernoulli_means(logits), config
