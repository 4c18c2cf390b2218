"""Other likelihoods and priors, trained with vae.py's networks, Adam and loop.

    python variants.py gaussian    grey-level pixels: p(x|z) = N(x; sigmoid(decoder(z)), diag(sigma^2))
    python variants.py laplace     prior Lap(0, tau), posterior Lap(mu, b)
    python variants.py vae         vae.py's model through the same loop, for comparison

Each model is a lower bound, objective(gen_params, rec_params, data, randn),
handed to vae.train; nothing in vae.py knows which one runs. All train with
one value-and-gradient pass per step and noise from
numpy.random.default_rng(seed) (vae.py's fast loop): the Bernoulli models on
pixels binarised afresh every batch, the Gaussian one on the grey levels.

gaussian: the decoder's output through a sigmoid is the mean; the standard
deviation is learnt, one per pixel or one shared (--noise), as
sigma = sqrt(min_std^2 + exp(2 s)) so that it never falls below --min-std
(border pixels are 0 in every image: without a floor the density there grows
without bound). Its log-density is in nats per image, like the Bernoulli
log-probability, but a density on [0, 1] is not a probability and the two
numbers cannot be compared (docs/models.md).

laplace: KL(Lap(mu, b) || Lap(0, tau)) in closed form; z by the inverse CDF
of a uniform u, z = mu - b sign(u - 1/2) log(1 - 2 |u - 1/2|), with
u = Phi(eps) from the loop's standard normal noise, computed as
z = mu - b sign(eps) log(2 Phi(-|eps|)) so that no digits are lost in the tails.

Units: nats per image, summed over pixels, averaged over images.
"""
import sys
import time
from functools import partial
from pathlib import Path

import autograd.numpy as np
import autograd.numpy.random as npr
import numpy as onp
from autograd import value_and_grad
from scipy.special import log_ndtr

import data
import fastgrad
import runs
import vae
from data import DATA_DIM
from evaluate import ACTIVE_UNIT_THRESHOLD

NOISE_INIT_STD = 0.2        # the Gaussian model's sigma before training
CODE_NEAR_ZERO = 0.1        # share of standardised posterior locations within +- this


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
    """write_figures' view of the Laplace latent space (see vae.GaussianLatent)."""

    def __init__(self, prior_scale):
        self.prior_scale = prior_scale

    def sample_prior(self, rs, shape):
        return self.prior_scale * standard_laplace_from_normal(rs.randn(*shape))

    def ppf(self, p):
        return laplace_inverse_cdf(p, 0.0, self.prior_scale)

    reparameterize = staticmethod(laplace_reparameterize)
    locations = staticmethod(vae.GaussianLatent.locations)


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
    return partial(vae.fused_elbo_terms, activation=activation)


def lower_bound(terms):
    """The objective vae.train maximises: the batch mean of log p(x|z) - KL."""
    def objective(gen_params, rec_params, data, randn):
        log_px_given_z, kl = terms(gen_params, rec_params, data, randn)
        return fastgrad.batch_mean(log_px_given_z - kl)
    return objective


def grey_level_step(objective, flat_params, like, learning_rate, seed):
    """vae.fast_step without binarisation: the objective sees the grey levels."""
    update = vae.adam_updater(flat_params, learning_rate)
    rng = onp.random.default_rng(seed)
    objective_and_grad = value_and_grad(vae.on_flat_params(objective, like))

    def step(images, t):
        elbo, gradient = objective_and_grad(
            flat_params, images, lambda *shape: rng.standard_normal(shape, dtype=images.dtype))
        update(gradient, t)
        return elbo
    return step


def evaluate(terms, gen_params, rec_params, images, seed=vae.TEST_POSTERIOR_SEED):
    """The bound on a fixed data set, noise from RandomState(seed): comparable
    across epochs. -> {"elbo", "log_px_given_z", "kl"}, means over images."""
    rs = onp.random.RandomState(seed)
    parts = [terms(gen_params, rec_params, images[i:i + vae.EVAL_BATCH_SIZE], rs.randn)
             for i in range(0, len(images), vae.EVAL_BATCH_SIZE)]
    log_px_given_z = onp.concatenate([p[0] for p in parts])
    kl = onp.concatenate([p[1] for p in parts])
    return {"elbo": float(onp.mean(log_px_given_z - kl)),
            "log_px_given_z": float(onp.mean(log_px_given_z)), "kl": float(onp.mean(kl))}


def code_statistics(rec_params, images, activation):
    """How the posterior locations of a test set spread. Inactive units (the
    variance of their location over images at most 0.01, Burda et al. 2016)
    sit at 0 under either prior, so the shape is measured on the active units,
    each standardised over images: the excess kurtosis of the pooled values
    (0 for Gaussian codes, 3 for Laplace ones) and their share within
    +-CODE_NEAR_ZERO. -> (statistics, standardised locations (N, active))."""
    from scipy.stats import kurtosis
    mean, _ = vae.unpack_gaussian_params(fastgrad.neural_net_predict(rec_params, images,
                                                                     activation))
    active = onp.var(mean, axis=0) > ACTIVE_UNIT_THRESHOLD
    if not active.any():
        return {"active_units": 0, "latent_dim": int(mean.shape[1])}, mean[:, active]
    standardised = (mean[:, active] - mean[:, active].mean(axis=0)) / mean[:, active].std(axis=0)
    return {"active_units": int(active.sum()), "latent_dim": int(mean.shape[1]),
            "active_excess_kurtosis": float(kurtosis(standardised.ravel())),
            f"active_share_within_{CODE_NEAR_ZERO}_sd": float(
                onp.mean(onp.abs(standardised) < CODE_NEAR_ZERO))}, standardised


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

MODEL_OPTIONS = {"gaussian": ("noise", "min_std"), "laplace": ("prior_scale",),
                 "binary": ("temperature",), "autoencoder": ("components",), "vae": ()}
OPTION_DEFAULTS = {"noise": "per-pixel", "min_std": 0.01, "prior_scale": 1.0,
                   "temperature": 2 / 3, "components": 10}
MIXTURE_NAME = "mixture.npz"
RUN_FILES = vae.RUN_FILES + ("code_histogram.png", MIXTURE_NAME, "mixture.png")


def layer_sizes(config):
    """(generator sizes, recognition sizes): vae.py's, except that the binary
    and autoencoder encoders output L numbers (logits, or the code), not 2L."""
    gen, rec = vae.layer_sizes(config)
    if config["model"] in ("binary", "autoencoder"):
        rec = rec[:-1] + [config["latent_dim"]]
    return gen, rec


def initial_params(config, seed):
    """As vae.initial_params (the global stream seeded, generator first), with
    this model's sizes and, for the Gaussian model, its noise layer."""
    npr.seed(seed)
    gen, rec = (vae.cast_params(vae.init_net_params(sizes), onp.float64)
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
    networks, config, history = runs.load_checkpoint(path, sizes, written_by="variants.py")
    config.setdefault("model", "vae")
    config.setdefault("activation", vae.DEFAULT_ACTIVATION)
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
                  model, lambda: vae.GaussianLatent)()
    decoder = gen[:-1] if model == "gaussian" else gen
    logits = fastgrad.neural_net_predict(decoder, latent.sample_prior(rs, shape),
                                         config["activation"])
    return vae.sigmoid(logits), config


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = runs.OneLineErrorParser(
        description="Train a variant of the VAE with vae.py's networks, Adam and loop, and "
                    "write its figures, metrics and checkpoint.")
    add = parser.add_argument
    add("model", choices=tuple(MODEL_OPTIONS),
        help="gaussian: grey-level pixels with a Gaussian p(x|z); laplace: Laplace prior and "
             "posterior; binary: binary latent units; autoencoder: a deterministic "
             "autoencoder with a Gaussian mixture fitted to its codes; vae: vae.py's model "
             "through the same loop")
    add("--epochs", type=runs.positive_int, default=30, help="passes over the training set")
    add("--batch-size", type=runs.positive_int, default=200, help="images per Adam step")
    add("--latent-dim", type=runs.positive_int, default=50, help="dimension L of z")
    add("--hidden-units", type=runs.positive_int, default=200, help="units per hidden layer")
    add("--hidden-layers", type=runs.nonnegative_int, default=2,
        help="hidden layers in the encoder and in the decoder")
    add("--activation", choices=tuple(vae.ACTIVATIONS), default="relu",
        help="of the hidden layers")
    add("--learning-rate", type=runs.positive_float, default=1e-3, help="Adam step size")
    add("--seed", type=runs.seed_int, default=0,
        help="seeds the initial parameters (global stream) and the loop's default_rng")
    add("--n-train", type=runs.positive_int, default=None, metavar="N",
        help="use only the first N training images (default: all)")
    add("--data-dir", type=runs.existing_dir, default=None, metavar="DIR",
        help="folder with the four MNIST-format files (default: the shipped MNIST)")
    add("--noise", choices=("per-pixel", "shared"), default=None,
        help="gaussian: one learnt standard deviation per pixel or one for all "
             "(default: per-pixel)")
    add("--min-std", type=runs.positive_float, default=None,
        help="gaussian: the floor of the standard deviation (default: 0.01)")
    add("--prior-scale", type=runs.positive_float, default=None, metavar="TAU",
        help="laplace: the prior's scale tau, Lap(0, tau) per unit (default: 1)")
    add("--temperature", type=runs.positive_float, default=None,
        help="binary: the temperature of the relaxed Bernoulli samples in training "
             "(default: 2/3, Maddison et al. 2017)")
    add("--components", type=runs.positive_int, default=None,
        help="autoencoder: Gaussian components of the mixture fitted to the codes (default: 10)")
    add("--output-dir", type=runs.output_dir, default=None, metavar="DIR",
        help="where figures, metrics.json and the checkpoint go (default: output/<model>)")
    add("--overwrite", action="store_true",
        help="if the output folder holds a run, delete that run's files first")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    for option, default in OPTION_DEFAULTS.items():
        if getattr(args, option) is not None and option not in MODEL_OPTIONS[args.model]:
            parser.error(f"--{option.replace('_', '-')} applies to the "
                         f"{[m for m, o in MODEL_OPTIONS.items() if option in o][0]} model only")
        if getattr(args, option) is None and option in MODEL_OPTIONS[args.model]:
            setattr(args, option, default)
    return args


OBJECTIVES = {
    "gaussian": "ELBO with a Gaussian density of the grey levels (nats per image; a density "
                "on [0, 1], not comparable with a Bernoulli log-probability)",
    "laplace": "ELBO of binarised pixels, Laplace prior and posterior (nats per image)",
    "vae": "ELBO of binarised pixels, Gaussian prior and posterior (nats per image)",
    "binary": "ELBO of binarised pixels, Bernoulli(1/2) prior, Bernoulli posterior, with a "
              "discrete sample per image (nats per image; trained on relaxed samples)",
    "autoencoder": "log-likelihood of the reconstruction, log p(x | decoder(encoder(x))), of "
                   "binarised pixels (nats per image; not a bound on log p(x))",
}


def write_metrics(path, config, history, status, wall_seconds, extra=None):
    runs.write_json(path, {
        "status": status, "model": config["model"], "objective": OBJECTIVES[config["model"]],
        "config": config, "seed": config["seed"], "versions": runs.library_versions(),
        "units": "nats per image, summed over pixels, averaged over images; higher is better",
        "data": ("grey levels in [0, 1], not binarised" if config["model"] == "gaussian" else
                 {"train": vae.TRAIN_BINARIZATION + f" from numpy.random.default_rng("
                           f"{config['seed']})", "test": vae.TEST_BINARIZATION}),
        "epochs": history, "final_test_elbo": history[-1]["test_elbo"] if history else None,
        "wall_seconds": wall_seconds, **(extra or {})})


def run(args):
    """Trains the model per args and writes checkpoint, metrics and figures. -> exit code."""
    wall_start = time.perf_counter()
    config = {key: getattr(args, key) for key in (
        "model", "epochs", "batch_size", "latent_dim", "hidden_units", "hidden_layers",
        "activation", "learning_rate", "seed", "n_train", *MODEL_OPTIONS[args.model])}
    config.update(data_dir=None if args.data_dir is None else str(args.data_dir),
                  dtype="float64", loop="fast",
                  adam={"b1": vae.ADAM_B1, "b2": vae.ADAM_B2, "eps": vae.ADAM_EPS})
    rows = min(config["batch_size"], args.n_train or 60000) + vae.EVAL_BATCH_SIZE
    runs.check_memory(runs.training_memory(layer_sizes(config), "float64", rows),
                      f"this model ({vae.count_params(config):,} parameters)",
                      "choose a smaller --hidden-units, --latent-dim or --hidden-layers")
    N, train_images, train_labels, test_images, test_labels = data.load_data(args.data_dir)
    if args.n_train is not None and args.n_train > N:
        raise runs.RunError(f"--n-train {args.n_train} but the training set has {N} images",
                            exit_code=2)
    out = args.output_dir or Path("output") / args.model
    checkpoint, metrics_path = out / vae.CHECKPOINT_NAME, out / vae.METRICS_NAME
    runs.prepare_output_dir(out, RUN_FILES, args.overwrite, "variants.py",
                            2 * vae.count_params(config) * 8 + vae.FIGURE_BYTES)
    train_images, train_labels = train_images[:args.n_train], train_labels[:args.n_train]
    grey = args.model == "gaussian"
    test_data = test_images if grey else vae.binarize(
        test_images, onp.random.RandomState(vae.TEST_BINARIZATION_SEED))
    gen_params, rec_params = initial_params(config, args.seed)
    terms = elbo_terms(config, training=False)
    write_metrics(metrics_path, config, [], "running", 0.0)
    print(f"variants.py {args.model}: {len(train_images)} training and {len(test_images)} test "
          f"images, {vae.count_params(config):,} network parameters, seed {args.seed}\n"
          f"Objective: {OBJECTIVES[args.model]}; higher is better.")
    print(f"{'epoch':>5} {'train ELBO':>11} {'test ELBO':>10} {'log p(x|z)':>11} "
          f"{'KL':>7} {'seconds':>8}")
    history = []

    def save(gen_params, rec_params, records):
        networks = {"gen": gen_params[:-1] if grey else gen_params, "rec": rec_params}
        if grey:
            networks["noise"] = gen_params[-1:]
        runs.save_checkpoint(checkpoint, networks, config, records)

    def on_epoch_end(epoch, gen_params, rec_params, train_elbo, seconds):
        test = evaluate(terms, gen_params, rec_params, test_data)
        if not onp.isfinite(test["elbo"]):
            raise vae.TrainingDiverged(f"the test ELBO became {test['elbo']} after epoch {epoch}")
        record = {"epoch": epoch, "train_elbo": train_elbo, "test_elbo": test["elbo"],
                  "test_log_px_given_z": test["log_px_given_z"], "test_kl": test["kl"],
                  "seconds": seconds}
        print(f"{epoch:5d} {train_elbo:11.2f} {test['elbo']:10.2f} "
              f"{test['log_px_given_z']:11.2f} {test['kl']:7.2f} {seconds:8.1f}", flush=True)
        save(gen_params, rec_params, history + [record])
        history.append(record)
        write_metrics(metrics_path, config, history, "running", time.perf_counter() - wall_start)

    def stop(status, message):
        if history:
            write_metrics(metrics_path, config, history, status, time.perf_counter() - wall_start)
            message += f"; {checkpoint} holds epoch {history[-1]['epoch']}"
        else:
            metrics_path.unlink(missing_ok=True)
            message += "; no epoch was completed, nothing was saved"
        print(message, file=sys.stderr)

    try:
        with runs.sigterm_as_interrupt():
            gen_params, rec_params = vae.train(
                gen_params, rec_params, train_images, args.epochs, args.batch_size,
                args.learning_rate, objective=lower_bound(elbo_terms(config)),
                step=grey_level_step if grey else vae.fast_step, on_epoch_end=on_epoch_end,
                progress=not args.no_progress, seed=args.seed)
            extra = figures_and_statistics(args, gen_params, rec_params, train_images,
                                           train_labels, test_images, test_labels, test_data,
                                           history, out)
    except KeyboardInterrupt as e:
        status, code = runs.interruption(e)
        stop(status, f"\n{status.capitalize()}")
        return code
    except vae.TrainingDiverged as e:
        stop("diverged", f"Training stopped: {e}. Try a smaller --learning-rate")
        return 1
    wall = time.perf_counter() - wall_start
    write_metrics(metrics_path, config, history, "complete", wall, extra)
    measure = "reconstruction log-likelihood" if args.model == "autoencoder" else "ELBO"
    print(f"Final test {measure} {history[-1]['test_elbo']:.2f} nats per image after "
          f"{args.epochs} epoch{'s' * (args.epochs > 1)} ({wall:.0f} s). Wrote {checkpoint}, "
          f"{metrics_path} and {len(extra['figures'])} figures to {out}/")
    return 0


def figures_and_statistics(args, gen_params, rec_params, train_images, train_labels,
                           test_images, test_labels, test_data, history, out):
    """The run's figures (vae.write_figures with this model's latent space) and
    what else the model has: the learnt noise (gaussian), the codes' histogram
    and statistics (vae, laplace), the mixture (autoencoder). -> metrics extras."""
    import plotting
    grey, extra = args.model == "gaussian", {}
    latent = {"laplace": LaplaceLatent(args.prior_scale), "binary": BinaryLatent}.get(
        args.model, vae.GaussianLatent)
    if args.model == "autoencoder":
        binary = vae.binarize(train_images, onp.random.RandomState(vae.TEST_BINARIZATION_SEED))
        codes = fastgrad.neural_net_predict(rec_params, binary, args.activation)
        mixture = fit_mixture(codes, args.components, args.seed)
        runs.atomic_write(out / MIXTURE_NAME, lambda f: onp.savez(f, **mixture))
        latent = MixtureLatent(mixture, codes)
        extra["mixture"] = {"components": args.components, "fitted_to": (
            f"the codes of the {len(binary)} training images, binarised once with "
            f"RandomState({vae.TEST_BINARIZATION_SEED})"), "file": str(out / MIXTURE_NAME)}
    paths = vae.write_figures(gen_params[:-1] if grey else gen_params, rec_params, test_images,
                              test_labels, history, out, args.seed, args.activation, latent)
    if args.model == "autoencoder" and args.latent_dim == 2:
        paths.append(out / "mixture.png")
        plotting.save_mixture(codes, onp.argmax(train_labels, axis=1), mixture["means"],
                              mixture["covariances"], paths[-1])
    if grey:
        sigma = onp.exp(noise_log_std(gen_params[-1][1], args.min_std))
        extra["noise_std"] = {"min": float(sigma.min()), "median": float(onp.median(sigma)),
                              "max": float(sigma.max()), "floor": args.min_std}
        print(f"Learnt pixel standard deviation: median {onp.median(sigma):.3f}, "
              f"range {sigma.min():.3f} to {sigma.max():.3f} (floor {args.min_std})")
    if args.model in ("vae", "laplace"):
        stats, means = code_statistics(rec_params, test_data, args.activation)
        extra["code_statistics"] = stats
        if stats["active_units"] == 0:
            print("No active latent unit: every posterior location is the same for all images")
        else:
            paths.append(out / "code_histogram.png")
            plotting.save_histogram(
                means, paths[-1], f"test-set posterior locations, {stats['active_units']} "
                f"active units of {args.latent_dim}, each standardised",
                "location of q(z|x) in standard deviations over images")
            print(f"Posterior locations of the {stats['active_units']} active units, "
                  f"standardised: excess kurtosis {stats['active_excess_kurtosis']:.2f}, "
                  f"{stats[f'active_share_within_{CODE_NEAR_ZERO}_sd']:.1%} within "
                  f"+-{CODE_NEAR_ZERO} sd")
    extra["figures"] = [str(p) for p in paths]
    return extra


def main(argv=None):
    """Entry point of `python variants.py`: returns the exit code."""
    args = parse_args(argv)
    try:
        return run(args)
    except (data.DataError, runs.RunError) as e:
        print(f"variants.py: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
