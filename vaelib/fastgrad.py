"""Fused derivatives: the functions of vae.py with hand-written derivatives.

vae.py writes the model as the assignment asks, in plain autograd. Autograd
then differentiates it node by node, and on a 2-core CPU that costs several
times the matrix products themselves (../shared/SPEED-NOTES.md,
docs/speed.md). Each function here computes the same numbers as its plain
twin, with the same signature, but is one autograd primitive whose
derivative is written out in a single fused NumPy pass that keeps the
input's dtype (float32 stays float32). tests/library/test_fastgrad.py checks every
one against its plain twin, value and gradient, and against finite
differences. vae.py and evaluate.py assemble the bound from these pieces;
the training loops differentiate flat_lower_bound, the same pieces in one
node (bit for bit the same numbers, tested).

    dense_layer(inputs, W, b, activation)      activation(inputs @ W + b), or linear if None
    neural_net_predict(params, inputs, activation="relu")   vae.neural_net_predict
    reparameterize(q_means_and_log_stds, eps)  mean + exp(log_std) * eps
    bernoulli_log_prob(targets, logits)        vae.bernoulli_log_prob
    compute_KL(q_means_and_log_stds)           vae.compute_KL
    batch_mean(x)                              np.mean(x, axis=0)
    unflatten_views(flat, like)                autograd.misc.flatten's unflatten
    flat_lower_bound(flat, like, data, randn)  vae.vae_lower_bound on the flat vector
    adam_step(params, gradient, m, v, t)       vae.adam_step, in place
"""
import math
import threading

import autograd.numpy as anp
import numpy as np
from autograd.extend import SparseObject, defvjp, defvjp_argnums, primitive, vspace

from vaelib.tuning import cores, flush_denormals, worker

DENORMAL_FLUSH_EVERY = 16     # Adam steps
ADAM_WORKER_SHARE = 0.3       # of Adam's vector, for the worker: it draws the next batch first
SPLIT_SIZE = 2 ** 16          # entries from which elementwise work is shared by two threads


def unpack_gaussian_params(q_means_and_log_stds):
    """(..., 2L) -> mean (..., L), log_std (..., L), as vae.unpack_gaussian_params."""
    latent_dim = q_means_and_log_stds.shape[-1] // 2
    return q_means_and_log_stds[..., :latent_dim], q_means_and_log_stds[..., latent_dim:]


# ----------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------

ACTIVATIONS = ("relu", "tanh")   # by name: vae.ACTIVATIONS holds the plain functions


@primitive
def dense_layer(inputs, W, b, activation):
    """inputs @ W + b, then max(0, .) for "relu", tanh(.) for "tanh", nothing
    for None: (N, m), (m, n), (n,) -> (N, n); inputs must be 2-D
    (neural_net_predict reshapes a 1-D input). One primitive instead of three
    generic nodes; the derivative reuses the output (the ReLU mask, or
    1 - tanh^2)."""
    outputs = inputs @ W
    outputs += b
    if activation == "relu":
        np.maximum(outputs, 0, out=outputs)
    elif activation == "tanh":
        np.tanh(outputs, out=outputs)
    elif activation is not None:
        raise ValueError(f"unknown activation {activation!r}; one of {ACTIVATIONS} or None")
    return outputs


def _dense_layer_vjp(argnums, outputs, args, kwargs):
    inputs, W, _, activation = args

    def vjp(g):
        if activation == "relu":
            g = g * (outputs > 0)
        elif activation == "tanh":
            g = g * (1 - outputs * outputs)
        grads = {0: lambda: g @ W.T, 1: lambda: inputs.T @ g, 2: lambda: g.sum(axis=0)}
        return tuple(grads[argnum]() for argnum in argnums)
    return vjp


defvjp_argnums(dense_layer, _dense_layer_vjp)


def neural_net_predict(params, inputs, activation="relu"):
    """vae.neural_net_predict through dense_layer: hidden layers with the
    activation named ("relu", the assignment's, or "tanh"), linear last layer.
    inputs: (N, D_in) or (D_in,) -> (N, D_out) or (D_out,)."""
    if np.ndim(inputs) == 1:
        return neural_net_predict(params, np.reshape(inputs, (1, -1)), activation)[0]
    for i, (W, b) in enumerate(params):
        inputs = dense_layer(inputs, W, b, activation if i < len(params) - 1 else None)
    return inputs


# ----------------------------------------------------------------------------
# The terms of the bound
# ----------------------------------------------------------------------------

@primitive
def reparameterize(q_means_and_log_stds, eps):
    """z = mean + exp(log_std) * eps: (N, 2L), eps (N, L) -> (N, L), in the
    dtype of q_means_and_log_stds. (Slicing a traced array costs a scatter-add
    in autograd's derivative; this one concatenates.)"""
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    z = np.exp(log_std)
    z *= eps
    z += mean
    return z


def _reparameterize_vjp_q(z, q_means_and_log_stds, eps):
    # dz/dmean = 1, dz/dlog_std = exp(log_std) * eps = z - mean.
    mean, _ = unpack_gaussian_params(q_means_and_log_stds)
    return lambda g: np.concatenate([g, g * (z - mean)], axis=-1)


defvjp(reparameterize, _reparameterize_vjp_q,
       lambda z, q, eps: lambda g: g * np.exp(unpack_gaussian_params(q)[1]))


def softplus(logits):
    """log(1 + exp(l)) = max(l, 0) + log1p(exp(-|l|)): exp never overflows.
    With SIMD ufuncs and one temporary: np.logaddexp(0, l) is a scalar loop,
    ten times slower (SPEED-NOTES)."""
    out = np.abs(logits)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.log1p(out, out=out)
    out += np.maximum(logits, 0)
    return out


@primitive
def bernoulli_log_prob(targets, logits):
    """vae.bernoulli_log_prob: sum_d x_d l_d - softplus(l_d).
    targets (N, D) in {0, 1}, logits (N, D) -> (N,). The derivative with
    respect to the logits is x - sigmoid(l), in one pass. Large batches are
    computed in two halves of rows, one on each core (by_rows)."""
    shape = np.broadcast_shapes(np.shape(targets), np.shape(logits))[:-1]
    return by_rows(_bernoulli_log_prob_rows, np.empty(shape, np.result_type(targets, logits)),
                   targets, logits)


def _bernoulli_log_prob_rows(out, targets, logits):
    log_prob = targets * logits
    log_prob -= softplus(logits)
    np.sum(log_prob, axis=-1, out=out)


def _bernoulli_log_prob_vjp_logits(ans, targets, logits):
    return lambda g: by_rows(_sigmoid_residual_rows, np.empty_like(logits), targets, logits,
                             np.expand_dims(g, -1))


def _sigmoid_residual_rows(grad, targets, logits, g):
    # g (x - sigmoid(l)), with sigmoid(l) = (1 + tanh(l / 2)) / 2: 8x faster than
    # expit, never overflows, and exact to an ulp of 1, which x - sigmoid(l) needs.
    np.multiply(logits, 0.5, out=grad)
    np.tanh(grad, out=grad)
    grad += 1
    grad *= -0.5
    grad += targets
    grad *= g


def by_rows(f, out, *arrays):
    """f(out, *arrays) for 2-D arrays of the same rows, out included; if they are
    large and two cores are free, the second half of the rows is done by the
    worker thread while this one does the first (NumPy releases the GIL in its
    loops), with the same operations on every entry. -> out."""
    rows = out.shape[:1]
    if (max(np.size(a) for a in arrays) < SPLIT_SIZE or cores() < 2
            or not all(np.ndim(a) == 2 and np.shape(a)[:1] == rows for a in arrays)):
        f(out, *arrays)   # small, one core, or broadcasting rows (e.g. one image, K codes)
        return out
    half = rows[0] // 2
    second = worker().submit(f, out[half:], *(a[half:] for a in arrays))
    f(out[:half], *(a[:half] for a in arrays))
    second.result()
    return out


defvjp(bernoulli_log_prob,
       lambda ans, targets, logits: lambda g: np.expand_dims(g, -1) * logits,
       _bernoulli_log_prob_vjp_logits)


@primitive
def compute_KL(q_means_and_log_stds):
    """vae.compute_KL: KL(N(mean, exp(log_std)^2) || N(0, I)) per row,
    (..., 2L) -> (...), with the derivative below in one concatenation."""
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    return 0.5 * np.sum(np.exp(2 * log_std) + mean ** 2 - 1.0 - 2 * log_std, axis=-1)


def _compute_KL_vjp(kl, q_means_and_log_stds):
    # dKL/dmean = mean, dKL/dlog_std = exp(2 log_std) - 1.
    mean, log_std = unpack_gaussian_params(q_means_and_log_stds)
    return lambda g: np.expand_dims(g, -1) * np.concatenate(
        [mean, np.expm1(2 * log_std)], axis=-1)


defvjp(compute_KL, _compute_KL_vjp)


def batch_mean(x):
    """Mean over the first axis, as np.mean, but its derivative keeps float32:
    np.mean's divides by a NumPy integer, which promotes float32 to float64."""
    return anp.sum(x, axis=0) / len(x)


# ----------------------------------------------------------------------------
# Parameters as views into one flat vector
# ----------------------------------------------------------------------------

@primitive
def flat_view(flat, start, shape):
    """flat[start:start + size].reshape(shape): a view into the flat vector.
    Its derivative adds into one flat gradient in place; autograd's own
    slicing scatters each slice into a new zeros array with np.add.at."""
    return flat[start:start + math.prod(shape)].reshape(shape)


def _flat_view_vjp(view, flat, start, shape):
    space, stop = vspace(flat), start + view.size

    def vjp(g):
        def add_into(flat_gradient):
            flat_gradient[start:stop] += g.ravel()
            return flat_gradient
        return SparseObject(space, add_into)
    return vjp


defvjp(flat_view, _flat_view_vjp)


def unflatten_views(flat, like, view=flat_view):
    """Networks shaped like `like` (a tuple of [(W, b), ...] lists) as views
    into the flat vector, laid out as autograd.misc.flatten(like) lays them
    out: each network's W then b, layer by layer. Works on a traced vector."""
    networks, start = [], 0
    for params in like:
        networks.append([])
        for W, b in params:
            networks[-1].append((view(flat, start, W.shape),
                                 view(flat, start + W.size, b.shape)))
            start += W.size + b.size
    if start != len(flat):
        raise ValueError(f"networks of {start} parameters do not fill a flat vector of {len(flat)}")
    return tuple(networks)


# ----------------------------------------------------------------------------
# The whole bound on the flat vector, as one primitive
# ----------------------------------------------------------------------------

_forward = threading.local()   # the last forward pass's arrays, for its derivative


@primitive
def flat_lower_bound(flat, like, data, randn, activation="relu"):
    """vae.vae_lower_bound of the networks that unflatten_views(flat, like)
    gives, as one autograd node: the pieces above in the same order, so the
    same value and gradient bit for bit (tested), without the ~30 nodes that
    autograd would trace and walk back (about 17 microseconds each) or the
    zero-filled gradient that it adds twelve slices into. The noise is
    randn(N, L), drawn after the encoder's pass, as in vae.fused_elbo_terms.
    The derivative writes each layer's dW and db straight into one flat
    gradient. -> the bound, averaged over the N images (a 0-d value)."""
    networks = unflatten_views(flat, like, view=flat_view.fun)
    gen_params, rec_params = networks
    rec_acts = _forward_pass(rec_params, data, activation)
    q_means_and_log_stds = rec_acts[-1]
    eps = randn(len(data), q_means_and_log_stds.shape[-1] // 2)
    z = reparameterize.fun(q_means_and_log_stds, eps)
    gen_acts = _forward_pass(gen_params, z, activation)
    log_px_given_z = bernoulli_log_prob.fun(data, gen_acts[-1])
    kl = compute_KL.fun(q_means_and_log_stds)
    _forward.arrays = networks, rec_acts, z, gen_acts   # (kept until the next call)
    return np.sum(log_px_given_z - kl, axis=0) / len(data)


def _forward_pass(params, inputs, activation):
    """[inputs, each layer's output], as neural_net_predict computes them."""
    acts = [inputs]
    for i, (W, b) in enumerate(params):
        acts.append(dense_layer.fun(acts[-1], W, b, activation if i < len(params) - 1 else None))
    return acts


def _backward_pass(params, gradients, acts, g, activation, to_inputs):
    """The dense_layer derivatives from the last layer down: dW and db into
    `gradients` (views of the flat gradient), and -> the derivative with
    respect to the network's inputs if to_inputs (else None)."""
    for i in range(len(params) - 1, -1, -1):
        (W, _), (dW, db), outputs = params[i], gradients[i], acts[i + 1]
        if i < len(params) - 1:   # g is this function's own array here: in place
            if activation == "relu":
                g *= outputs > 0
            elif activation == "tanh":
                g *= 1 - outputs * outputs
        np.matmul(acts[i].T, g, out=dW)
        np.sum(g, axis=0, out=db)
        g = g @ W.T if i > 0 or to_inputs else None
    return g


def _flat_lower_bound_vjp(value, flat, like, data, randn, activation="relu"):
    (gen_params, rec_params), rec_acts, z, gen_acts = _forward.arrays
    del _forward.arrays

    def vjp(g):
        gradient = np.empty_like(flat)
        gen_grads, rec_grads = unflatten_views(gradient, like, view=flat_view.fun)
        # The bound is sum(log p(x|z) - KL) / N: each image's terms get g / N.
        per_image = np.broadcast_to(np.asarray(g / len(data), flat.dtype), (len(data),))
        q_means_and_log_stds = rec_acts[-1]
        d_logits = _bernoulli_log_prob_vjp_logits(None, data, gen_acts[-1])(per_image)
        d_z = _backward_pass(gen_params, gen_grads, gen_acts, d_logits, activation, True)
        d_q = _reparameterize_vjp_q(z, q_means_and_log_stds, None)(d_z)
        d_q += _compute_KL_vjp(None, q_means_and_log_stds)(-per_image)
        _backward_pass(rec_params, rec_grads, rec_acts, d_q, activation, False)
        return gradient
    return vjp


defvjp(flat_lower_bound, _flat_lower_bound_vjp)


# ----------------------------------------------------------------------------
# Adam, in place
# ----------------------------------------------------------------------------

def adam_step(params, gradient, m, v, t, learning_rate=1e-3,
              b1=0.9, b2=0.999, eps=1e-8, scratch=None, split=False):
    """vae.adam_step, updating params, m and v in place. -> (params, m, v).

    Computed, as Kingma & Ba (2015) suggest at the end of their Section 2, as
    the identical params += lr_t m / (sqrt(v) + eps_t) with
    lr_t = learning_rate sqrt(1 - b2^t) / (1 - b1^t), eps_t = eps sqrt(1 - b2^t).
    `scratch`, an array like params, is work space (allocated if None). Every
    DENORMAL_FLUSH_EVERY steps, denormal entries of m and v become zero: their
    effect on the update is below 1e-30. With split=True (1-D arrays), a
    second thread updates the second half while this one updates the first:
    NumPy releases the GIL in elementwise loops, every entry is computed by
    the same operations, so the numbers are identical (tested)."""
    scratch = np.empty_like(params) if scratch is None else scratch
    arrays = (params, gradient, m, v, scratch)
    if not split:
        _adam_part(*arrays, t, learning_rate, b1, b2, eps)
        return params, m, v
    half = int(len(params) * (1 - ADAM_WORKER_SHARE))
    second = worker().submit(_adam_part, *(a[half:] for a in arrays), t, learning_rate,
                             b1, b2, eps)
    _adam_part(*(a[:half] for a in arrays), t, learning_rate, b1, b2, eps)
    second.result()
    return params, m, v


def _adam_part(params, gradient, m, v, scratch, t, learning_rate, b1, b2, eps):
    np.multiply(gradient, 1 - b1, out=scratch)
    m *= b1
    m += scratch
    np.multiply(gradient, gradient, out=scratch)
    scratch *= 1 - b2
    v *= b2
    v += scratch
    if t % DENORMAL_FLUSH_EVERY == 0:
        flush_denormals(m)
        flush_denormals(v)
    # Python floats, so that a float32 update stays float32: np.sqrt would make
    # NumPy scalars of float64, and these two passes would run in float64.
    correction = math.sqrt(1 - b2 ** t)
    np.sqrt(v, out=scratch)
    scratch += float(eps) * correction
    np.divide(m, scratch, out=scratch)
    scratch *= float(learning_rate) * correction / (1 - b1 ** t)
    params += scratch
