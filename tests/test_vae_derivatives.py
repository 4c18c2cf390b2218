"""The custom derivatives that make training fast (autograd primitives with
hand-written VJPs): each is checked against central finite differences and
against the plain autograd version of the same formula; the float32 path is
audited array by array; the fast loop is seeded, deterministic and learns."""
import autograd.numpy as anp
import autograd.numpy.random as npr
import numpy as np
import pytest
from autograd import grad
from autograd.core import VJPNode
from autograd.misc import flatten
from autograd.test_util import check_grads

import bench
import vae


@pytest.fixture(autouse=True)
def seeded():
    npr.seed(0)   # check_grads draws its random directions from the global stream


def rand(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape)


# ---------------------------------------------------------------- plain autograd versions

def plain_dense_layer(inputs, W, b, apply_relu):
    out = anp.dot(inputs, W) + b
    return anp.maximum(0.0, out) if apply_relu else out


def plain_bernoulli_log_prob(targets, logits):
    return anp.sum(targets * logits - anp.logaddexp(0.0, logits), axis=-1)


def plain_reparameterize(q, eps):
    latent_dim = q.shape[-1] // 2
    return q[:, :latent_dim] + anp.exp(q[:, latent_dim:]) * eps


def plain_kl(q):
    latent_dim = q.shape[-1] // 2
    mean, log_std = q[:, :latent_dim], q[:, latent_dim:]
    return -0.5 * anp.sum(1 + 2 * log_std - mean ** 2 - anp.exp(2 * log_std), axis=-1)


def assert_same_vjp(custom, plain, args, argnum, weights):
    """grad of sum(weights * f(args)) w.r.t. args[argnum], custom against plain."""
    def projected(f):
        return lambda x: anp.sum(weights * f(*args[:argnum], x, *args[argnum + 1:]))
    np.testing.assert_allclose(grad(projected(custom))(args[argnum]),
                               grad(projected(plain))(args[argnum]), rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------- dense layer

@pytest.mark.parametrize("apply_relu", [True, False])
def test_dense_layer_gradient_matches_finite_differences(apply_relu):
    x, W, b = rand(5, 4), rand(4, 3, seed=1), rand(3, seed=2)
    check_grads(lambda x, W, b: vae.dense_layer(x, W, b, apply_relu),
                argnum=(0, 1, 2), modes=["rev"], order=1)(x, W, b)


@pytest.mark.parametrize("apply_relu", [True, False])
@pytest.mark.parametrize("argnum", [0, 1, 2])
def test_dense_layer_gradient_matches_plain_autograd(apply_relu, argnum):
    args = (rand(6, 4), rand(4, 3, seed=1), rand(3, seed=2), apply_relu)
    out = vae.dense_layer(*args)
    np.testing.assert_allclose(out, plain_dense_layer(*args), rtol=1e-14)
    assert apply_relu == bool((out == 0).any())   # the mask matters in this example
    weights = rand(*out.shape, seed=3)
    custom = lambda x, W, b: vae.dense_layer(x, W, b, apply_relu)  # noqa: E731
    plain = lambda x, W, b: plain_dense_layer(x, W, b, apply_relu)  # noqa: E731
    assert_same_vjp(custom, plain, args[:3], argnum, weights)


# ---------------------------------------------------------------- Bernoulli

def test_bernoulli_gradient_matches_finite_differences():
    targets = (rand(4, 6) > 0).astype(float)
    check_grads(lambda l: vae.bernoulli_log_prob(targets, l), modes=["rev"], order=1)(3 * rand(4, 6))
    check_grads(lambda x: vae.bernoulli_log_prob(x, 3 * rand(4, 6)), modes=["rev"], order=1)(targets)


@pytest.mark.parametrize("argnum", [0, 1])
def test_bernoulli_gradient_matches_plain_autograd(argnum):
    args = ((rand(5, 7) > 0).astype(float), 8 * rand(5, 7, seed=1))
    assert_same_vjp(vae.bernoulli_log_prob, plain_bernoulli_log_prob, args, argnum, rand(5, seed=2))


# ---------------------------------------------------------------- sampler and KL

def test_reparameterize_gradient_matches_finite_differences():
    check_grads(vae.reparameterize, argnum=(0, 1), modes=["rev"], order=1)(rand(4, 6), rand(4, 3, seed=1))


@pytest.mark.parametrize("argnum", [0, 1])
def test_reparameterize_gradient_matches_plain_autograd(argnum):
    args = (rand(4, 6), rand(4, 3, seed=1))
    assert_same_vjp(vae.reparameterize, plain_reparameterize, args, argnum, rand(4, 3, seed=2))


def test_kl_gradient_matches_finite_differences():
    check_grads(vae.compute_KL, modes=["rev"], order=1)(rand(4, 6))


def test_kl_gradient_matches_plain_autograd():
    assert_same_vjp(vae.compute_KL, plain_kl, (rand(4, 6),), 0, rand(4, seed=1))


# ---------------------------------------------------------------- flat parameter views

def test_unflatten_views_match_autograd_flatten_and_share_memory():
    params = (vae.init_net_params([3, 4, 5]), vae.init_net_params([5, 4, 6]))
    flat, unflatten = flatten(params)
    views = vae.unflatten_views(flat, params)
    for (W, b), (W_view, b_view) in zip(unflatten(flat)[0] + unflatten(flat)[1], views[0] + views[1]):
        np.testing.assert_array_equal(W_view, W)
        np.testing.assert_array_equal(b_view, b)
        assert np.shares_memory(W_view, flat) and np.shares_memory(b_view, flat)


def test_gradient_through_flat_views_matches_finite_differences_and_autograd_slicing():
    params = (vae.init_net_params([2, 3, 6], scale=0.5), vae.init_net_params([6, 3, 4], scale=0.5))
    flat, unflatten = flatten(params)
    data = (rand(5, 6) > 0).astype(float)

    def through_views(flat):
        npr.seed(1)
        return vae.vae_lower_bound(*vae.unflatten_views(flat, params), data)

    def through_autograd_unflatten(flat):
        npr.seed(1)
        return vae.vae_lower_bound(*unflatten(flat), data)

    check_grads(through_views, modes=["rev"], order=1)(flat)
    np.testing.assert_allclose(grad(through_views)(flat), grad(through_autograd_unflatten)(flat),
                               rtol=1e-12, atol=1e-15)


def test_whole_bound_gradient_matches_a_plain_autograd_bound():
    params = (vae.init_net_params([3, 8, 12], scale=0.5), vae.init_net_params([12, 8, 6], scale=0.5))
    flat, unflatten = flatten(params)
    data = (rand(7, 12) > 0).astype(float)

    def plain_network(params, inputs):
        for i, (W, b) in enumerate(params):
            inputs = plain_dense_layer(inputs, W, b, i < len(params) - 1)
        return inputs

    def plain_bound(flat):
        gen, rec = unflatten(flat)
        q = plain_network(rec, data)
        logits = plain_network(gen, plain_reparameterize(q, rand(7, 3, seed=4)))
        return anp.mean(plain_bernoulli_log_prob(data, logits) - plain_kl(q))

    def ours(flat):
        eps = rand(7, 3, seed=4)
        log_px_given_z, kl = vae.elbo_terms(*vae.unflatten_views(flat, params), data,
                                            lambda q: vae.reparameterize(q, eps))
        return anp.mean(log_px_given_z - kl)

    np.testing.assert_allclose(ours(flat), plain_bound(flat), rtol=1e-13)
    np.testing.assert_allclose(grad(ours)(flat), grad(plain_bound)(flat), rtol=1e-11, atol=1e-14)


# ---------------------------------------------------------------- float32 stays float32

@pytest.mark.parametrize("loop", ["fast", "skeleton"])
def test_float32_step_keeps_every_array_float32(monkeypatch, loop):
    """Records the value of every traced operation and every derivative that
    autograd computes during a training step."""
    dtypes, original_init = [], VJPNode.__init__

    def recording_init(self, value, fun, args, kwargs, parent_argnums, parents):
        original_init(self, value, fun, args, kwargs, parent_argnums, parents)
        name, vjp = getattr(fun, "__name__", str(fun)), self.vjp
        if isinstance(value, (np.ndarray, np.generic)):
            dtypes.append((name, "value", np.result_type(value)))

        def recording_vjp(g):
            ingrads = tuple(vjp(g))
            dtypes.extend((name, "derivative", np.result_type(x)) for x in ingrads
                          if isinstance(x, np.ndarray))
            return ingrads
        self.vjp = recording_vjp

    monkeypatch.setattr(VJPNode, "__init__", recording_init)
    gen = vae.cast_params(vae.init_net_params([4, 16, vae.DATA_DIM]), "float32")
    rec = vae.cast_params(vae.init_net_params([vae.DATA_DIM, 16, 8]), "float32")
    images = np.random.RandomState(0).rand(10, vae.DATA_DIM).astype("float32")
    gen, rec = vae.train(gen, rec, images, 1, 10, 1e-3, loop=loop)
    assert len(dtypes) > 20
    assert {dtype for _, _, dtype in dtypes} == {np.dtype("float32")}, [
        record for record in dtypes if record[2] != np.float32]
    assert {W.dtype for W, _ in gen + rec} == {np.dtype("float32")}


# ---------------------------------------------------------------- the fast loop

def train_small(loop, seed, epochs=3):
    images = np.random.RandomState(5).rand(120, vae.DATA_DIM) ** 3
    npr.seed(0)
    gen = vae.init_net_params([4, 20, vae.DATA_DIM])
    rec = vae.init_net_params([vae.DATA_DIM, 20, 8])
    elbos = []
    params = vae.train(gen, rec, images, epochs, 20, 1e-2, loop=loop, seed=seed,
                       on_epoch_end=lambda e, g, r, elbo, s: elbos.append(elbo))
    return flatten(params)[0], elbos


def test_fast_loop_is_deterministic_for_a_seed_and_learns():
    first, elbos = train_small("fast", seed=3)
    again, _ = train_small("fast", seed=3)
    other, _ = train_small("fast", seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert elbos[-1] > elbos[0] + 10


@pytest.mark.parametrize("loop, draws_globally", [("fast", False), ("skeleton", True)])
def test_only_the_skeleton_loop_draws_from_the_global_stream(loop, draws_globally):
    gen = vae.init_net_params([4, 20, vae.DATA_DIM])
    rec = vae.init_net_params([vae.DATA_DIM, 20, 8])
    before = npr.get_state()[1].copy()
    vae.train(gen, rec, np.random.RandomState(5).rand(40, vae.DATA_DIM), 1, 20, 1e-3, loop=loop)
    assert draws_globally != np.array_equal(npr.get_state()[1], before)


def test_fast_and_skeleton_loops_reach_similar_bounds():
    _, fast = train_small("fast", seed=0, epochs=6)
    _, skeleton = train_small("skeleton", seed=0, epochs=6)
    assert abs(fast[-1] - skeleton[-1]) < 0.05 * abs(skeleton[-1])


# ---------------------------------------------------------------- Adam details

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flush_denormals_zeroes_only_denormals(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.array([tiny / 4, -tiny / 2, tiny, -tiny, 1.0, 0.0], dtype=dtype)
    vae.flush_denormals(x)
    np.testing.assert_array_equal(x, np.array([0, 0, tiny, -tiny, 1.0, 0.0], dtype=dtype))


def test_adam_flushes_denormals_every_few_steps():
    tiny = np.finfo("float64").tiny
    m, v = np.full(3, tiny / 8), np.full(3, tiny / 8)
    vae.adam_step(np.zeros(3), np.zeros(3), m, v, vae.DENORMAL_FLUSH_EVERY - 1)
    assert (m != 0).all()     # b1 * tiny / 8 is still a (denormal) number
    vae.adam_step(np.zeros(3), np.zeros(3), m, v, vae.DENORMAL_FLUSH_EVERY)
    np.testing.assert_array_equal(m, 0)
    np.testing.assert_array_equal(v, 0)


def test_adam_with_a_scratch_array_equals_adam_without():
    g = rand(10)
    a, b = rand(10, seed=1), rand(10, seed=1)
    state_a, state_b = (np.zeros(10), np.zeros(10)), (np.zeros(10), np.zeros(10))
    for t in (1, 2, 3):
        vae.adam_step(a, g, *state_a, t)
        vae.adam_step(b, g, *state_b, t, scratch=np.empty(10))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- bench

def test_bench_counts_the_products_of_a_step():
    # Encoder 784-200-200-100: 3 forward, 3 dW, 2 dX (its input is the data);
    # decoder 50-200-200-784: 3 forward, 3 dW, 3 dX: 17 per gradient pass.
    rec_forward, rec_backward = bench.gemm_shapes(200, [784, 200, 200, 100], input_is_data=True)
    gen_forward, gen_backward = bench.gemm_shapes(200, [50, 200, 200, 784], input_is_data=False)
    assert len(rec_forward + rec_backward + gen_forward + gen_backward) == 17
    assert (784, 200, 200) in rec_backward and (200, 784, 200) in gen_backward
