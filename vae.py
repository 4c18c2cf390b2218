"""Auto-encoding variational Bayes on binarised MNIST, in NumPy and autograd.

The reference solution of the course practical, following Kingma and Welling,
"Auto-Encoding Variational Bayes", ICLR 2014:

    encoder  q(z|x) = N(z; mean(x), diag(exp(log_std(x))^2))     (Appendix C.2)
    prior    p(z)   = N(z; 0, I)
    decoder  p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits(z)_d))  (Appendix C.1)
    ELBO     L(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))          (Eq. 10)

estimated with one reparameterised sample z = mean + exp(log_std) * eps,
eps ~ N(0, I) (Section 2.4), maximised with Adam (Kingma and Ba 2015).

The graded functions come first, then Adam, the training loop in the
skeleton's order, the figures and the command line. `python vae.py` runs
that loop with faster twins of the bound and of Adam from the library
(vaelib/training.py: the same numbers, tested); vaelib/ holds the run
machinery. Units: nats per image, summed over the 784 pixels, averaged over
images. `python vae.py --help` lists the options; nothing runs at import.
"""
import sys
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from vaelib import tuning  # noqa: F401  (before NumPy loads: its BLAS threads sleep when idle)
import autograd.numpy as np
import autograd.numpy.random as npr
from autograd import grad
from autograd.misc import flatten
from autograd.scipy.special import expit

from data import load_data
from vaelib import arguments, checkpoints, cli, runs, training
from vaelib.latents import GaussianLatent
from vaelib.networks import INITS, initial_params
from vaelib.training import ADAM_B1, ADAM_B2, ADAM_EPS, evaluate_elbo

NUM_PRIOR_SAMPLES = 25
NUM_RECONSTRUCTIONS = 10
INTERPOLATION_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
INTERPOLATION_STEPS = 25
MANIFOLD_SIDE = 20


# ---- The model: the assignment's functions (../shared/ASSIGNMENT.md) ---------

def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise; scipy's expit never overflows or warns."""
    return expit(x)


def relu(x):
    """max(0, x), elementwise."""
    return np.maximum(0.0, x)


def init_net_params(layer_sizes, scale=1e-2):
    """[(W, b), ...] with W: (m, n), b: (n,) for consecutive sizes (m, n),
    drawn as scale * randn from the global stream: W first, then b, layer by layer."""
    return [(scale * npr.randn(m, n), scale * npr.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def neural_net_predict(params, inputs, activation=relu):
    """ReLU hidden layers (or another activation, e.g. np.tanh), linear last layer.
    inputs: (N, D_in) or (D_in,) -> (N, D_out) or (D_out,)."""
    for W, b in params[:-1]:
        inputs = activation(np.dot(inputs, W) + b)
    W, b = params[-1]
    return np.dot(inputs, W) + b


def unpack_gaussian_params(q_means_and_log_stds):
    """(..., 2L) -> mean (..., L), log_std (..., L): the encoder's output layout."""
    latent_dim = q_means_and_log_stds.shape[-1] // 2
    return q_means_and_log_stds[..., :latent_dim], q_means_and_log_stds[..., latent_dim:]


def sample_latent_variables_from_posterior(encoder_output):
    """One z ~ q(z|x) per row, z = mean + exp(log_std) * eps (Kingma & Welling
    2014, Sec. 2.4). encoder_output: (N, 2L) -> (N, L); eps: one npr.randn(N, L)."""
    mean, log_std = unpack_gaussian_params(encoder_output)
    return mean + np.exp(log_std) * npr.randn(*mean.shape)


def bernoulli_log_prob(targets, logits):
    """log p(x|z) = sum_d log Bernoulli(x_d; sigmoid(l_d)): (N, D), (N, D) -> (N,).
    log sigmoid(l) = l - log(1 + e^l) and log(1 - sigmoid(l)) = -log(1 + e^l), so
    each term is x l - log(1 + e^l); np.logaddexp(0, l) computes log(1 + e^l)
    without overflow, exactly for every finite l (log(sigmoid(l)) gives -inf)."""
    return np.sum(targets * logits - np.logaddexp(0.0, logits), axis=-1)


def compute_KL(q_means_and_log_stds):
    """KL(N(mean, exp(log_std)^2) || N(0, I)) per row: (N, 2L) -> (N,).
    Kingma & Welling 2014, Appendix B: -KL = 1/2 sum_j (1 + log s_j^2 - m_j^2 - s_j^2)."""
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    return 0.5 * np.sum(np.exp(2 * log_std) + mean ** 2 - 1.0 - 2 * log_std, axis=-1)


def vae_lower_bound(gen_params, rec_params, data):
    """Monte Carlo estimate of the ELBO (Kingma & Welling 2014, Eq. 10), one
    sample per image, averaged over the batch. data: (N, D) binary -> scalar."""
    q_means_and_log_stds = neural_net_predict(rec_params, data)
    z = sample_latent_variables_from_posterior(q_means_and_log_stds)
    logits = neural_net_predict(gen_params, z)
    return np.mean(bernoulli_log_prob(data, logits) - compute_KL(q_means_and_log_stds))


ACTIVATIONS = {"relu": relu, "tanh": np.tanh}   # --activation


# ---- Training --------------------------------------------------------------

def binarize(images, rs=npr):
    """Dynamic binarisation: pixel d is 1 with probability images[:, d], from one
    uniform draw of images.shape (default: the global stream). -> 0.0 / 1.0."""
    return (images > rs.uniform(size=images.shape)).astype(images.dtype)


def adam_step(params, gradient, m, v, t, learning_rate=1e-3,
              b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS):
    """One bias-corrected Adam step (Kingma & Ba 2015, Algorithm 1) that
    *ascends* the objective; t counts from 1. -> (params, m, v)."""
    m = b1 * m + (1 - b1) * gradient
    v = b2 * v + (1 - b2) * gradient ** 2
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return params + learning_rate * m_hat / (np.sqrt(v_hat) + eps), m, v


def train(gen_params, rec_params, train_images, settings, objective=None, optimizer=adam_step,
          resume=None):
    """Maximises the ELBO with Adam as the course skeleton does, batches in order
    (the last may be short), drawing from the global stream. settings: a
    training.Settings (epochs, batch size, learning rate, Adam's eps, progress
    bar). objective(flat_params, data) -> the batch's bound (default:
    vae_lower_bound of the parameters flat_params holds); optimizer: adam_step
    or a twin. Yields a training.EpochEnd after every epoch: the parameters,
    the epoch's estimate, seconds, and the state that, passed as `resume`
    with those parameters, continues as if training had never stopped."""
    # Parameters flattened with autograd.misc.flatten: Adam updates the flat
    # vector, and autograd differentiates with respect to it.
    flat_params, unflatten = flatten((gen_params, rec_params))
    if objective is None:
        def objective(flat_params, data):
            return vae_lower_bound(*unflatten(flat_params), data)
    objective_grad = grad(objective)
    m, v, t = training.restore(resume, flat_params)
    for epoch in training.epochs(train_images, settings, resume):
        for images in epoch:
            t += 1
            flat_params, m, v = optimizer(flat_params, objective_grad(flat_params, binarize(images)),
                                          m, v, t, epoch.learning_rate, eps=settings.adam_eps)
            # The epoch's estimate: a fresh binarisation and sample, new parameters.
            epoch.add(objective(flat_params, binarize(images)))
        yield epoch.end(unflatten(flat_params),
                        training.training_state(epoch.number, m, v, t, seed=settings.seed))


# ---- Figures ---------------------------------------------------------------

def write_figures(gen_params, rec_params, test_images, test_labels, history,
                  output_dir, seed, activation="relu", latent=GaussianLatent, measure="ELBO"):
    """Writes every figure of a trained model into output_dir and returns the
    paths. Random draws come from RandomState(seed), so a checkpoint gives the
    same pictures as the run that wrote it. activation: a key of ACTIVATIONS;
    measure: the learning curve's name for the history's train/test values."""
    import plotting

    out, rs = Path(output_dir), npr.RandomState(seed)
    latent_dim = gen_params[0][0].shape[0]
    dtype = gen_params[0][0].dtype
    test_images = test_images.astype(dtype)
    activation = ACTIVATIONS[activation]

    def decode(z):
        return plotting.bernoulli_means(neural_net_predict(gen_params, z.astype(dtype),
                                                           activation))

    def encoder_means(images):
        return latent.locations(neural_net_predict(rec_params, images, activation))

    paths = [out / "samples_from_prior.png", out / "reconstructions.png"]
    # 1. z ~ p(z), shown as Bernoulli means.
    prior = decode(latent.sample_prior(rs, (NUM_PRIOR_SAMPLES, latent_dim)))
    plotting.save_images(prior, paths[0], vmin=0, vmax=1)
    # 2. Originals in the top row, reconstructions (encode, sample, decode) below.
    originals = test_images[:NUM_RECONSTRUCTIONS]   # fewer if the test set is tiny
    z = latent.reparameterize(neural_net_predict(rec_params, originals, activation),
                              rs.randn(len(originals), latent_dim))
    reconstructions = decode(z)
    plotting.save_images(np.concatenate([originals, reconstructions]), paths[1],
                         ims_per_row=len(originals), vmin=0, vmax=1)
    # 3. Straight lines between encoder means: z = (1 - s) z_a + s z_b, so each
    #    file starts at image a and ends at image b.
    s, frames = np.linspace(0, 1, INTERPOLATION_STEPS)[:, None], {}
    for a, b in [pair for pair in INTERPOLATION_PAIRS if max(pair) < len(test_images)]:
        z_a, z_b = encoder_means(test_images[[a, b]])
        paths.append(out / f"interpolation_{a}_{b}.png")
        frames[a, b] = decode((1 - s) * z_a + s * z_b)
        plotting.save_images(frames[a, b], paths[-1], vmin=0, vmax=1)
    # The same grids with titles, row labels and the test images' digits.
    paths.append(out / "figures_explained.png")
    plotting.save_figures_explained(prior, originals, reconstructions, frames,
                                    np.argmax(test_labels[:NUM_RECONSTRUCTIONS], axis=1), paths[-1])
    if history:
        paths.append(out / "learning_curve.png")
        plotting.save_learning_curve([r["epoch"] for r in history],
                                     [r["train_elbo"] for r in history],
                                     [r["test_elbo"] for r in history], paths[-1], measure)
    if latent_dim == 2:
        # Kingma & Welling 2014, Fig. 4: equal-probability grid, z = Phi^-1(p)
        # with p = (k + 1/2) / 20; z_1 grows to the right, z_2 upwards.
        grid = latent.ppf((np.arange(MANIFOLD_SIDE) + 0.5) / MANIFOLD_SIDE)
        z = np.array([[z1, z2] for z2 in grid[::-1] for z1 in grid])
        paths += [out / "latent_scatter.png", out / "latent_manifold.png"]
        plotting.save_latent_scatter(encoder_means(test_images),
                                     np.argmax(test_labels, axis=1), paths[-2])
        plotting.save_manifold(decode(z), paths[-1], MANIFOLD_SIDE, grid)
    return paths


# ---- The command line (the run's machinery: vaelib/) -----------------------

def parse_args(argv=None):
    """Parses and validates the command line (defaults: the assignment's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = arguments.OneLineErrorParser(
        description="Train a variational autoencoder on binarised MNIST and write "
                    "its figures, metrics and checkpoint.")
    cli.add_model_options(parser)
    add = parser.add_argument
    add("--seed", type=arguments.seed_int, default=0, help="seed of the global numpy random stream")
    add("--data-dir", type=arguments.existing_dir, default=None, metavar="DIR",
        help="folder with the four MNIST-format files, e.g. Fashion-MNIST "
             "(default: the MNIST copy shipped in datasets/mnist)")
    add("--output-dir", type=arguments.output_dir, default=None, metavar="DIR",
        help="where figures, metrics.json and the checkpoint go (default: output; "
             "with --from-checkpoint, the checkpoint's folder)")
    add("--overwrite", action="store_true",
        help="if the output folder holds a run, delete that run's files first")
    add("--dtype", choices=("float64", "float32"), default="float64",
        help="floating-point type of parameters and data")
    add("--loop", choices=("skeleton", "fast"), default="skeleton",
        help="skeleton: the course skeleton's loop and random stream (a gradient pass "
             "and a second ELBO evaluation per step); fast: one pass per step, noise from "
             "numpy.random.default_rng(seed), same mathematics, not stream-compatible")
    add("--init", choices=INITS, default="normal",
        help="normal: weights and biases N(0, 0.01^2), the skeleton's; glorot: "
             "W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), b = 0 (Glorot and Bengio "
             "2010, as Burda et al. 2016)")
    add("--adam-eps", type=arguments.positive_float, default=ADAM_EPS,
        help="Adam's epsilon (Kingma and Ba 2015: 1e-8; Burda et al. 2016: 1e-4)")
    add("--lr-schedule", choices=tuple(training.LR_SCHEDULES), default="constant",
        help="constant: --learning-rate throughout; burda: --learning-rate * 10^(-i/7) for "
             "3^i epochs, i = 0, ..., 7, 3,280 epochs in all (Burda et al. 2016, Section 5)")
    add("--resume", type=arguments.existing_file, default=None, metavar="PATH",
        help="continue the run of this checkpoint in its folder to --epochs epochs in all, "
             "with Adam's state, the random streams and the history restored: the result "
             "equals the uninterrupted run's")
    add("--from-checkpoint", type=arguments.existing_file, default=None, metavar="PATH",
        help="skip training: regenerate every figure from a checkpoint written by vae.py")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.given = arguments.given_options(argv)
    cli.refuse_conflicting_options(parser, args)
    return args


def run_training(args, held):
    """Trains per args (or continues the run --resume names) and writes
    checkpoint, metrics and figures; held (an ExitStack) keeps the folder's
    lock until it closes (two processes resuming one run would mix their
    epochs). -> exit code."""
    config, state, run, (gen_params, rec_params), (train_images, test_images, test_labels,
                                                   test_binary) = cli.start_training_run(
        args, held, partial(initial_params, init_net_params=init_net_params))
    out, checkpoint = run.checkpoint.parent, run.checkpoint
    rate = training.LR_SCHEDULES[config["lr_schedule"]](config["learning_rate"])
    settings = training.Settings(config["epochs"], config["batch_size"], rate, config["adam_eps"],
                                 config["seed"], progress=not args.no_progress)
    # The same loop with twins of the bound and of Adam: the same numbers, faster.
    loop = train if config["loop"] == "skeleton" else training.fast_train
    objective = training.fused_objective((gen_params, rec_params), config["activation"])

    def on_epoch_end(end):
        test = evaluate_elbo(end.gen_params, end.rec_params, test_binary,
                             activation=config["activation"])
        record = training.epoch_record(end.epoch, end.train_elbo, test, end.seconds,
                                       learning_rate=rate(end.epoch))
        end.state["sittings"] = run.with_this_sitting(end.epoch)
        run.add_epoch(record, lambda history: checkpoints.save_model(
            checkpoint, end.gen_params, end.rec_params, config, history, end.state))

    try:
        with runs.sigterm_as_interrupt():
            gen_params, rec_params = training.final_params(
                loop(gen_params, rec_params, train_images, settings, objective,
                     training.in_place_adam(), resume=state), on_epoch_end)
            paths = write_figures(gen_params, rec_params, test_images, test_labels, run.history,
                                  out, config["seed"], config["activation"])
            epochs, wall = config["epochs"], run.write_metrics("complete")
    except (KeyboardInterrupt, runs.TrainingDiverged, OSError) as e:
        return run.stopped(
            e, f"No figures were written. Try a smaller --learning-rate (it was "
               f"{config['learning_rate']})",
            cli.how_to_go_on(checkpoint, run.history, config["epochs"],
                             resumable=not isinstance(e, runs.TrainingDiverged)))
    print(f"Final test ELBO {run.history[-1]['test_elbo']:.2f} nats per image after "
          f"{epochs} epoch{'s' * (epochs > 1)} ({wall:.0f} s). Wrote {checkpoint}, "
          f"{run.metrics_path} and {len(paths)} figures to {out}/")
    print(f"The ELBO is a lower bound on log p(x). To estimate log p(x) itself (importance "
          f"sampling, K=5000; about half an hour on one CPU core for the 10000 test images), "
          f"run: {runs.EVALUATE_COMMAND.format(checkpoint)}")
    return 0


def run_from_checkpoint(args):
    """Regenerates every figure from a checkpoint, without training, beside the
    checkpoint unless --output-dir names another folder."""
    gen_params, rec_params, config, history, note = checkpoints.read_model(args.from_checkpoint)
    if note:
        print(note, flush=True)
    home = args.from_checkpoint.parent
    out = args.output_dir or home
    others = runs.RUN_FILES if out.resolve() != home.resolve() else ()   # its own run's figures
    runs.prepare_output_dir(out, others, args.overwrite, "vae.py", runs.FIGURE_BYTES)
    _, _, _, test_images, test_labels = load_data(config["data_dir"])
    paths = write_figures(gen_params, rec_params, test_images, test_labels, history,
                          out, config["seed"], config["activation"])
    print(f"Wrote {len(paths)} figures from {args.from_checkpoint} "
          f"(epoch {history[-1]['epoch'] if history else 0}) to {out}/")
    return 0


def main(argv=None):
    """Entry point of `python vae.py`: returns the exit code."""
    args = parse_args(argv)

    def work():
        with ExitStack() as held:   # a training run's lock on its folder, until it returns
            return run_from_checkpoint(args) if args.from_checkpoint else run_training(args, held)
    return runs.run_main("vae.py", work)


if __name__ == "__main__":
    sys.exit(main())
