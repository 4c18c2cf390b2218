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


# ----------------------------------------------------------------------------
# The models, the loop and the evaluation
# ----------------------------------------------------------------------------

def elbo_terms(config):
    """The model's terms(gen_params, rec_params, data, randn) -> (log p(x|z), KL)."""
    model, activation = config["model"], config["activation"]
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

MODEL_OPTIONS = {"gaussian": ("noise", "min_std"), "laplace": ("prior_scale",), "vae": ()}
RUN_FILES = vae.RUN_FILES + ("code_histogram.png",)


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = runs.OneLineErrorParser(
        description="Train a variant of the VAE with vae.py's networks, Adam and loop, and "
                    "write its figures, metrics and checkpoint.")
    add = parser.add_argument
    add("model", choices=tuple(MODEL_OPTIONS),
        help="gaussian: grey-level pixels with a Gaussian p(x|z); laplace: Laplace prior and "
             "posterior; vae: vae.py's model through the same loop")
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
    add("--output-dir", type=runs.output_dir, default=None, metavar="DIR",
        help="where figures, metrics.json and the checkpoint go (default: output/<model>)")
    add("--overwrite", action="store_true",
        help="if the output folder holds a run, delete that run's files first")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    defaults = {"noise": "per-pixel", "min_std": 0.01, "prior_scale": 1.0}
    for option, default in defaults.items():
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
    runs.check_memory(runs.training_memory(vae.layer_sizes(config), "float64", rows),
                      f"this model ({vae.count_params(config):,} parameters)",
                      "choose a smaller --hidden-units, --latent-dim or --hidden-layers")
    N, train_images, _, test_images, test_labels = data.load_data(args.data_dir)
    if args.n_train is not None and args.n_train > N:
        raise runs.RunError(f"--n-train {args.n_train} but the training set has {N} images",
                            exit_code=2)
    out = args.output_dir or Path("output") / args.model
    checkpoint, metrics_path = out / vae.CHECKPOINT_NAME, out / vae.METRICS_NAME
    runs.prepare_output_dir(out, RUN_FILES, args.overwrite, "variants.py",
                            2 * vae.count_params(config) * 8 + vae.FIGURE_BYTES)
    train_images = train_images[:args.n_train]
    grey = args.model == "gaussian"
    test_data = test_images if grey else vae.binarize(
        test_images, onp.random.RandomState(vae.TEST_BINARIZATION_SEED))
    gen_params, rec_params = vae.initial_params(config, onp.float64, args.seed)
    if grey:
        gen_params = gen_params + [noise_layer(args.noise, onp.float64)]
    terms = elbo_terms(config)
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
                args.learning_rate, objective=lower_bound(terms),
                step=grey_level_step if grey else vae.fast_step, on_epoch_end=on_epoch_end,
                progress=not args.no_progress, seed=args.seed)
            extra = figures_and_statistics(args, config, gen_params, rec_params, test_images,
                                           test_labels, test_data, history, out)
    except KeyboardInterrupt as e:
        status, code = runs.interruption(e)
        stop(status, f"\n{status.capitalize()}")
        return code
    except vae.TrainingDiverged as e:
        stop("diverged", f"Training stopped: {e}. Try a smaller --learning-rate")
        return 1
    wall = time.perf_counter() - wall_start
    write_metrics(metrics_path, config, history, "complete", wall, extra)
    print(f"Final test ELBO {history[-1]['test_elbo']:.2f} nats per image after "
          f"{args.epochs} epoch{'s' * (args.epochs > 1)} ({wall:.0f} s). Wrote {checkpoint}, "
          f"{metrics_path} and {len(extra['figures'])} figures to {out}/")
    return 0


def figures_and_statistics(args, config, gen_params, rec_params, test_images, test_labels,
                           test_data, history, out):
    """The run's figures (vae.write_figures with this model's latent space),
    the codes' histogram and statistics, and the learnt noise. -> metrics extras."""
    import plotting
    grey = args.model == "gaussian"
    latent = LaplaceLatent(args.prior_scale) if args.model == "laplace" else vae.GaussianLatent
    paths = vae.write_figures(gen_params[:-1] if grey else gen_params, rec_params, test_images,
                              test_labels, history, out, args.seed, args.activation, latent)
    extra = {}
    if grey:
        sigma = onp.exp(noise_log_std(gen_params[-1][1], args.min_std))
        extra["noise_std"] = {"min": float(sigma.min()), "median": float(onp.median(sigma)),
                              "max": float(sigma.max()), "floor": args.min_std}
        print(f"Learnt pixel standard deviation: median {onp.median(sigma):.3f}, "
              f"range {sigma.min():.3f} to {sigma.max():.3f} (floor {args.min_std})")
    else:
        stats, means = code_statistics(rec_params, test_data, args.activation)
        extra["code_statistics"] = stats
        if stats["active_units"] == 0:
            print("No active latent unit: every posterior location is the same for all images")
            extra["figures"] = [str(p) for p in paths]
            return extra
        paths.append(out / "code_histogram.png")
        plotting.save_histogram(means, paths[-1],
                                f"test-set posterior locations, {stats['active_units']} active "
                                f"units of {args.latent_dim}, each standardised",
                                "location of q(z|x) in standard deviations over images")
        print(f"Posterior locations of the {stats['active_units']} active units, standardised: "
              f"excess kurtosis {stats['active_excess_kurtosis']:.2f}, "
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
