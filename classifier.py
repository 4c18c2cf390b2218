"""An MLP that classifies MNIST digits, and a score for generated digits.

    python classifier.py train                           train, write output/classifier/
    python classifier.py score output/checkpoint.npz     score a model's prior samples

The forms before the subcommands still work: `python classifier.py [train
options]` trains, and `python classifier.py --score CHECKPOINT ... [score
options]` scores.

Training: a multilayer perceptron (ReLU hidden layers, softmax output) on the
grey-level training images, maximising the mean log-probability of the true
digit with the project's Adam (fastgrad.adam_step), the batches shuffled
every epoch. Test accuracy is reported after every epoch.

Scoring (score): a generative model's prior samples, drawn and decoded to
pixel means by models.prior_samples (any checkpoint of vae.py or
variants.py), are classified. Two numbers describe them:

- confident share: the share of samples whose most probable digit has
  probability above --confidence (0.9): digits the classifier recognises;
- digit entropy: the entropy, in nats, of the histogram of predicted digits;
  log 10 = 2.303 when every digit is drawn equally often, 0 for a model that
  draws only one digit.

The same two numbers for real test images and for uniform noise are printed
beside them as the ends of the scale.
"""
import sys
import time
from functools import partial
from pathlib import Path

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from autograd.misc import flatten
from autograd.scipy.special import logsumexp

import data
from vaelib import fastgrad
from vaelib import arguments, checkpoints, models, runs
from data import DATA_DIM, NUM_CLASSES

DEFAULT_DIR = Path("output") / "classifier"
REFERENCE_SEED = 0      # the noise images and the test images' order


def layer_sizes(config):
    return [DATA_DIM] + [config["hidden_units"]] * config["hidden_layers"] + [NUM_CLASSES]


def init_params(sizes, rs):
    """He initialisation for ReLU layers: W ~ N(0, 2 / fan_in), b = 0."""
    return [(rs.randn(m, n) * np.sqrt(2.0 / m), np.zeros(n))
            for m, n in zip(sizes[:-1], sizes[1:])]


def log_probabilities(params, images):
    """log p(digit | image): (N, D) -> (N, 10)."""
    logits = fastgrad.neural_net_predict(params, images, "relu")
    return logits - logsumexp(logits, axis=1, keepdims=True)


def mean_log_likelihood(params, images, labels):
    """The training objective: the mean over images of log p(true digit | image)."""
    return fastgrad.batch_mean(anp.sum(labels * log_probabilities(params, images), axis=1))


def accuracy(params, images, labels, batch=2000):
    predictions = np.concatenate([np.argmax(log_probabilities(params, images[i:i + batch]), 1)
                                   for i in range(0, len(images), batch)])
    return float(np.mean(predictions == np.argmax(labels, axis=1)))


def train(params, images, labels, epochs, batch_size, learning_rate, seed,
          on_epoch_end=None, progress=False):
    """Adam on the mean log-likelihood, batches shuffled by default_rng(seed).
    -> params. on_epoch_end(epoch, params, train_log_likelihood, seconds)."""
    from tqdm import tqdm
    flat, unflatten = flatten(params)
    m, v = np.zeros_like(flat), np.zeros_like(flat)
    objective = value_and_grad(lambda flat, x, y: mean_log_likelihood(unflatten(flat), x, y))
    rng, t = np.random.default_rng(seed), 1
    for epoch in range(1, epochs + 1):
        start, order, total = time.perf_counter(), rng.permutation(len(images)), 0.0
        batches = range(0, len(images), batch_size)
        for i in tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                      disable=None if progress else True):
            rows = order[i:i + batch_size]
            value, gradient = objective(flat, images[rows], labels[rows])
            fastgrad.adam_step(flat, gradient, m, v, t, learning_rate)
            total, t = total + float(value), t + 1
        if on_epoch_end is not None:
            on_epoch_end(epoch, unflatten(flat), total / len(batches),
                         time.perf_counter() - start)
    return unflatten(flat)


def score(params, images, confidence=0.9):
    """How recognisable and how varied images are. -> {"confident_share",
    "digit_entropy_nats", "digit_histogram" (10 shares), "mean_top_probability"}."""
    probabilities = np.exp(np.concatenate([log_probabilities(params, images[i:i + 2000])
                                             for i in range(0, len(images), 2000)]))
    top = probabilities.max(axis=1)
    histogram = np.bincount(probabilities.argmax(axis=1), minlength=NUM_CLASSES) / len(images)
    used = histogram[histogram > 0]
    return {"confident_share": float(np.mean(top > confidence)),
            "digit_entropy_nats": float(np.sum(used * -np.log(used))) + 0.0,
            "digit_histogram": [float(h) for h in histogram],
            "mean_top_probability": float(top.mean())}


def load_classifier(path):
    networks, config, history = checkpoints.load_checkpoint(
        path, lambda config: {"classifier": layer_sizes(config)}, written_by="classifier.py")
    return networks["classifier"], config, history


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

def with_command(argv):
    """argv with its subcommand: the forms before subcommands, `[train options]`
    and `--score CHECKPOINT ... [score options]`, become `train ...` and
    `score CHECKPOINT ... ...`. A first word that is not an option is left to
    argparse (a subcommand, or a wrong one)."""
    if argv and (argv[0] in ("-h", "--help") or not argv[0].startswith("-")):
        return argv
    if "--score" in argv:
        return ["score", *(a for a in argv if a != "--score")]
    if any(a.startswith("--score=") for a in argv):
        return ["score", *(a.removeprefix("--score=") for a in argv)]
    return ["train", *argv]


def parse_args(argv=None):
    argv = with_command(sys.argv[1:] if argv is None else list(argv))
    parser = arguments.OneLineErrorParser(
        description="Train an MLP digit classifier (train), or use it to score the prior "
                    "samples of generative models (score). Without a subcommand, the options "
                    "are train's, or score's after --score CHECKPOINT ...")
    commands = parser.add_subparsers(dest="command", required=True, title="subcommands")
    train_parser = commands.add_parser(
        "train", help="train the classifier (the default)",
        description=f"Train the MLP digit classifier and write its checkpoint and metrics "
                    f"(default: {DEFAULT_DIR}/).")
    add = train_parser.add_argument
    add("--epochs", type=arguments.positive_int, default=10, help="passes over the training set")
    add("--batch-size", type=arguments.positive_int, default=100, help="images per Adam step")
    add("--hidden-units", type=arguments.positive_int, default=500, help="units per hidden layer")
    add("--hidden-layers", type=arguments.nonnegative_int, default=2, help="ReLU hidden layers")
    add("--learning-rate", type=arguments.positive_float, default=1e-3, help="Adam step size")
    add("--seed", type=arguments.seed_int, default=0,
        help="seeds the initial weights and the order of the batches")
    add("--n-train", type=arguments.positive_int, default=None, metavar="N",
        help="use only the first N training images (default: all)")
    add("--output-dir", type=arguments.output_dir, default=None, metavar="DIR",
        help=f"where the classifier's checkpoint and metrics go (default: {DEFAULT_DIR})")
    add("--overwrite", action="store_true", help="replace the classifier already there")
    add("--no-progress", action="store_true", help="no progress bar")
    score_parser = commands.add_parser(
        "score", help="score the prior samples of models (also: --score CHECKPOINT ...)",
        description="Score the prior samples of generative models with the classifier: the "
                    "recognised share and the digit entropy, beside real test images and "
                    "uniform noise.")
    add = score_parser.add_argument
    add("score", type=arguments.existing_file, nargs="+", metavar="CHECKPOINT",
        help="the models' checkpoints (of vae.py or variants.py)")
    add("--classifier", type=arguments.existing_file, default=None, metavar="PATH",
        help=f"the classifier (default: {DEFAULT_DIR}/checkpoint.npz)")
    add("--samples", type=arguments.positive_int, default=1000, help="samples per model")
    add("--confidence", type=arguments.checked(float, lambda c: 0 < c < 1, "a number in (0, 1)"),
        default=0.9, help="a sample is recognised above this probability")
    add("--json", type=arguments.output_file, default=None, metavar="PATH",
        help="also write the scores here (its folder must exist)")
    add("--overwrite", action="store_true", help="replace the --json report already there")
    return parser.parse_args(argv)


def run_metrics(config, history, status, wall_seconds):
    return {"status": status, "config": config, "epochs": history,
            "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
            "wall_seconds": wall_seconds, "versions": runs.library_versions()}


def run_training(args):
    config = {key: getattr(args, key) for key in (
        "epochs", "batch_size", "hidden_units", "hidden_layers", "learning_rate", "seed",
        "n_train")}
    out = args.output_dir or DEFAULT_DIR
    run = runs.TrainingRun(out, partial(run_metrics, config))
    runs.prepare_output_dir(out, (runs.CHECKPOINT_NAME, runs.METRICS_NAME), args.overwrite,
                            "classifier.py")
    _, train_images, train_labels, test_images, test_labels = data.load_mnist()
    train_images, train_labels = train_images[:args.n_train], train_labels[:args.n_train]
    params = init_params(layer_sizes(config), np.random.RandomState(args.seed))
    print(f"MLP classifier {'-'.join(map(str, layer_sizes(config)))} on {len(train_images)} "
          f"grey-level training images\n{'epoch':>5} {'train log-lik':>14} "
          f"{'test accuracy':>14} {'seconds':>8}")

    def on_epoch_end(epoch, params, train_log_likelihood, seconds):
        record = {"epoch": epoch, "train_log_likelihood": train_log_likelihood,
                  "test_accuracy": accuracy(params, test_images, test_labels),
                  "seconds": seconds}
        print(f"{epoch:5d} {train_log_likelihood:14.4f} {record['test_accuracy']:14.4f} "
              f"{seconds:8.1f}", flush=True)
        run.add_epoch(record, lambda history: checkpoints.save_checkpoint(
            run.checkpoint, {"classifier": params}, config, history))

    try:
        with runs.sigterm_as_interrupt():
            train(params, train_images, train_labels, args.epochs, args.batch_size,
                  args.learning_rate, args.seed, on_epoch_end, progress=not args.no_progress)
    except KeyboardInterrupt as e:
        return run.stopped(e)
    run.write_metrics("complete")
    print(f"Test accuracy {run.history[-1]['test_accuracy']:.2%} after {args.epochs} epochs. "
          f"Wrote {run.checkpoint} and {run.metrics_path}")
    return 0


def scoring_memory(samples):
    """Bytes, roughly, to score `samples` images of a model: its prior samples
    decoded all at once (the logits, their sigmoid and its temporaries), four
    float64 arrays of samples x DATA_DIM."""
    return 4 * 8 * samples * DATA_DIM


def run_scoring(args):
    path = args.classifier or DEFAULT_DIR / runs.CHECKPOINT_NAME
    if not path.is_file():
        raise runs.RunError(f"no classifier at {path}: train one with `python classifier.py`, "
                            "or name one with --classifier")
    if args.json is not None:
        arguments.check_output_file(args.json, "--json", args.overwrite)
    runs.check_memory(scoring_memory(args.samples), f"--samples {args.samples}",
                      "choose a smaller --samples")
    params, _, history = load_classifier(path)
    _, _, _, test_images, _ = data.load_mnist()
    try:
        with runs.sigterm_as_interrupt():
            rows = score_models(args, params, test_images)
    except KeyboardInterrupt as e:
        status, code = runs.interruption(e)
        print(f"\n{status.capitalize()}: nothing was written", file=sys.stderr)
        return code
    return run_scoring_report(args, path, history, rows)


def score_models(args, params, test_images):
    """The scores of the test images, of noise and of each model's prior samples."""
    rs = np.random.RandomState(REFERENCE_SEED)
    rows = {"MNIST test images": score(params, test_images[rs.permutation(len(test_images))
                                                           [:args.samples]], args.confidence),
            "uniform noise": score(params, rs.uniform(size=(args.samples, DATA_DIM)),
                                   args.confidence)}
    for checkpoint in args.score:
        images, config = models.prior_samples(checkpoint, args.samples)
        rows[f"{checkpoint} ({config['model']})"] = {
            "model": config["model"], **score(params, images, args.confidence)}
    return rows


def run_scoring_report(args, path, history, rows):
    """Prints the scores, and writes them to --json."""
    print(f"Classifier {path} (test accuracy {history[-1]['test_accuracy']:.2%}); "
          f"{args.samples} images each; recognised: top probability > {args.confidence}")
    print(f"{'':<60}{'recognised':>11}{'digit entropy':>15}")
    for name, r in rows.items():
        print(f"{name[-60:]:<60}{r['confident_share']:>11.1%}"
              f"{r['digit_entropy_nats']:>11.3f} nats")
    print(f"(the entropy is at most log 10 = {np.log(10):.3f} nats: every digit equally often)")
    if args.json is not None:
        runs.write_json(args.json, {"classifier": str(path), "samples": args.samples,
                                    "confidence": args.confidence, "scores": rows,
                                    "prior_sample_seed": 0})
        print(f"Wrote {args.json}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    return runs.run_main("classifier.py", lambda: run_scoring(args) if args.command == "score" else run_training(args))


if __name__ == "__main__":
    sys.exit(main())
