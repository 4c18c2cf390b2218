"""Auto-encoding variational Bayes on binarised MNIST, in NumPy and autograd.

The reference solution of the course practical. The model and its training
follow Kingma and Welling, "Auto-Encoding Variational Bayes", ICLR 2014:

    encoder  q(z|x) = N(z; mean(x), diag(exp(log_std(x))^2))     (Appendix C.2)
    prior    p(z)   = N(z; 0, I)
    decoder  p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits(z)_d))  (Appendix C.1)
    ELBO     L(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))          (Eq. 10)

estimated with one reparameterised sample z = mean + exp(log_std) * eps,
eps ~ N(0, I) (Section 2.4), maximised with Adam (Kingma and Ba 2015).

Units: nats per image, summed over the 784 pixels, averaged over images.
`python vae.py --help` lists the options; nothing runs at import.
"""
import argparse
import json
import os
import platform
import sys
import time
import zipfile
from pathlib import Path

import autograd.numpy as np
import autograd.numpy.random as npr
import numpy as onp   # plain NumPy, inside primitives and untraced hot loops
from autograd import grad, value_and_grad
from autograd.extend import SparseObject, defvjp, defvjp_argnums, primitive, vspace
from autograd.misc import flatten
from autograd.scipy.special import expit

IMAGE_SIDE = 28
DATA_DIM = IMAGE_SIDE ** 2
NUM_PRIOR_SAMPLES = 25
NUM_RECONSTRUCTIONS = 10
INTERPOLATION_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
INTERPOLATION_STEPS = 25
MANIFOLD_SIDE = 20
TEST_BINARIZATION_SEED = 1234  # the test set is binarised once, with its own stream
TEST_POSTERIOR_SEED = 4321     # the posterior samples of the test ELBO, same every epoch
EVAL_BATCH_SIZE = 1000
DENORMAL_FLUSH_EVERY = 16     # Adam steps
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.json"
EVALUATION_NAME = "evaluation_test_sample.json"   # evaluate.py's report, default options
TRAIN_BINARIZATION = "dynamic: every training batch binarised afresh, x > uniform(0, 1)"
TEST_BINARIZATION = ("sampled once: x > uniform(0, 1) drawn from "
                     f"numpy.random.RandomState({TEST_BINARIZATION_SEED})")


# ----------------------------------------------------------------------------
# The model: the functions of the assignment contract (../shared/ASSIGNMENT.md)
# ----------------------------------------------------------------------------

def sigmoid(x):
    """Logistic function 1 / (1 + exp(-x)), elementwise. scipy's expit never
    overflows or warns, and keeps full relative precision for x << 0."""
    return expit(x)


def relu(x):
    """Elementwise max(0, x). Written as a product with the mask, whose
    derivative keeps the input's dtype (np.maximum's promotes to float64)."""
    return x * (x > 0)


def init_net_params(layer_sizes, scale=1e-2):
    """[(W, b), ...] with W: (m, n), b: (n,) for consecutive sizes (m, n),
    drawn as scale * randn from the global stream: W first, then b, layer by layer."""
    return [(scale * npr.randn(m, n), scale * npr.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


@primitive
def dense_layer(inputs, W, b, apply_relu):
    """inputs @ W + b, then max(0, .) if apply_relu: (N, m), (m, n), (n,) -> (N, n).
    One autograd primitive instead of three generic nodes; its derivative
    (dense_layer_vjp) reuses the output as the ReLU mask and keeps the dtype."""
    outputs = inputs @ W
    outputs += b
    if apply_relu:
        onp.maximum(outputs, 0, out=outputs)
    return outputs


def dense_layer_vjp(argnums, outputs, args, kwargs):
    inputs, W, _, apply_relu = args

    def vjp(g):
        if apply_relu:
            g = g * (outputs > 0)
        grads = {0: lambda: g @ W.T, 1: lambda: inputs.T @ g, 2: lambda: g.sum(axis=0)}
        return tuple(grads[argnum]() for argnum in argnums)
    return vjp


defvjp_argnums(dense_layer, dense_layer_vjp)


def neural_net_predict(params, inputs):
    """ReLU multilayer perceptron with a linear last layer: every hidden layer
    is relu(inputs @ W + b), the last inputs @ W + b.
    inputs: (N, D_in) or (D_in,) -> (N, D_out) or (D_out,)."""
    if np.ndim(inputs) == 1:
        return neural_net_predict(params, np.reshape(inputs, (1, -1)))[0]
    for i, (W, b) in enumerate(params):
        inputs = dense_layer(inputs, W, b, i < len(params) - 1)
    return inputs


def unpack_gaussian_params(q_means_and_log_stds):
    """(..., 2L) -> mean (..., L), log_std (..., L): the encoder's output layout."""
    latent_dim = q_means_and_log_stds.shape[-1] // 2
    return q_means_and_log_stds[..., :latent_dim], q_means_and_log_stds[..., latent_dim:]


@primitive
def reparameterize(q_means_and_log_stds, eps):
    """z = mean + exp(log_std) * eps (Kingma & Welling 2014, Sec. 2.4).
    (N, 2L), eps: (N, L) -> z: (N, L) in the encoder's dtype. An autograd
    primitive: slicing a traced array costs a scatter-add in its derivative."""
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    z = onp.exp(log_std)
    z *= eps
    z += mean
    return z


def _reparameterize_vjp_q(z, q_means_and_log_stds, eps):
    # dz/dmean = 1, dz/dlog_std = exp(log_std) * eps = z - mean.
    mean, _ = unpack_gaussian_params(q_means_and_log_stds)
    return lambda g: onp.concatenate([g, g * (z - mean)], axis=-1)


defvjp(reparameterize, _reparameterize_vjp_q,
       lambda z, q, eps: lambda g: g * onp.exp(unpack_gaussian_params(q)[1]))


def sample_latent_variables_from_posterior(encoder_output):
    """One sample z ~ q(z|x) per row. encoder_output: (N, 2L), the mean then the
    log standard deviation -> z: (N, L); eps from one global npr.randn(N, L)."""
    mean, _ = unpack_gaussian_params(encoder_output)
    return reparameterize(encoder_output, npr.randn(*mean.shape))


def softplus(logits):
    """log(1 + exp(logits)) = max(l, 0) + log1p(exp(-|l|)): exp never overflows.
    Plain NumPy (no autograd), with one temporary."""
    out = onp.abs(logits)
    onp.negative(out, out=out)
    onp.exp(out, out=out)
    onp.log1p(out, out=out)
    out += onp.maximum(logits, 0)
    return out


@primitive
def bernoulli_log_prob(targets, logits):
    """log p(x|z) = sum_d log Bernoulli(x_d; sigmoid(l_d)).
    targets: (N, D) in {0, 1}; logits: (N, D) -> (N,).

    log sigmoid(l) = l - softplus(l) and log(1 - sigmoid(l)) = -softplus(l),
    so the sum is x * l - softplus(l): no log(0), exact for every finite logit.
    An autograd primitive: its derivative is x - sigmoid(l) (below), computed
    in one fused pass instead of autograd's chain through softplus.
    """
    log_prob = targets * logits
    log_prob -= softplus(logits)
    return log_prob.sum(axis=-1)


def _bernoulli_log_prob_vjp_logits(ans, targets, logits):
    def vjp(g):
        # sigmoid(l) = (1 + tanh(l / 2)) / 2: 8x faster than expit, never
        # overflows, and exact to an ulp of 1, which is what x - sigmoid(l) needs.
        grad = onp.tanh(logits * 0.5)
        grad += 1
        grad *= -0.5
        grad += targets
        grad *= onp.expand_dims(g, -1)
        return grad
    return vjp


defvjp(bernoulli_log_prob,
       lambda ans, targets, logits: lambda g: onp.expand_dims(g, -1) * logits,
       _bernoulli_log_prob_vjp_logits)


@primitive
def compute_KL(q_means_and_log_stds):
    """KL(N(mean, exp(log_std)^2) || N(0, I)) per row: (N, 2L) -> (N,).
    Closed form of Kingma & Welling 2014, Appendix B:
    -KL = 1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2).
    An autograd primitive with the derivative below."""
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    return 0.5 * onp.sum(onp.exp(2 * log_std) + mean ** 2 - 1.0 - 2 * log_std, axis=-1)


def _compute_KL_vjp(kl, q_means_and_log_stds):
    # dKL/dmean = mean, dKL/dlog_std = exp(2 log_std) - 1.
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    return lambda g: onp.expand_dims(g, -1) * onp.concatenate(
        [mean, onp.expm1(2 * log_std)], axis=-1)


defvjp(compute_KL, _compute_KL_vjp)


def elbo_terms(gen_params, rec_params, data,
               sampler=sample_latent_variables_from_posterior):
    """Per-image terms of the ELBO with one posterior sample per image.
    data: (N, D) binary -> (log_px_given_z (N,), kl (N,)). `sampler` maps the
    encoder output (N, 2L) to z (N, L); the default draws from the global stream."""
    q_means_and_log_stds = neural_net_predict(rec_params, data)
    z = sampler(q_means_and_log_stds)
    logits = neural_net_predict(gen_params, z)
    return bernoulli_log_prob(data, logits), compute_KL(q_means_and_log_stds)


def vae_lower_bound(gen_params, rec_params, data):
    """Monte Carlo estimate of the ELBO (Kingma & Welling 2014, Eq. 10), one
    sample per image, averaged over the batch. data: (N, D) binary -> scalar."""
    log_px_given_z, kl = elbo_terms(gen_params, rec_params, data)
    return batch_mean(log_px_given_z - kl)


def batch_mean(x):
    """Mean over the first axis, as np.mean, but its derivative keeps float32:
    np.mean's divides by a NumPy integer, which promotes float32 to float64."""
    return np.sum(x, axis=0) / len(x)


# ----------------------------------------------------------------------------
# Training: the skeleton's loop, consuming the global random stream as it does
# ----------------------------------------------------------------------------

class TrainingDiverged(Exception):
    """The ELBO estimate became NaN or infinite."""


def binarize(images, rs=npr):
    """Dynamic binarisation: pixel d is 1 with probability images[:, d].
    One uniform draw of images.shape from `rs` (default: the global stream),
    compared in place. -> (N, D) of 0.0 and 1.0 in images.dtype."""
    noise = rs.uniform(size=images.shape)
    onp.greater(images, noise, out=noise, casting="unsafe")
    return noise.astype(images.dtype, copy=False)


def flush_denormals(x):
    """Sets the entries of x below the smallest normal number to zero, in place.
    Adam's first moment decays by b1 per step into that range for weights whose
    gradient is almost always zero (pixels at the border), and arithmetic on
    denormal numbers takes a slow path in the CPU (SPEED-NOTES: 48x slower)."""
    x[onp.abs(x) < onp.finfo(x.dtype).tiny] = 0


def adam_step(params, gradient, m, v, t, learning_rate=1e-3,
              b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS, scratch=None):
    """One bias-corrected Adam step (Kingma & Ba 2015, Algorithm 1) that
    *ascends* the objective:
        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2,
        params += learning_rate * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
    Computed, as Kingma & Ba suggest at the end of their Section 2, as the
    identical params += lr_t m / (sqrt(v) + eps_t) with
    lr_t = learning_rate sqrt(1 - b2^t) / (1 - b1^t), eps_t = eps sqrt(1 - b2^t).
    Updates params, m and v in place (flat arrays that nothing traces) and
    returns params; t counts from 1. `scratch`, an array like params, is used
    as work space (a fresh one is allocated if None). Every
    DENORMAL_FLUSH_EVERY steps, denormal entries of m and v become zero: their
    effect on the update is below 1e-30."""
    scratch = onp.multiply(gradient, 1 - b1, out=scratch)
    m *= b1
    m += scratch
    onp.multiply(gradient, gradient, out=scratch)
    scratch *= 1 - b2
    v *= b2
    v += scratch
    if t % DENORMAL_FLUSH_EVERY == 0:
        flush_denormals(m)
        flush_denormals(v)
    correction = onp.sqrt(1 - b2 ** t)
    onp.sqrt(v, out=scratch)
    scratch += eps * correction
    onp.divide(m, scratch, out=scratch)
    scratch *= learning_rate * correction / (1 - b1 ** t)
    params += scratch
    return params


@primitive
def flat_view(flat, start, shape):
    """flat[start:start + size].reshape(shape): a view into the flat vector.
    Its derivative adds into one flat gradient in place; autograd's own
    slicing scatters each slice into a new zeros array with np.add.at."""
    return flat[start:start + int(onp.prod(shape))].reshape(shape)


def _flat_view_vjp(view, flat, start, shape):
    space, stop = vspace(flat), start + view.size

    def vjp(g):
        def add_into(flat_gradient):
            flat_gradient[start:stop] += g.ravel()
            return flat_gradient
        return SparseObject(space, add_into)
    return vjp


defvjp(flat_view, _flat_view_vjp)


def unflatten_views(flat, like):
    """(gen_params, rec_params) as views into the flat vector, laid out as
    autograd.misc.flatten(like) lays them out: each network's W then b, layer
    by layer, generator first. Works on a traced vector too (see flat_view)."""
    networks, start = [], 0
    for params in like:
        networks.append([])
        for W, b in params:
            networks[-1].append((flat_view(flat, start, W.shape),
                                 flat_view(flat, start + W.size, b.shape)))
            start += W.size + b.size
    return tuple(networks)


def train(gen_params, rec_params, train_images, epochs, batch_size, learning_rate,
          on_epoch_end=None, progress=False, loop="skeleton", seed=0):
    """Trains with Adam, batches in order. Returns (gen_params, rec_params).

    loop="skeleton" (the default of `python vae.py`) is the course skeleton's
    procedure, drawing from the global stream exactly as it does. Per batch:
    binarise, gradient of the ELBO at the current parameters (one posterior
    sample), Adam step, binarise again and evaluate the ELBO at the new
    parameters; the epoch's estimate is the mean of those evaluations.

    loop="fast": the same mathematics with one value-and-gradient pass per
    batch; its binarisation and posterior noise come from
    numpy.random.default_rng(seed), and the epoch's estimate is the mean of the
    ELBO values of those passes (before each update). Deterministic for a
    seed, but not stream-compatible with the skeleton.

    on_epoch_end(epoch, gen_params, rec_params, train_elbo, seconds) is called
    after every epoch with a copy of the parameters.
    """
    from tqdm import tqdm

    # Parameters flattened with autograd.misc.flatten: Adam updates the flat
    # vector in place, and autograd differentiates with respect to it.
    flat_params, unflatten = flatten((gen_params, rec_params))
    step = {"skeleton": skeleton_step, "fast": fast_step}[loop](
        flat_params, (gen_params, rec_params), learning_rate, seed)
    num_batches = -(-len(train_images) // batch_size)  # the last batch may be short
    t = 1
    for epoch in range(1, epochs + 1):
        start, elbo_sum = time.perf_counter(), 0.0
        batches = tqdm(range(num_batches), desc=f"epoch {epoch}/{epochs}",
                       leave=False, unit="batch",
                       disable=None if progress else True)  # None: off when not a terminal
        for n in batches:
            elbo = step(train_images[n * batch_size:(n + 1) * batch_size], t)
            if not onp.isfinite(elbo):
                raise TrainingDiverged(
                    f"the ELBO became {elbo} at epoch {epoch}, batch {n + 1}")
            elbo_sum += float(elbo)
            t += 1
            batches.set_postfix(elbo=f"{elbo_sum / (n + 1):.2f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, *unflatten(flat_params), elbo_sum / num_batches,
                         time.perf_counter() - start)
    return unflatten(flat_params)


def adam_updater(flat_params, learning_rate):
    """update(gradient, t): one Adam step of flat_params, in place, with
    Adam's state kept here."""
    m, v, scratch = (onp.zeros_like(flat_params) for _ in range(3))
    return lambda gradient, t: adam_step(flat_params, gradient, m, v, t, learning_rate,
                                         scratch=scratch)


def skeleton_step(flat_params, like, learning_rate, seed):
    """The skeleton's step as a function step(images, t) -> ELBO estimate:
    binarisation and posterior noise from the global stream."""
    def objective(flat_params, data):
        return vae_lower_bound(*unflatten_views(flat_params, like), data)

    objective_grad, update = grad(objective), adam_updater(flat_params, learning_rate)

    def step(images, t):
        update(objective_grad(flat_params, binarize(images)), t)
        return objective(flat_params, binarize(images))
    return step


def fast_step(flat_params, like, learning_rate, seed):
    """One value-and-gradient pass per step, noise from default_rng(seed)."""
    update = adam_updater(flat_params, learning_rate)
    rng, noise_buffers = onp.random.default_rng(seed), {}
    latent_dim = like[0][0][0].shape[0]

    def objective(flat_params, data, eps):
        log_px_given_z, kl = elbo_terms(*unflatten_views(flat_params, like), data,
                                        lambda q: reparameterize(q, eps))
        return batch_mean(log_px_given_z - kl)

    objective_and_grad = value_and_grad(objective)

    def step(images, t):
        # Binarise in place into a buffer kept per batch shape: x > u as 0.0 / 1.0.
        data = noise_buffers.setdefault(images.shape, onp.empty_like(images))
        rng.random(out=data, dtype=images.dtype)
        onp.greater(images, data, out=data, casting="unsafe")
        eps = rng.standard_normal((len(images), latent_dim), dtype=images.dtype)
        elbo, gradient = objective_and_grad(flat_params, data, eps)
        update(gradient, t)
        return elbo
    return step


def evaluate_elbo(gen_params, rec_params, binary_images, seed=TEST_POSTERIOR_SEED):
    """ELBO of a fixed binary data set, one posterior sample per image drawn
    from RandomState(seed): the global stream is untouched and repeated calls
    are comparable. -> {"elbo", "log_px_given_z", "kl"}, means over images."""
    rs = npr.RandomState(seed)
    log_px_given_z, kl = [], []
    for start in range(0, len(binary_images), EVAL_BATCH_SIZE):
        data = binary_images[start:start + EVAL_BATCH_SIZE]
        terms = elbo_terms(gen_params, rec_params, data,
                           lambda q: reparameterize(q, rs.randn(len(q), q.shape[-1] // 2)))
        log_px_given_z.append(terms[0])
        kl.append(terms[1])
    log_px_given_z, kl = np.concatenate(log_px_given_z), np.concatenate(kl)
    return {"elbo": float(np.mean(log_px_given_z - kl)),
            "log_px_given_z": float(np.mean(log_px_given_z)),
            "kl": float(np.mean(kl))}


# ----------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------

def write_figures(gen_params, rec_params, test_images, test_labels, history,
                  output_dir, seed):
    """Writes every figure of a trained model into output_dir and returns the
    paths. Random draws come from RandomState(seed), so a checkpoint gives the
    same pictures as the run that wrote it."""
    import plotting
    from scipy.stats import norm

    out, rs = Path(output_dir), npr.RandomState(seed)
    latent_dim = gen_params[0][0].shape[0]
    dtype = gen_params[0][0].dtype
    test_images = test_images.astype(dtype)

    def decode(z):
        return plotting.bernoulli_means(neural_net_predict(gen_params, z.astype(dtype)))

    def encoder_means(images):
        return unpack_gaussian_params(neural_net_predict(rec_params, images))[0]

    paths = [out / "samples_from_prior.png", out / "reconstructions.png"]
    # 1. z ~ p(z), shown as Bernoulli means.
    plotting.save_images(decode(rs.randn(NUM_PRIOR_SAMPLES, latent_dim)), paths[0],
                         vmin=0, vmax=1)
    # 2. Originals in the top row, reconstructions (encode, sample, decode) below.
    originals = test_images[:NUM_RECONSTRUCTIONS]   # fewer if the test set is tiny
    q = neural_net_predict(rec_params, originals)
    z = reparameterize(q, rs.randn(len(originals), latent_dim))
    plotting.save_images(np.concatenate([originals, decode(z)]), paths[1],
                         ims_per_row=len(originals), vmin=0, vmax=1)
    # 3. Straight lines between encoder means: z = (1 - s) z_a + s z_b, so each
    #    file starts at image a and ends at image b.
    s = np.linspace(0, 1, INTERPOLATION_STEPS)[:, None]
    for a, b in [pair for pair in INTERPOLATION_PAIRS if max(pair) < len(test_images)]:
        z_a, z_b = encoder_means(test_images[[a, b]])
        paths.append(out / f"interpolation_{a}_{b}.png")
        plotting.save_images(decode((1 - s) * z_a + s * z_b), paths[-1], vmin=0, vmax=1)
    if history:
        paths.append(out / "learning_curve.png")
        plotting.save_learning_curve([r["epoch"] for r in history],
                                     [r["train_elbo"] for r in history],
                                     [r["test_elbo"] for r in history], paths[-1])
    if latent_dim == 2:
        # Kingma & Welling 2014, Fig. 4: equal-probability grid, z = Phi^-1(p)
        # with p = (k + 1/2) / 20; z_1 grows to the right, z_2 upwards.
        grid = norm.ppf((np.arange(MANIFOLD_SIDE) + 0.5) / MANIFOLD_SIDE)
        z = np.array([[z1, z2] for z2 in grid[::-1] for z1 in grid])
        paths += [out / "latent_scatter.png", out / "latent_manifold.png"]
        plotting.save_latent_scatter(encoder_means(test_images),
                                     np.argmax(test_labels, axis=1), paths[-2])
        plotting.save_manifold(decode(z), paths[-1], MANIFOLD_SIDE)
    return paths


# ----------------------------------------------------------------------------
# Checkpoints and metrics, written atomically
# ----------------------------------------------------------------------------

class CheckpointError(Exception):
    """A checkpoint file is missing or not one that vae.py wrote."""


def atomic_write(path, write):
    """Calls write(file) on a temporary file beside path, then renames it over
    path, so an interrupted run leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path, gen_params, rec_params, config, history):
    """Parameters as gen_W0, gen_b0, ..., rec_W0, ...; config and per-epoch
    history as JSON strings. Readable with plain np.load."""
    arrays = {"config": np.array(json.dumps(config)), "history": np.array(json.dumps(history))}
    for name, params in (("gen", gen_params), ("rec", rec_params)):
        for i, (W, b) in enumerate(params):
            arrays[f"{name}_W{i}"], arrays[f"{name}_b{i}"] = W, b
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path):
    """-> (gen_params, rec_params, config, history) from save_checkpoint's file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = dict(archive)
        config, history = json.loads(str(arrays["config"])), json.loads(str(arrays["history"]))
        params = [[(arrays[f"{name}_W{i}"], arrays[f"{name}_b{i}"])
                   for i in range(config["hidden_layers"] + 1)] for name in ("gen", "rec")]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a checkpoint written by vae.py ({e}); "
                              "train again with `python vae.py`") from e
    return params[0], params[1], config, history


def library_versions():
    from importlib.metadata import version
    return {"python": platform.python_version(),
            **{name: version(name) for name in ("numpy", "autograd", "scipy", "matplotlib")}}


def evaluate_command(checkpoint):
    return f"python evaluate.py {checkpoint}"


def write_metrics(path, config, history, status, wall_seconds, checkpoint):
    """metrics.json: everything needed to interpret and reproduce the run."""
    metrics = {
        "status": status, "config": config, "seed": config["seed"],
        "versions": library_versions(),
        "units": "nats per image, summed over pixels, averaged over images; higher is better",
        "binarization": {"train": TRAIN_BINARIZATION + (
                             " from the global numpy.random stream" if config["loop"] == "skeleton"
                             else f" from numpy.random.default_rng({config['seed']})"),
                         "test": TEST_BINARIZATION,
                         "test_posterior_samples": "one per image, numpy.random.RandomState"
                                                   f"({TEST_POSTERIOR_SEED}), the same every epoch"},
        "epochs": history,
        "final_test_elbo": history[-1]["test_elbo"] if history else None,
        "wall_seconds": wall_seconds, "checkpoint": str(checkpoint),
        "log_likelihood": {
            "note": "the ELBO is a lower bound on log p(x); evaluate.py estimates log p(x) "
                    "of this checkpoint by importance sampling",
            "command": evaluate_command(checkpoint),
            "report": str(Path(checkpoint).parent / EVALUATION_NAME)},
    }
    atomic_write(path, lambda f: f.write((json.dumps(metrics, indent=2) + "\n").encode()))


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _checked(convert, ok, what):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
seed_int = _checked(int, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2**32)")
positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
existing_dir = _checked(Path, Path.is_dir, "an existing folder")
existing_file = _checked(Path, Path.is_file, "an existing file")


def parse_args(argv=None):
    """Parses and validates the command line (defaults: the assignment's)."""
    parser = _OneLineErrorParser(
        description="Train a variational autoencoder on binarised MNIST and write "
                    "its figures, metrics and checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = parser.add_argument
    add("--epochs", type=positive_int, default=30, help="passes over the training set")
    add("--batch-size", type=positive_int, default=200, help="images per Adam step")
    add("--latent-dim", type=positive_int, default=50, help="dimension L of z")
    add("--hidden-units", type=positive_int, default=200, help="units per hidden layer")
    add("--hidden-layers", type=nonnegative_int, default=2,
        help="ReLU hidden layers in the encoder and in the decoder")
    add("--learning-rate", type=positive_float, default=1e-3, help="Adam step size")
    add("--seed", type=seed_int, default=0, help="seed of the global numpy random stream")
    add("--n-train", type=positive_int, default=None, metavar="N",
        help="use only the first N training images (default: all)")
    add("--data-dir", type=existing_dir, default=None, metavar="DIR",
        help="folder with the four MNIST-format files, e.g. Fashion-MNIST "
             "(default: the MNIST copy shipped in datasets/mnist)")
    add("--output-dir", type=Path, default=Path("output"), metavar="DIR",
        help="where figures, metrics.json and the checkpoint go")
    add("--dtype", choices=("float64", "float32"), default="float64",
        help="floating-point type of parameters and data")
    add("--loop", choices=("skeleton", "fast"), default="skeleton",
        help="skeleton: the course skeleton's loop and random stream (a gradient pass "
             "and a second ELBO evaluation per step); fast: one pass per step, noise from "
             "numpy.random.default_rng(seed), same mathematics, not stream-compatible")
    add("--from-checkpoint", type=existing_file, default=None, metavar="PATH",
        help="skip training: regenerate every figure from a checkpoint written by vae.py")
    add("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {args.output_dir} exists and is not a folder")
    return args


def layer_sizes(config):
    """(generator sizes, recognition sizes) for a config dict."""
    hidden = [config["hidden_units"]] * config["hidden_layers"]
    return ([config["latent_dim"]] + hidden + [DATA_DIM],
            [DATA_DIM] + hidden + [2 * config["latent_dim"]])


def load_data(data_dir):
    import data
    return data.load_mnist() if data_dir is None else data.load_idx_folder(data_dir)


def cast_params(params, dtype):
    return [(W.astype(dtype), b.astype(dtype)) for W, b in params]


def initial_params(config, dtype, seed):
    """(gen_params, rec_params) as the skeleton initialises them: the global
    stream seeded with `seed`, generator first, then cast to dtype."""
    npr.seed(seed)
    gen_sizes, rec_sizes = layer_sizes(config)
    return (cast_params(init_net_params(gen_sizes), dtype),
            cast_params(init_net_params(rec_sizes), dtype))


def run_training(args):
    """Trains per args, writes checkpoint, metrics and figures. -> exit code."""
    wall_start = time.perf_counter()
    out = args.output_dir
    checkpoint, metrics_path = out / CHECKPOINT_NAME, out / METRICS_NAME
    config = {"epochs": args.epochs, "batch_size": args.batch_size,
              "latent_dim": args.latent_dim, "hidden_units": args.hidden_units,
              "hidden_layers": args.hidden_layers, "learning_rate": args.learning_rate,
              "seed": args.seed, "n_train": args.n_train, "dtype": args.dtype,
              "loop": args.loop,
              "data_dir": None if args.data_dir is None else str(args.data_dir),
              "adam": {"b1": ADAM_B1, "b2": ADAM_B2, "eps": ADAM_EPS}}
    N, train_images, _, test_images, test_labels = load_data(args.data_dir)
    if args.n_train is not None and args.n_train > N:
        print(f"vae.py: error: --n-train {args.n_train} but the training set has "
              f"{N} images (see --help)", file=sys.stderr)
        return 2
    train_images = train_images[:args.n_train].astype(args.dtype)
    test_binary = binarize(test_images, npr.RandomState(TEST_BINARIZATION_SEED)).astype(args.dtype)
    gen_sizes, rec_sizes = layer_sizes(config)
    gen_params, rec_params = initial_params(config, args.dtype, args.seed)

    print(f"VAE: {len(train_images)} training and {len(test_images)} test images; "
          f"encoder {'-'.join(map(str, rec_sizes))}, decoder {'-'.join(map(str, gen_sizes))}; "
          f"{args.dtype}, seed {args.seed}, {args.loop} loop")
    print("ELBO in nats per image (summed over pixels, averaged over images); higher "
          "is better.\nTrain: Monte Carlo estimate over the epoch's batches, binarised "
          f"afresh{' (before each update)' * (args.loop == 'fast')}. Test: all {len(test_images)} test images, binarised once "
          f"(seed {TEST_BINARIZATION_SEED}).")
    print(f"{'epoch':>5} {'train ELBO':>11} {'test ELBO':>10} {'log p(x|z)':>11} "
          f"{'KL':>7} {'seconds':>8}")
    history = []

    def on_epoch_end(epoch, gen_params, rec_params, train_elbo, seconds):
        test = evaluate_elbo(gen_params, rec_params, test_binary)
        if not np.isfinite(test["elbo"]):
            raise TrainingDiverged(f"the test ELBO became {test['elbo']} after epoch {epoch}")
        record = {"epoch": epoch, "train_elbo": train_elbo, "test_elbo": test["elbo"],
                  "test_log_px_given_z": test["log_px_given_z"], "test_kl": test["kl"],
                  "seconds": seconds}
        print(f"{epoch:5d} {train_elbo:11.2f} {test['elbo']:10.2f} "
              f"{test['log_px_given_z']:11.2f} {test['kl']:7.2f} {seconds:8.1f}", flush=True)
        save_checkpoint(checkpoint, gen_params, rec_params, config, history + [record])
        history.append(record)   # only now does the checkpoint hold this epoch
        write_metrics(metrics_path, config, history, "running",
                      time.perf_counter() - wall_start, checkpoint)

    def stop(status, message):
        if history:
            write_metrics(metrics_path, config, history, status,
                          time.perf_counter() - wall_start, checkpoint)
            message += (f"; {checkpoint} holds epoch {history[-1]['epoch']}: regenerate "
                        f"its figures with `python vae.py --from-checkpoint {checkpoint}`")
        else:
            message += "; no epoch was completed, nothing was saved"
        print(message, file=sys.stderr)

    try:
        gen_params, rec_params = train(gen_params, rec_params, train_images, args.epochs,
                                       args.batch_size, args.learning_rate, on_epoch_end,
                                       progress=not args.no_progress, loop=args.loop,
                                       seed=args.seed)
    except KeyboardInterrupt:
        stop("interrupted", "\nInterrupted")
        return 130
    except TrainingDiverged as e:
        stop("diverged", f"Training stopped: {e}. No figures were written. Try a smaller "
                         f"--learning-rate (it was {args.learning_rate})")
        return 1
    paths = write_figures(gen_params, rec_params, test_images, test_labels, history,
                          out, args.seed)
    wall = time.perf_counter() - wall_start
    write_metrics(metrics_path, config, history, "complete", wall, checkpoint)
    print(f"Final test ELBO {history[-1]['test_elbo']:.2f} nats per image after "
          f"{args.epochs} epoch{'s' * (args.epochs > 1)} ({wall:.0f} s). Wrote {checkpoint}, {metrics_path} "
          f"and {len(paths)} figures to {out}/")
    print(f"The ELBO is a lower bound on log p(x). To estimate log p(x) itself (importance "
          f"sampling, K=5000; about half an hour on one CPU core for the 10000 test images), "
          f"run: {evaluate_command(checkpoint)}")
    return 0


def run_from_checkpoint(args):
    """Regenerates every figure from a checkpoint, without training."""
    gen_params, rec_params, config, history = load_checkpoint(args.from_checkpoint)
    _, _, _, test_images, test_labels = load_data(config["data_dir"])
    paths = write_figures(gen_params, rec_params, test_images, test_labels, history,
                          args.output_dir, config["seed"])
    print(f"Wrote {len(paths)} figures from {args.from_checkpoint} "
          f"(epoch {history[-1]['epoch'] if history else 0}) to {args.output_dir}/")
    return 0


def main(argv=None):
    """Entry point of `python vae.py`: returns the exit code."""
    from data import DataError
    args = parse_args(argv)
    try:
        return run_from_checkpoint(args) if args.from_checkpoint else run_training(args)
    except (DataError, CheckpointError) as e:
        print(f"vae.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
