"""Other models, trained with vae.py's networks, Adam and loop.

    python variants.py MODEL [options]    e.g. python variants.py laplace --prior-scale 2
    python variants.py --help             the models; python variants.py MODEL --help: its options

The models (gaussian, laplace, binary, autoencoder, vae, ...) are the records
of models.MODELS: their lower bounds, sizes, options, checkpoints and prior
samples are in vaelib/models.py, and each is a subcommand here with its own options.
Each is a lower bound, objective(gen_params, rec_params, data, randn), handed
to the fast loop (vaelib/training.py: one value-and-gradient pass per step,
noise from numpy.random.default_rng(seed)); nothing in vae.py knows which one
runs: the Bernoulli models on pixels binarised afresh every batch, the
Gaussian one on the grey levels. This file adds the figures and the command
line.

Units: nats per image, summed over pixels, averaged over images. Why the
Gaussian model's density cannot be compared with the others: docs/models.md.
"""
import sys
from functools import partial
from pathlib import Path

import data
import vae
from vaelib import arguments, checkpoints, cli, models, runs, training
from vaelib.models import MODELS
from vaelib.networks import count_params


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

RUN_FILES = runs.RUN_FILES + tuple(dict.fromkeys(
    name for model in MODELS.values() for name in model.files))


def parse_args(argv=None):
    """The command line: a subcommand per model of models.MODELS, each with
    vae.py's model options, this script's and the model's own (argparse
    refuses another model's options)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = arguments.OneLineErrorParser(
        description="Train a variant of the VAE with vae.py's networks, Adam and loop, and "
                    "write its figures, metrics and checkpoint. `python variants.py MODEL "
                    "--help` lists a model's options.")
    subcommands = parser.add_subparsers(dest="model", required=True, title="models")
    for model in MODELS.values():
        own = " ".join(f"--{o.name.replace('_', '-')}" for o in model.options)
        sub = subcommands.add_parser(
            model.name, help=model.summary + (f" (options {own})" if own else ""),
            description=f"Train the {model.name} model ({model.summary}). Objective: "
                        f"{model.objective}.")
        cli.add_model_options(sub)
        add = sub.add_argument
        add("--seed", type=arguments.seed_int, default=0,
            help="seeds the initial parameters (global stream) and the loop's default_rng")
        add("--data-dir", type=arguments.existing_dir, default=None, metavar="DIR",
            help="folder with the four MNIST-format files (default: the shipped MNIST)")
        for option in model.options:
            option.add_to(sub)
        add("--output-dir", type=arguments.output_dir, default=None, metavar="DIR",
            help=f"where figures, metrics.json and the checkpoint go "
                 f"(default: output/{model.name})")
        add("--overwrite", action="store_true",
            help="if the output folder holds a run, delete that run's files first")
        add("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def run_metrics(config, history, status, wall_seconds, extra=None):
    return {
        "status": status, "model": config["model"], "objective": MODELS[config["model"]].objective,
        "config": config, "seed": config["seed"], "versions": runs.library_versions(),
        "units": "nats per image, summed over pixels, averaged over images; higher is better",
        "data": ("grey levels in [0, 1], not binarised" if MODELS[config["model"]].grey else
                 {"train": training.TRAIN_BINARIZATION + f" from numpy.random.default_rng("
                           f"{config['seed']})", "test": training.TEST_BINARIZATION}),
        "epochs": history, "final_test_elbo": history[-1]["test_elbo"] if history else None,
        "wall_seconds": wall_seconds, **(extra or {})}


def run(args):
    """Trains the model per args and writes checkpoint, metrics and figures. -> exit code."""
    model = MODELS[args.model]
    config = {key: getattr(args, key) for key in (
        "model", "epochs", "batch_size", "latent_dim", "hidden_units", "hidden_layers",
        "activation", "learning_rate", "seed", "n_train", *(o.name for o in model.options))}
    config.update(data_dir=None if args.data_dir is None else str(args.data_dir),
                  dtype="float64", loop="fast",
                  adam={"b1": training.ADAM_B1, "b2": training.ADAM_B2, "eps": training.ADAM_EPS})
    out = args.output_dir or Path("output") / args.model
    run = runs.TrainingRun(out, partial(run_metrics, config))
    rows = min(config["batch_size"], args.n_train or 60000) + training.EVAL_BATCH_SIZE
    runs.check_memory(runs.training_memory(model.layer_sizes(config), "float64", rows),
                      f"this model ({count_params(config):,} parameters)",
                      "choose a smaller --hidden-units, --latent-dim or --hidden-layers")
    N, train_images, train_labels, test_images, test_labels = data.load_data(args.data_dir)
    runs.check_training_size(N, args.n_train, args.batch_size)
    if model.check:
        model.check(config, args.n_train or N)
    runs.prepare_output_dir(out, RUN_FILES, args.overwrite, "variants.py",
                            2 * count_params(config) * 8 + runs.FIGURE_BYTES)
    train_images, train_labels = train_images[:args.n_train], train_labels[:args.n_train]
    test_data = test_images if model.grey else training.binarize_once(test_images)
    gen_params, rec_params = models.initial_params(config, args.seed, vae.init_net_params)
    terms = models.elbo_terms(config, training=False)
    run.write_metrics("running")
    print(f"variants.py {args.model}: {len(train_images)} training and {len(test_images)} test "
          f"images, {count_params(config):,} network parameters, seed {args.seed}\n"
          f"Objective: {model.objective}; higher is better.")
    print(training.EPOCH_HEADER)

    def save(gen_params, rec_params, history):
        checkpoints.save_checkpoint(run.checkpoint, model.networks(gen_params, rec_params),
                                    config, history)

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
                training.in_place_adam(), binarize=not model.grey), on_epoch_end)
            trained = models.Trained(config, gen_params, rec_params, train_images,
                                     train_labels, test_data, out)
            extra = figures_and_statistics(model, trained, test_images, test_labels,
                                           run.history)
    except (KeyboardInterrupt, runs.TrainingDiverged) as e:
        return run.stopped(e, "Try a smaller --learning-rate")
    except OSError as e:                  # a full disk: one line, and what metrics.json says
        return run.stopped(e, how_to_go_on="; run again with --overwrite")
    except Exception as e:
        failed(run, e)
        raise
    wall = run.write_metrics("complete", extra=extra)
    print(f"Final test {model.measure} {run.history[-1]['test_elbo']:.2f} nats per image after "
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


def figures_and_statistics(model, trained, test_images, test_labels, history):
    """The run's figures (vae.write_figures with this model's latent space)
    and what else the model has (its hooks: a prior fitted to the codes before
    the figures, its reports after them). -> metrics extras."""
    config, extra = trained.config, {}
    latent = model.latent(config, None)
    if model.fit_prior:
        latent, extra = model.fit_prior(trained)
    paths = vae.write_figures(model.decoder(trained.gen_params), trained.rec_params,
                              test_images, test_labels, history, trained.out, config["seed"],
                              config["activation"], latent, measure=model.measure)
    for report in model.reports:
        more, figures = report(trained, latent)
        extra.update(more)
        paths += figures
    extra["figures"] = [str(p) for p in paths]
    return extra


def main(argv=None):
    """Entry point of `python variants.py`: returns the exit code."""
    args = parse_args(argv)
    return runs.run_main("variants.py", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
