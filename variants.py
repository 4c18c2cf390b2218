"""Other models, trained with vae.py's networks, Adam and loop.

    python variants.py gaussian      grey-level pixels, Gaussian p(x|z) with a learnt sigma
    python variants.py laplace       Laplace prior and posterior
    python variants.py binary        binary latent units
    python variants.py autoencoder   a deterministic autoencoder, then a Gaussian mixture
    python variants.py vae           vae.py's model through the same loop, for comparison

The models themselves (their lower bounds, sizes, checkpoints, prior samples)
are in models.py. Each is a lower bound, objective(gen_params, rec_params,
data, randn), handed to the fast loop (vaelib/training.py: one
value-and-gradient pass per step, noise from numpy.random.default_rng(seed)):
the Bernoulli models on pixels binarised afresh every batch, the Gaussian one
on the grey levels. This file adds the statistics of the codes, the figures
and the command line.

Units: nats per image, summed over pixels, averaged over images. Why the
Gaussian model's density cannot be compared with the others: docs/models.md.
"""
import sys
from functools import partial
from pathlib import Path

import numpy as onp

import data
from vaelib import fastgrad
import models
from vaelib import runs
from vaelib import checkpoints, cli, training
from vaelib.latents import GaussianLatent
from vaelib.networks import count_params
import vae
from evaluate import ACTIVE_UNIT_THRESHOLD
from models import MIXTURE_NAME

CODE_NEAR_ZERO = 0.1        # share of standardised posterior locations within +- this



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
RUN_FILES = runs.RUN_FILES + ("code_histogram.png", MIXTURE_NAME, "mixture.png")

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
    cli.add_model_options(parser)
    add("--seed", type=runs.seed_int, default=0,
        help="seeds the initial parameters (global stream) and the loop's default_rng")
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

MEASURES = {"autoencoder": "reconstruction log-likelihood"}   # the others' is the ELBO


def run_metrics(config, history, status, wall_seconds, extra=None):
    return {
        "status": status, "model": config["model"], "objective": OBJECTIVES[config["model"]],
        "config": config, "seed": config["seed"], "versions": runs.library_versions(),
        "units": "nats per image, summed over pixels, averaged over images; higher is better",
        "data": ("grey levels in [0, 1], not binarised" if config["model"] == "gaussian" else
                 {"train": training.TRAIN_BINARIZATION + f" from numpy.random.default_rng("
                           f"{config['seed']})", "test": training.TEST_BINARIZATION}),
        "epochs": history, "final_test_elbo": history[-1]["test_elbo"] if history else None,
        "wall_seconds": wall_seconds, **(extra or {})}


def run(args):
    """Trains the model per args and writes checkpoint, metrics and figures. -> exit code."""
    config = {key: getattr(args, key) for key in (
        "model", "epochs", "batch_size", "latent_dim", "hidden_units", "hidden_layers",
        "activation", "learning_rate", "seed", "n_train", *MODEL_OPTIONS[args.model])}
    config.update(data_dir=None if args.data_dir is None else str(args.data_dir),
                  dtype="float64", loop="fast",
                  adam={"b1": training.ADAM_B1, "b2": training.ADAM_B2, "eps": training.ADAM_EPS})
    out = args.output_dir or Path("output") / args.model
    run = runs.TrainingRun(out, partial(run_metrics, config))
    rows = min(config["batch_size"], args.n_train or 60000) + training.EVAL_BATCH_SIZE
    runs.check_memory(runs.training_memory(models.layer_sizes(config), "float64", rows),
                      f"this model ({count_params(config):,} parameters)",
                      "choose a smaller --hidden-units, --latent-dim or --hidden-layers")
    N, train_images, train_labels, test_images, test_labels = data.load_data(args.data_dir)
    runs.check_training_size(N, args.n_train, args.batch_size)
    if args.model == "autoencoder" and args.components > (args.n_train or N):
        raise runs.RunError(f"--components {args.components} but the mixture is fitted to the "
                            f"codes of {args.n_train or N} training images; choose at most "
                            f"{args.n_train or N} components, or a larger --n-train",
                            exit_code=2)
    runs.prepare_output_dir(out, RUN_FILES, args.overwrite, "variants.py",
                            2 * count_params(config) * 8 + runs.FIGURE_BYTES)
    train_images, train_labels = train_images[:args.n_train], train_labels[:args.n_train]
    grey = args.model == "gaussian"
    test_data = test_images if grey else training.binarize_once(test_images)
    gen_params, rec_params = models.initial_params(config, args.seed)
    terms = models.elbo_terms(config, training=False)
    run.write_metrics("running")
    print(f"variants.py {args.model}: {len(train_images)} training and {len(test_images)} test "
          f"images, {count_params(config):,} network parameters, seed {args.seed}\n"
          f"Objective: {OBJECTIVES[args.model]}; higher is better.")
    print(training.EPOCH_HEADER)

    def save(gen_params, rec_params, history):
        networks = {"gen": gen_params[:-1] if grey else gen_params, "rec": rec_params}
        if grey:
            networks["noise"] = gen_params[-1:]
        checkpoints.save_checkpoint(run.checkpoint, networks, config, history)

    def on_epoch_end(end):
        test = training.evaluate_elbo(end.gen_params, end.rec_params, test_data, terms=terms)
        run.add_epoch(training.epoch_record(end.epoch, end.train_elbo, test, end.seconds),
                      partial(save, end.gen_params, end.rec_params))

    try:
        with runs.sigterm_as_interrupt():
            objective = training.on_flat_params(models.lower_bound(models.elbo_terms(config)),
                                                (gen_params, rec_params))
            settings = training.Settings(args.epochs, args.batch_size, args.learning_rate,
                                         seed=args.seed, progress=not args.no_progress)
            gen_params, rec_params = training.final_params(training.fast_train(
                gen_params, rec_params, train_images, settings, objective,
                training.in_place_adam(), binarize=not grey), on_epoch_end)
            extra = figures_and_statistics(args, gen_params, rec_params, train_images,
                                           train_labels, test_images, test_labels, test_data,
                                           run.history, out)
    except (KeyboardInterrupt, runs.TrainingDiverged) as e:
        return run.stopped(e, "Try a smaller --learning-rate")
    except OSError as e:                  # a full disk: one line, and what metrics.json says
        return run.stopped(e, how_to_go_on="; run again with --overwrite")
    except Exception as e:
        failed(run, e)
        raise
    wall = run.write_metrics("complete", extra=extra)
    measure = MEASURES.get(args.model, "ELBO")
    print(f"Final test {measure} {run.history[-1]['test_elbo']:.2f} nats per image after "
          f"{args.epochs} epoch{'s' * (args.epochs > 1)} ({wall:.0f} s). Wrote "
          f"{run.checkpoint}, {run.metrics_path} and {len(extra['figures'])} figures to {out}/")
    return 0


def failed(run, e):
    """After training started, an error that is not the disk's (a bug): metrics.json
    says "failed" with the error, never "running" (or is removed if no epoch was
    completed), so that the folder can be run again with --overwrite; the caller
    raises e again, with its traceback."""
    try:
        if run.history:
            run.write_metrics("failed", extra={"error": f"{type(e).__name__}: {e}"})
        else:
            run.metrics_path.unlink(missing_ok=True)
    except OSError:
        pass


def figures_and_statistics(args, gen_params, rec_params, train_images, train_labels,
                           test_images, test_labels, test_data, history, out):
    """The run's figures (vae.write_figures with this model's latent space) and
    what else the model has: the learnt noise (gaussian), the codes' histogram
    and statistics (vae, laplace), the mixture (autoencoder). -> metrics extras."""
    import plotting
    grey, extra = args.model == "gaussian", {}
    latent = {"laplace": models.LaplaceLatent(args.prior_scale), "binary": models.BinaryLatent}.get(
        args.model, GaussianLatent)
    if args.model == "autoencoder":
        binary = training.binarize_once(train_images)
        codes = fastgrad.neural_net_predict(rec_params, binary, args.activation)
        mixture = models.fit_mixture(codes, args.components, args.seed)
        runs.atomic_write(out / MIXTURE_NAME, lambda f: onp.savez(f, **mixture))
        latent = models.MixtureLatent(mixture, codes)
        extra["mixture"] = {"components": args.components, "fitted_to": (
            f"the codes of the {len(binary)} training images, binarised once with "
            f"RandomState({training.TEST_BINARIZATION_SEED})"), "file": str(out / MIXTURE_NAME)}
    paths = vae.write_figures(gen_params[:-1] if grey else gen_params, rec_params, test_images,
                              test_labels, history, out, args.seed, args.activation, latent,
                              measure=MEASURES.get(args.model, "ELBO"))
    if args.model == "autoencoder" and args.latent_dim == 2:
        paths.append(out / "mixture.png")
        plotting.save_mixture(codes, onp.argmax(train_labels, axis=1), mixture["means"],
                              mixture["covariances"], paths[-1])
    if grey:
        sigma = onp.exp(models.noise_log_std(gen_params[-1][1], args.min_std))
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
