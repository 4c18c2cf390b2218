"""Auto-encoding variational Bayes on binarised MNIST, in NumPy and autograd.

The reference solution of the course practical, following Kingma and Welling,
"Auto-Encoding Variational Bayes", ICLR 2014:

    encoder  q(z|x) = N(z; mean(x), diag(exp(log_std(x))^2))     (Appendix C.2)
    prior    p(z)   = N(z; 0, I)
    decoder  p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits(z)_d))  (Appendix C.1)
    ELBO     L(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))          (Eq. 10)

estimated with one reparameterised sample z = mean + exp(log_std) * eps,
eps ~ N(0, I) (Section 2.4), maximised with Adam (Kingma and Ba 2015).

The graded functions come first, in plain autograd; the training loops
differentiate the same bound built from fastgrad.py's fused derivatives
(tested equal, several times faster); runs.py holds the run machinery.
Units: nats per image, summed over the 784 pixels, averaged over images.
`python vae.py --help` lists the options; nothing runs at import.
"""
import os
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

# Before NumPy loads: OpenBLAS's idle threads then sleep at once instead of
# spinning on the core that Adam and the log-likelihood share (docs/speed.md).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import autograd.numpy as np
import autograd.numpy.random as npr
from autograd import grad, value_and_grad
from autograd.misc import flatten
from autograd.scipy.special import expit

from vaelib import fastgrad
from vaelib import runs
from data import DATA_DIM, load_data

NUM_PRIOR_SAMPLES = 25
NUM_RECONSTRUCTIONS = 10
INTERPOLATION_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
INTERPOLATION_STEPS = 25
MANIFOLD_SIDE = 20
TEST_BINARIZATION_SEED = 1234  # the test set is binarised once, with its own stream
TEST_POSTERIOR_SEED = 4321     # the posterior samples of the test ELBO, same every epoch
EVAL_BATCH_SIZE = 1000
FIGURE_BYTES = 2 ** 23       # room the figures need on disk, generously
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
ADAM_SPLIT_SIZE = 2 ** 16    # parameters from which Adam updates in two threads
CHECKPOINT_NAME, METRICS_NAME = runs.CHECKPOINT_NAME, runs.METRICS_NAME
EVALUATION_NAME = "evaluation_test_sample.json"   # evaluate.py's report, default options
EVALUATE_COMMAND = "python evaluate.py {}"        # estimates log p(x) of a checkpoint
FIGURE_NAMES = ("samples_from_prior.png", "reconstructions.png", "interpolation_*_*.png",
                "figures_explained.png", "learning_curve.png", "latent_scatter.png",
                "latent_manifold.png")
REPORT_FILES = ("evaluation_*.json", "evaluation_*.npz", "conditional_*.json",
                "conditional_*.png")   # evaluate.py's and conditional.py's, on one checkpoint
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, *FIGURE_NAMES, *REPORT_FILES)
# (what a run, evaluate.py and conditional.py write into the run's folder)
TRAIN_BINARIZATION = "dynamic: every training batch binarised afresh, x > uniform(0, 1)"
TEST_BINARIZATION = ("sampled once: x > uniform(0, 1) drawn from "
                     f"numpy.random.RandomState({TEST_BINARIZATION_SEED})")


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


def init_glorot_params(layer_sizes):
    """[(W, b), ...] as Glorot and Bengio (2010, Eq. 16) initialise them, the
    heuristic Burda et al. (2016) used: W ~ U(-a, a), a = sqrt(6 / (m + n)),
    from the global stream layer by layer; b = 0."""
    return [(npr.uniform(-np.sqrt(6 / (m + n)), np.sqrt(6 / (m + n)), (m, n)), np.zeros(n))
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


ACTIVATIONS = {"relu": relu, "tanh": np.tanh}   # --activation; fastgrad takes the names


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


def fused_elbo_terms(gen_params, rec_params, data, randn, activation="relu"):
    """The terms of vae_lower_bound per image, built from fastgrad's fused
    derivatives, with eps = randn(N, L) and hidden layers of the activation
    named (a key of ACTIVATIONS). -> log p(x|z) (N,), KL (N,)."""
    q_means_and_log_stds = fastgrad.neural_net_predict(rec_params, data, activation)
    eps = randn(len(data), q_means_and_log_stds.shape[-1] // 2)
    logits = fastgrad.neural_net_predict(
        gen_params, fastgrad.reparameterize(q_means_and_log_stds, eps), activation)
    return (fastgrad.bernoulli_log_prob(data, logits),
            fastgrad.compute_KL(q_means_and_log_stds))


def fused_lower_bound(gen_params, rec_params, data, randn=npr.randn, activation="relu"):
    """vae_lower_bound, the objective both training loops differentiate: the
    same value and gradient for the same noise (tests/test_fastgrad.py). With
    the default randn it draws from the global stream as vae_lower_bound does.
    A tanh model trains with functools.partial(fused_lower_bound, activation="tanh")."""
    log_px_given_z, kl = fused_elbo_terms(gen_params, rec_params, data, randn, activation)
    return fastgrad.batch_mean(log_px_given_z - kl)


class Adam:
    """fastgrad's in-place Adam on the flat parameter vector, with its state:
    the moments m and v and the step count t. update(gradient) takes one step
    at the current learning_rate, which the loop may change between epochs."""

    def __init__(self, flat_params, learning_rate, eps=ADAM_EPS):
        self.params, self.learning_rate, self.eps, self.t = flat_params, learning_rate, eps, 0
        self.m, self.v, self.scratch = (np.zeros_like(flat_params) for _ in range(3))
        # Two threads for large vectors on two free cores: the same numbers, faster.
        self.split = flat_params.size >= ADAM_SPLIT_SIZE and fastgrad.cores() > 1

    def __call__(self, gradient):
        self.t += 1
        fastgrad.adam_step(self.params, gradient, self.m, self.v, self.t, self.learning_rate,
                           ADAM_B1, ADAM_B2, self.eps, scratch=self.scratch, split=self.split)


fused_lower_bound.flat_form = fastgrad.flat_lower_bound   # the same bound, one node


def on_flat_params(objective, like):
    """objective as a function of the flat parameter vector, viewed as `like`.
    An objective with a flat_form (fused_lower_bound, or a partial of it that
    fixes keywords) is that one fused primitive instead: the same numbers."""
    base, keywords = ((objective.func, objective.keywords) if isinstance(objective, partial)
                      and not objective.args else (objective, {}))
    flat_form = getattr(base, "flat_form", None)
    if flat_form is not None:
        return lambda flat_params, data, randn: flat_form(flat_params, like, data, randn,
                                                          **keywords)
    return lambda flat_params, data, randn: objective(
        *fastgrad.unflatten_views(flat_params, like), data, randn)


def skeleton_step(objective, flat_params, like, update, rng):
    """The course skeleton's step, drawing from the global stream as it does:
    binarise, gradient of the objective, Adam step, binarise again and
    evaluate the objective at the new parameters (the epoch's estimate).
    objective(gen_params, rec_params, data, randn) -> scalar; update: an Adam.
    `rng` is unused: the global stream was seeded before the parameters were
    drawn. step(images, upcoming) -> the estimate; upcoming is ignored."""
    flat_objective = on_flat_params(objective, like)
    objective_grad = grad(flat_objective)

    def step(images, upcoming=None):
        update(objective_grad(flat_params, binarize(images), npr.randn))
        return flat_objective(flat_params, binarize(images), npr.randn)
    return step


def fast_step(objective, flat_params, like, update, rng):
    """The same mathematics with one value-and-gradient pass per step (the
    estimate is the objective before the update); binarisation and noise from
    the generator rng (numpy.random.default_rng(seed)) in the data's dtype.
    Not stream-compatible with the skeleton. step(images, upcoming): if the
    next step's images are given, their binarisation, the stream's next draw,
    is made by a second thread while Adam updates (the same numbers)."""
    objective_and_grad = value_and_grad(on_flat_params(objective, like))
    pending = []   # the next batch's binarised data, being drawn

    def binarized(images):
        data = rng.random(images.shape, dtype=images.dtype)
        return np.greater(images, data, out=data, casting="unsafe")   # x > u as 0.0 / 1.0

    def step(images, upcoming=None):
        data = pending.pop().result() if pending else binarized(images)
        elbo, gradient = objective_and_grad(
            flat_params, data, lambda *shape: rng.standard_normal(shape, dtype=images.dtype))
        if upcoming is not None:   # not earlier: beside the products, it would slow them
            pending.append(fastgrad.worker().submit(binarized, upcoming))
        update(gradient)
        return elbo
    return step


def burda_learning_rate(epoch, base=1e-3):
    """Burda, Grosse and Salakhutdinov (2016), Section 5: base * 10^(-i/7)
    for 3^i passes, i = 0, ..., 7 (3,280 passes in all; i stays 7 after)."""
    i = 0
    while i < 7 and epoch > (3 ** (i + 1) - 1) // 2:   # passes of stages 0..i
        i += 1
    return base * 10 ** (-i / 7)


LR_SCHEDULES = {"constant": lambda base: lambda epoch: base,
                "burda": lambda base: partial(burda_learning_rate, base=base)}


def training_state(epoch, update, rng):
    """What continuing after `epoch` needs, exactly: Adam's moments and step
    count, and both random streams (the global one, which the skeleton loop
    draws from, and the generator of the fast loop). Arrays and JSON values."""
    stream = npr.get_state(legacy=False)
    return {"epoch": epoch, "adam_t": update.t, "adam_m": update.m.copy(),
            "adam_v": update.v.copy(), "generator": rng.bit_generator.state,
            "global_key": stream["state"]["key"],
            "global_stream": {"pos": stream["state"]["pos"], "has_gauss": stream["has_gauss"],
                              "gauss": stream["gauss"]}}


def restore_training_state(state, update, rng):
    """The inverse of training_state. -> the epoch it was taken after."""
    update.t = state["adam_t"]
    update.m[...], update.v[...] = state["adam_m"], state["adam_v"]
    rng.bit_generator.state = state["generator"]
    stream = state["global_stream"]
    npr.set_state({"bit_generator": "MT19937", "has_gauss": stream["has_gauss"],
                   "gauss": stream["gauss"],
                   "state": {"key": state["global_key"], "pos": stream["pos"]}})
    return state["epoch"]


def train(gen_params, rec_params, train_images, epochs, batch_size, learning_rate,
          objective=fused_lower_bound, step=skeleton_step, on_epoch_end=None,
          progress=False, seed=0, adam_eps=ADAM_EPS, resume=None):
    """Maximises objective(gen_params, rec_params, data, randn) with Adam, batches
    in order (the last may be short); step (skeleton_step or fast_step) makes
    the per-batch function. learning_rate: a number, or a function of the
    epoch (1, 2, ...). -> (gen_params, rec_params).
    on_epoch_end(epoch, gen_params, rec_params, train_elbo, seconds, state)
    follows every epoch; given that state as `resume`, with that epoch's
    parameters, training continues exactly as if it had never stopped."""
    from tqdm import tqdm

    fastgrad.keep_freed_memory()
    # Parameters flattened with autograd.misc.flatten: Adam updates the flat
    # vector in place, and autograd differentiates with respect to it.
    flat_params, unflatten = flatten((gen_params, rec_params))
    rate = learning_rate if callable(learning_rate) else LR_SCHEDULES["constant"](learning_rate)
    update, rng = Adam(flat_params, None, adam_eps), npr.default_rng(seed)
    done = 0 if resume is None else restore_training_state(resume, update, rng)
    batch_step = step(objective, flat_params, (gen_params, rec_params), update, rng)
    num_batches = -(-len(train_images) // batch_size)
    for epoch in range(done + 1, epochs + 1):
        start, elbo_sum, update.learning_rate = time.perf_counter(), 0.0, rate(epoch)
        batches = tqdm(range(num_batches), desc=f"epoch {epoch}/{epochs}", leave=False,
                       unit="batch", disable=None if progress else True)
        for n in batches:
            upcoming = train_images[(n + 1) * batch_size:(n + 2) * batch_size]
            elbo = batch_step(train_images[n * batch_size:(n + 1) * batch_size],
                              upcoming if len(upcoming) else None)
            if not np.isfinite(elbo):
                raise runs.TrainingDiverged(f"the ELBO became {elbo} at epoch {epoch}, "
                                            f"batch {n + 1}")
            elbo_sum += float(elbo)
            batches.set_postfix(elbo=f"{elbo_sum / (n + 1):.2f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, *unflatten(flat_params), elbo_sum / num_batches,
                         time.perf_counter() - start, training_state(epoch, update, rng))
    return unflatten(flat_params)


LOOPS = {"skeleton": skeleton_step, "fast": fast_step}


def evaluate_elbo(gen_params, rec_params, binary_images, seed=TEST_POSTERIOR_SEED,
                  activation="relu"):
    """ELBO of a fixed binary data set, one posterior sample per image drawn
    from RandomState(seed): the global stream is untouched and repeated calls
    are comparable. -> {"elbo", "log_px_given_z", "kl"}, means over images."""
    rs = npr.RandomState(seed)
    terms = [fused_elbo_terms(gen_params, rec_params, binary_images[i:i + EVAL_BATCH_SIZE],
                              rs.randn, activation)
             for i in range(0, len(binary_images), EVAL_BATCH_SIZE)]
    log_px_given_z = np.concatenate([lp for lp, _ in terms])
    kl = np.concatenate([kl for _, kl in terms])
    return {"elbo": float(np.mean(log_px_given_z - kl)),
            "log_px_given_z": float(np.mean(log_px_given_z)), "kl": float(np.mean(kl))}


EPOCH_HEADER = (f"{'epoch':>5} {'train ELBO':>11} {'test ELBO':>10} {'log p(x|z)':>11} "
                f"{'KL':>7} {'seconds':>8}")


def epoch_record(epoch, train_elbo, test, seconds, **more):
    """The history record of an epoch, printed as a row under EPOCH_HEADER;
    test: evaluate_elbo's dict. Raises runs.TrainingDiverged if the test ELBO
    is not finite."""
    if not np.isfinite(test["elbo"]):
        raise runs.TrainingDiverged(f"the test ELBO became {test['elbo']} after epoch {epoch}")
    print(f"{epoch:5d} {train_elbo:11.2f} {test['elbo']:10.2f} "
          f"{test['log_px_given_z']:11.2f} {test['kl']:7.2f} {seconds:8.1f}", flush=True)
    return {"epoch": epoch, "train_elbo": train_elbo, "test_elbo": test["elbo"],
            "test_log_px_given_z": test["log_px_given_z"], "test_kl": test["kl"],
            "seconds": seconds, **more}


# ---- Figures ---------------------------------------------------------------

class GaussianLatent:
    """The latent space of this model, as write_figures uses it: draws from
    the prior N(0, I), its quantile function, z from the encoder's output and
    standard normal noise, and the posterior's location (the mean). Other
    latent spaces (variants.py) pass their own."""

    @staticmethod
    def sample_prior(rs, shape):
        return rs.randn(*shape)

    @staticmethod
    def ppf(p):
        from scipy.stats import norm
        return norm.ppf(p)

    reparameterize = staticmethod(fastgrad.reparameterize)

    @staticmethod
    def locations(encoder_output):
        return unpack_gaussian_params(encoder_output)[0]


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


# ---- The command line (run machinery: runs.py) -----------------------------

def layer_sizes(config):
    """(generator sizes, recognition sizes) for a configuration dict."""
    hidden = [config["hidden_units"]] * config["hidden_layers"]
    return ([config["latent_dim"]] + hidden + [DATA_DIM],
            [DATA_DIM] + hidden + [2 * config["latent_dim"]])


def cast_params(params, dtype):
    return [(W.astype(dtype), b.astype(dtype)) for W, b in params]


INITS = {"normal": init_net_params, "glorot": init_glorot_params}   # --init


def initial_params(config, dtype, seed):
    """(gen_params, rec_params) as the skeleton initialises them (or with
    config["init"]): the global stream seeded with `seed`, generator first,
    then cast to dtype."""
    npr.seed(seed)
    init = INITS[config.get("init", "normal")]
    return tuple(cast_params(init(sizes), dtype) for sizes in layer_sizes(config))


def count_params(config):
    return runs.count_params(layer_sizes(config))


HISTORY_KEYS = {"epoch", "train_elbo", "test_elbo"}
DEFAULT_ACTIVATION = "relu"   # of checkpoints written before --activation existed


def load_model(path):
    """-> (gen_params, rec_params, config, history) of a checkpoint written by
    vae.py, validated (runs.load_checkpoint); raises runs.RunError."""
    def sizes(config):   # another model is named before its shapes are judged
        model = config.get("model", "vae")
        if model != "vae":
            raise runs.RunError(
                f"{path} holds a{'n' * (str(model)[:1] in 'aeiou')} {model} model written by "
                f"variants.py (`python variants.py {model}`), and this script reads vae.py's "
                "model only; that run's figures and metrics.json are beside it, and "
                f"`python classifier.py --score {path}` scores its prior samples")
        return dict(zip(("gen", "rec"), layer_sizes(config)))
    networks, config, history = runs.load_checkpoint(path, sizes)
    if not all(HISTORY_KEYS <= set(record) for record in history):
        raise runs.RunError(f"{path} is not a checkpoint written by vae.py (an epoch of "
                            f"its history lacks one of {', '.join(sorted(HISTORY_KEYS))})")
    config.setdefault("activation", DEFAULT_ACTIVATION)
    config.setdefault("init", "normal")        # as written before these options existed
    config.setdefault("lr_schedule", "constant")
    config.setdefault("adam_eps", config.get("adam", {}).get("eps", ADAM_EPS))
    if config["activation"] not in ACTIVATIONS:
        raise runs.RunError(f"{path} names the activation {config['activation']!r}; this "
                            f"vae.py knows {', '.join(ACTIVATIONS)}")
    return networks["gen"], networks["rec"], config, history


def read_model(path):
    """load_model, for a report on the checkpoint: -> (gen_params, rec_params,
    config, history, note), note a line saying that a run is training into
    the checkpoint's folder right now (runs.being_trained), or None."""
    holder = runs.lock_holder(Path(path).parent)
    gen_params, rec_params, config, history = load_model(path)
    return gen_params, rec_params, config, history, runs.being_trained(
        path, len(history), config.get("epochs"), holder)


def save_model(path, gen_params, rec_params, config, history, state=None):
    runs.save_checkpoint(path, {"gen": gen_params, "rec": rec_params}, config, history, state)


def load_resumable(args):
    """-> (gen_params, rec_params, config, history, state) of the checkpoint
    --resume names, with config["epochs"] = --epochs; raises runs.RunError if
    it cannot be continued exactly as asked."""
    path = args.resume
    gen_params, rec_params, config, history = load_model(path)
    state = runs.load_state(path)
    if state is None:
        raise runs.RunError(f"{path} was written before checkpoints held what resuming needs "
                            "(Adam's moments, the random streams), so it cannot be continued "
                            "exactly; `python vae.py --from-checkpoint` still draws its figures "
                            "and evaluate.py evaluates it")
    done, size = state.get("epoch"), count_params(config)
    if (done != len(history) or any(np.shape(state.get(k)) != (size,) or
                                     np.asarray(state.get(k)).dtype != config["dtype"]
                                     for k in ("adam_m", "adam_v"))):
        raise runs.RunError(f"{path} holds an inconsistent training state (epoch {done}, "
                            f"{len(history)} epochs of history); it cannot be resumed")
    changed = [f"--{dest.replace('_', '-')} {getattr(args, dest)} (the run has {config[dest]})"
               for dest in TRAINING_OPTIONS if dest != "epochs"
               and f"--{dest.replace('_', '-')}" in args.given
               and str(getattr(args, dest)) != str(config[dest])]
    if changed:
        raise runs.RunError(f"a resumed run keeps the settings it started with, and "
                            f"{'; '.join(changed)} would change them", exit_code=2)
    if args.epochs <= done:
        raise runs.RunError(f"{path} already holds {done} epochs; --epochs is the total to "
                            f"reach, e.g. --epochs {done + 30}", exit_code=2)
    config["epochs"] = args.epochs
    return gen_params, rec_params, config, history, state


def run_metrics(config, checkpoint, history, status, wall_seconds):
    """metrics.json: everything needed to interpret and reproduce the run."""
    train_stream = (" from the global numpy.random stream" if config["loop"] == "skeleton"
                    else f" from numpy.random.default_rng({config['seed']})")
    return {
        "status": status, "config": config, "seed": config["seed"],
        "versions": runs.library_versions(),
        "units": "nats per image, summed over pixels, averaged over images; higher is better",
        "binarization": {"train": TRAIN_BINARIZATION + train_stream, "test": TEST_BINARIZATION,
                         "test_posterior_samples": "one per image, numpy.random.RandomState"
                                                   f"({TEST_POSTERIOR_SEED}), the same every epoch"},
        "epochs": history,
        "final_test_elbo": history[-1]["test_elbo"] if history else None,
        "wall_seconds": wall_seconds, "checkpoint": str(checkpoint),
        "log_likelihood": {
            "note": "the ELBO is a lower bound on log p(x); evaluate.py estimates log p(x) "
                    "of this checkpoint by importance sampling",
            "command": EVALUATE_COMMAND.format(checkpoint),
            "report": str(Path(checkpoint).parent / EVALUATION_NAME)},
    }


TRAINING_OPTIONS = ("epochs", "batch_size", "latent_dim", "hidden_units", "hidden_layers",
                    "activation", "learning_rate", "seed", "n_train", "dtype", "loop", "data_dir",
                    "init", "lr_schedule", "adam_eps")


def add_model_options(parser):
    """The options that shape a model and its training, with the assignment's
    defaults: vae.py's, and those of every script that trains with its loop."""
    add = parser.add_argument
    add("--epochs", type=runs.positive_int, default=30, help="passes over the training set")
    add("--batch-size", type=runs.positive_int, default=200, help="images per Adam step")
    add("--latent-dim", type=runs.positive_int, default=50, help="dimension L of z")
    add("--hidden-units", type=runs.positive_int, default=200, help="units per hidden layer")
    add("--hidden-layers", type=runs.nonnegative_int, default=2,
        help="hidden layers in the encoder and in the decoder")
    add("--activation", choices=tuple(ACTIVATIONS), default="relu",
        help="of the hidden layers: relu (the assignment's) or tanh (Kingma and Welling's, Appendix C)")
    add("--learning-rate", type=runs.positive_float, default=1e-3, help="Adam step size")
    add("--n-train", type=runs.positive_int, default=None, metavar="N",
        help="use only the first N training images (default: all)")


def parse_args(argv=None):
    """Parses and validates the command line (defaults: the assignment's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = runs.OneLineErrorParser(
        description="Train a variational autoencoder on binarised MNIST and write "
                    "its figures, metrics and checkpoint.")
    add_model_options(parser)
    add = parser.add_argument
    add("--seed", type=runs.seed_int, default=0, help="seed of the global numpy random stream")
    add("--data-dir", type=runs.existing_dir, default=None, metavar="DIR",
        help="folder with the four MNIST-format files, e.g. Fashion-MNIST "
             "(default: the MNIST copy shipped in datasets/mnist)")
    add("--output-dir", type=runs.output_dir, default=None, metavar="DIR",
        help="where figures, metrics.json and the checkpoint go (default: output; "
             "with --from-checkpoint, the checkpoint's folder)")
    add("--overwrite", action="store_true",
        help="if the output folder holds a run, delete that run's files first")
    add("--dtype", choices=("float64", "float32"), default="float64",
        help="floating-point type of parameters and data")
    add("--loop", choices=tuple(LOOPS), default="skeleton",
        help="skeleton: the course skeleton's loop and random stream (a gradient pass "
             "and a second ELBO evaluation per step); fast: one pass per step, noise from "
             "numpy.random.default_rng(seed), same mathematics, not stream-compatible")
    add("--init", choices=tuple(INITS), default="normal",
        help="normal: weights and biases N(0, 0.01^2), the skeleton's; glorot: "
             "W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)), b = 0 (Glorot and Bengio "
             "2010, as Burda et al. 2016)")
    add("--adam-eps", type=runs.positive_float, default=ADAM_EPS,
        help="Adam's epsilon (Kingma and Ba 2015: 1e-8; Burda et al. 2016: 1e-4)")
    add("--lr-schedule", choices=tuple(LR_SCHEDULES), default="constant",
        help="constant: --learning-rate throughout; burda: --learning-rate * 10^(-i/7) for "
             "3^i epochs, i = 0, ..., 7, 3,280 epochs in all (Burda et al. 2016, Section 5)")
    add("--resume", type=runs.existing_file, default=None, metavar="PATH",
        help="continue the run of this checkpoint in its folder to --epochs epochs in all, "
             "with Adam's state, the random streams and the history restored: the result "
             "equals the uninterrupted run's")
    add("--from-checkpoint", type=runs.existing_file, default=None, metavar="PATH",
        help="skip training: regenerate every figure from a checkpoint written by vae.py")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.given = runs.given_options(argv)
    if args.resume and (args.from_checkpoint or args.output_dir or args.overwrite):
        parser.error("--resume continues the run in the checkpoint's folder; it takes no "
                     "--from-checkpoint, --output-dir or --overwrite")
    if args.from_checkpoint:
        ignored = [option for option in (f"--{dest.replace('_', '-')}" for dest in TRAINING_OPTIONS)
                   if option in runs.given_options(argv)]
        if ignored:
            parser.error(f"--from-checkpoint takes its settings from the checkpoint; "
                         f"{', '.join(ignored)} would be ignored")
    return args


def print_header(config, n_train, n_test):
    gen_sizes, rec_sizes = layer_sizes(config)
    print(f"VAE: {n_train} training and {n_test} test images; "
          f"encoder {'-'.join(map(str, rec_sizes))}, decoder {'-'.join(map(str, gen_sizes))} "
          f"({config['activation']}); "
          f"{config['dtype']}, seed {config['seed']}, {config['loop']} loop")
    print("ELBO in nats per image (summed over pixels, averaged over images); higher "
          "is better.\nTrain: Monte Carlo estimate over the epoch's batches, binarised "
          f"afresh{' (before each update)' * (config['loop'] == 'fast')}. Test: all {n_test} "
          f"test images, binarised once (seed {TEST_BINARIZATION_SEED}).")
    print(EPOCH_HEADER)


def run_training(args):
    """Trains per args (or continues the run --resume names), writes checkpoint,
    metrics and figures, holding the folder's lock (two processes resuming one
    run would mix their epochs). -> exit code."""
    with ExitStack() as held:   # the lock, taken below, is released on return
        return train_into(args, held)


def train_into(args, held):
    """run_training; held (an ExitStack) keeps the folder's lock until it closes."""
    out = args.resume.parent if args.resume else args.output_dir or Path("output")
    if args.resume:
        held.enter_context(runs.locked(out, "vae.py"))
        gen_params, rec_params, config, history, state = load_resumable(args)
    else:
        config = {key: getattr(args, key) for key in TRAINING_OPTIONS}
        config.update(data_dir=None if args.data_dir is None else str(args.data_dir),
                      adam={"b1": ADAM_B1, "b2": ADAM_B2})
        history, state = [], None
    checkpoint = out / CHECKPOINT_NAME
    run = runs.TrainingRun(out, partial(run_metrics, config, checkpoint), history,
                           [] if state is None else state.get("sittings", []))
    dtype, n_train = config["dtype"], config["n_train"]
    rows = min(config["batch_size"], n_train or 60000) + EVAL_BATCH_SIZE
    runs.check_memory(runs.training_memory(layer_sizes(config), dtype, rows),
                      f"this model ({count_params(config):,} parameters)",
                      "choose a smaller --hidden-units, --latent-dim, --hidden-layers or --batch-size")
    N, train_images, _, test_images, test_labels = load_data(config["data_dir"])
    runs.check_training_size(N, n_train, config["batch_size"])
    need = 2 * 3 * count_params(config) * np.dtype(dtype).itemsize + FIGURE_BYTES
    if args.resume:   # old and new checkpoint: parameters, Adam's m and v
        reports = runs.run_files(out, REPORT_FILES)
        if reports:
            raise runs.RunError(f"{out} holds reports on the checkpoint as it is now "
                                f"({', '.join(p.name for p in reports)}); move them elsewhere "
                                "first, so that they do not sit beside a later epoch's "
                                "checkpoint", exit_code=2)
        runs.check_writable(out, need)
    else:
        runs.check_writable(out)   # creates it: the lock comes before --overwrite deletes
        held.enter_context(runs.locked(out, "vae.py"))
        runs.prepare_output_dir(out, RUN_FILES, args.overwrite, "vae.py", need)
        gen_params, rec_params = initial_params(config, dtype, config["seed"])
    train_images = train_images[:n_train].astype(dtype)
    test_binary = binarize(test_images, npr.RandomState(TEST_BINARIZATION_SEED)).astype(dtype)
    run.write_metrics("running")   # claims the folder
    print_header(config, len(train_images), len(test_images))
    if args.resume:
        print(f"Resuming {checkpoint} after epoch {state['epoch']}, to epoch {config['epochs']}")
    rate = LR_SCHEDULES[config["lr_schedule"]](config["learning_rate"])

    def on_epoch_end(epoch, gen_params, rec_params, train_elbo, seconds, state):
        test = evaluate_elbo(gen_params, rec_params, test_binary, activation=config["activation"])
        record = epoch_record(epoch, train_elbo, test, seconds, learning_rate=rate(epoch))
        state["sittings"] = run.with_this_sitting(epoch)
        run.add_epoch(record, lambda history: save_model(checkpoint, gen_params, rec_params,
                                                         config, history, state))

    try:
        with runs.sigterm_as_interrupt():
            gen_params, rec_params = train(
                gen_params, rec_params, train_images, config["epochs"], config["batch_size"],
                rate, objective=partial(fused_lower_bound, activation=config["activation"]),
                step=LOOPS[config["loop"]], on_epoch_end=on_epoch_end,
                progress=not args.no_progress, seed=config["seed"],
                adam_eps=config["adam_eps"], resume=state)
            paths = write_figures(gen_params, rec_params, test_images, test_labels, run.history,
                                  out, config["seed"], config["activation"])
            epochs, wall = config["epochs"], run.write_metrics("complete")
    except (KeyboardInterrupt, runs.TrainingDiverged, OSError) as e:
        return run.stopped(
            e, f"No figures were written. Try a smaller --learning-rate (it was "
               f"{config['learning_rate']})",
            how_to_go_on(checkpoint, run.history, config["epochs"],
                         resumable=not isinstance(e, runs.TrainingDiverged)))
    print(f"Final test ELBO {run.history[-1]['test_elbo']:.2f} nats per image after "
          f"{epochs} epoch{'s' * (epochs > 1)} ({wall:.0f} s). Wrote {checkpoint}, "
          f"{run.metrics_path} and {len(paths)} figures to {out}/")
    print(f"The ELBO is a lower bound on log p(x). To estimate log p(x) itself (importance "
          f"sampling, K=5000; about half an hour on one CPU core for the 10000 test images), "
          f"run: {EVALUATE_COMMAND.format(checkpoint)}")
    return 0


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


def run_from_checkpoint(args):
    """Regenerates every figure from a checkpoint, without training, beside the
    checkpoint unless --output-dir names another folder."""
    gen_params, rec_params, config, history, note = read_model(args.from_checkpoint)
    if note:
        print(note, flush=True)
    home = args.from_checkpoint.parent
    out = args.output_dir or home
    others = RUN_FILES if out.resolve() != home.resolve() else ()   # its own run's figures
    runs.prepare_output_dir(out, others, args.overwrite, "vae.py", FIGURE_BYTES)
    _, _, _, test_images, test_labels = load_data(config["data_dir"])
    paths = write_figures(gen_params, rec_params, test_images, test_labels, history,
                          out, config["seed"], config["activation"])
    print(f"Wrote {len(paths)} figures from {args.from_checkpoint} "
          f"(epoch {history[-1]['epoch'] if history else 0}) to {out}/")
    return 0


def main(argv=None):
    """Entry point of `python vae.py`: returns the exit code."""
    from data import DataError
    args = parse_args(argv)
    try:
        return run_from_checkpoint(args) if args.from_checkpoint else run_training(args)
    except (DataError, runs.RunError) as e:
        print(f"vae.py: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
