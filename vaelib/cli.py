"""vae.py's command line, the parts other scripts share or that are not the
assignment: the model options, the settings a run records, the checks and
records before a run's first epoch, and what a resumed or stopped run says."""
from functools import partial
from pathlib import Path

import numpy as np

from data import load_data
from vaelib import arguments, checkpoints, fastgrad, runs, training
from vaelib.networks import count_params, layer_sizes

TRAINING_OPTIONS = ("epochs", "batch_size", "latent_dim", "hidden_units", "hidden_layers",
                    "activation", "learning_rate", "seed", "n_train", "dtype", "loop", "data_dir",
                    "init", "lr_schedule", "adam_eps")


def add_model_options(parser, skip=(), **defaults):
    """The options that shape a model and its training, with the assignment's
    defaults: vae.py's, and those of every script that trains with its loop
    (a script may change a default, or skip an option it fixes)."""
    options = [
        ("epochs", dict(type=arguments.positive_int, default=30, help="passes over the training set")),
        ("batch_size", dict(type=arguments.positive_int, default=200, help="images per Adam step")),
        ("latent_dim", dict(type=arguments.positive_int, default=50, help="dimension L of z")),
        ("hidden_units", dict(type=arguments.positive_int, default=200, help="units per hidden layer")),
        ("hidden_layers", dict(type=arguments.nonnegative_int, default=2,
                               help="hidden layers in the encoder and in the decoder")),
        ("activation", dict(choices=fastgrad.ACTIVATIONS, default="relu",
                            help="of the hidden layers: relu (the assignment's) or tanh "
                                 "(Kingma and Welling's, Appendix C)")),
        ("learning_rate", dict(type=arguments.positive_float, default=1e-3, help="Adam step size")),
        ("n_train", dict(type=arguments.positive_int, default=None, metavar="N",
                         help="use only the first N training images (default: all)"))]
    for dest, settings in options:
        if dest in skip:
            continue
        if dest in defaults:
            settings = {**settings, "default": defaults[dest]}
            if dest == "n_train":
                settings["help"] = "use only the first N training images"
        parser.add_argument(f"--{dest.replace('_', '-')}", **settings)


def refuse_conflicting_options(parser, args):
    """vae.py's options that contradict each other, refused in one line (argparse's
    error, exit code 2): --resume with a folder or another source, and training
    options with --from-checkpoint, whose settings are the checkpoint's."""
    if args.resume and (args.from_checkpoint or args.output_dir or args.overwrite):
        parser.error("--resume continues the run in the checkpoint's folder; it takes no "
                     "--from-checkpoint, --output-dir or --overwrite")
    if args.from_checkpoint:
        ignored = [flag for flag in map(option, TRAINING_OPTIONS) if flag in args.given]
        if ignored:
            parser.error(f"--from-checkpoint takes its settings from the checkpoint; "
                         f"{', '.join(ignored)} would be ignored")


def option(dest):
    return f"--{dest.replace('_', '-')}"


def check_resume(args, config, done, path):
    """Raises runs.RunError (exit 2) if a --resume of the checkpoint at path,
    whose run recorded config and holds `done` epochs, would change its
    settings or asks for no more epochs than it holds."""
    changed = [f"{option(dest)} {getattr(args, dest)} (the run has {config[dest]})"
               for dest in TRAINING_OPTIONS if dest != "epochs" and option(dest) in args.given
               and str(getattr(args, dest)) != str(config[dest])]
    if changed:
        raise runs.RunError(f"a resumed run keeps the settings it started with, and "
                            f"{'; '.join(changed)} would change them", exit_code=2)
    if args.epochs <= done:
        raise runs.RunError(f"{path} already holds {done} epochs; --epochs is the total to "
                            f"reach, e.g. --epochs {done + 30}", exit_code=2)


def how_to_go_on(checkpoint, history, epochs, resumable=True):
    """What a stopped run's message says after "checkpoint holds epoch N":
    the --resume command only where resuming can continue (not after the
    last epoch, nor after a divergence, which a resume would repeat exactly)."""
    figures = f"`python vae.py --from-checkpoint {checkpoint}`"
    if not history:
        return ""
    done = history[-1]["epoch"]
    if done >= epochs:
        return (f", all {epochs} epochs: training is complete; draw its figures with {figures}, "
                f"or train further with `python vae.py --resume {checkpoint} --epochs "
                f"{done + 30}` (--epochs is the total to reach)")
    if not resumable:
        return f"; regenerate its figures with {figures}"
    return (f": continue with `python vae.py --resume {checkpoint} --epochs {epochs}`, "
            f"or regenerate its figures with {figures}")


def start_training_run(args, held, initial_params):
    """What vae.py does before its first epoch: the run's configuration (or
    the resumed checkpoint's, checked), its folder checked, claimed and locked
    (held: an ExitStack that keeps the lock), memory, data and disk checked,
    the header printed. initial_params(config, dtype, seed) -> the new run's
    (gen_params, rec_params). -> (config, state or None, runs.TrainingRun,
    (gen_params, rec_params), (train_images, test_images, test_labels,
    test_binary)), the images in the run's dtype but for test_images."""
    out = args.resume.parent if args.resume else args.output_dir or Path("output")
    if args.resume:
        held.enter_context(runs.locked(out, "vae.py"))
        gen_params, rec_params, config, history, state = checkpoints.load_resumable(args.resume)
        check_resume(args, config, state["epoch"], args.resume)
        config["epochs"] = args.epochs
    else:
        config = {key: getattr(args, key) for key in TRAINING_OPTIONS}
        config.update(data_dir=None if args.data_dir is None else str(args.data_dir),
                      adam={"b1": training.ADAM_B1, "b2": training.ADAM_B2})
        history, state = [], None
    checkpoint = out / runs.CHECKPOINT_NAME
    run = runs.TrainingRun(out, partial(training.run_metrics, config, checkpoint), history,
                           [] if state is None else state.get("sittings", []))
    dtype, n_train = config["dtype"], config["n_train"]
    rows = min(config["batch_size"], n_train or 60000) + training.EVAL_BATCH_SIZE
    runs.check_memory(runs.training_memory(layer_sizes(config), dtype, rows),
                      f"this model ({count_params(config):,} parameters)",
                      "choose a smaller --hidden-units, --latent-dim, --hidden-layers or --batch-size")
    N, train_images, _, test_images, test_labels = load_data(config["data_dir"])
    runs.check_training_size(N, n_train, config["batch_size"])
    need = 2 * 3 * count_params(config) * np.dtype(dtype).itemsize + runs.FIGURE_BYTES
    if args.resume:   # old and new checkpoint: parameters, Adam's m and v
        reports = runs.run_files(out, runs.REPORT_FILES)
        if reports:
            raise runs.RunError(f"{out} holds reports on the checkpoint as it is now "
                                f"({', '.join(p.name for p in reports)}); move them elsewhere "
                                "first, so that they do not sit beside a later epoch's "
                                "checkpoint", exit_code=2)
        runs.check_writable(out, need)
    else:
        runs.check_writable(out)   # creates it: the lock comes before --overwrite deletes
        held.enter_context(runs.locked(out, "vae.py"))
        runs.prepare_output_dir(out, runs.RUN_FILES, args.overwrite, "vae.py", need)
        gen_params, rec_params = initial_params(config, dtype, config["seed"])
    train_images = train_images[:n_train].astype(dtype)
    test_binary = training.binarize_once(test_images).astype(dtype)
    run.write_metrics("running")   # claims the folder
    print_header(config, len(train_images), len(test_images))
    if args.resume:
        print(f"Resuming {checkpoint} after epoch {state['epoch']}, to epoch {config['epochs']}")
    return (config, state, run, (gen_params, rec_params),
            (train_images, test_images, test_labels, test_binary))


def print_header(config, n_train, n_test):
    gen_sizes, rec_sizes = layer_sizes(config)
    print(f"VAE: {n_train} training and {n_test} test images; "
          f"encoder {'-'.join(map(str, rec_sizes))}, decoder {'-'.join(map(str, gen_sizes))} "
          f"({config['activation']}); "
          f"{config['dtype']}, seed {config['seed']}, {config['loop']} loop")
    print("ELBO in nats per image (summed over pixels, averaged over images); higher "
          "is better.\nTrain: Monte Carlo estimate over the epoch's batches, binarised "
          f"afresh{' (before each update)' * (config['loop'] == 'fast')}. Test: all {n_test} "
          f"test images, binarised once (seed {training.TEST_BINARIZATION_SEED}).")
    print(training.EPOCH_HEADER)
