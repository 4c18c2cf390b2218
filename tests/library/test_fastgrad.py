"""fastgrad.py: each fused derivative computes the numbers of its plain twin
in vae.py, value and gradient, and matches central finite differences; the
float32 path is audited array by array; the training loops built on them
are seeded, deterministic, learn, and reach the same bound."""
import autograd.numpy as anp
import autograd.numpy.random as npr
import numpy as np
import pytest
from functools import partial
from autograd import grad
from autograd.core import VJPNode
from autograd.misc import flatten
from autograd.test_util import check_grads

from vaelib import fastgrad
import student_vae
from vaelib import networks, training
import loops
from data import DATA_DIM
import vae


def initial_params(config, dtype, seed):
    """networks.initial_params with the skeleton's init_net_params, as vae.py passes it."""
    return networks.initial_params(config, dtype, seed, vae.init_net_params)

SHAPES = [(1, 1), (5, 3)]   # (N images, L latent dimensions)
STEPS = [loops.SKELETON, loops.FAST]


@pytest.fixture(autouse=True)
def seeded():
    npr.seed(0)   # init_net_params and check_grads draw from the global stream


def rand(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape)


def assert_same_vjp(fused, plain, args, argnum, weights):
    """grad of sum(weights * f(args)) w.r.t. args[argnum], fused against plain."""
    def projected(f):
        return lambda x: anp.sum(weights * f(*args[:argnum], x, *args[argnum + 1:]))
    np.testing.assert_allclose(grad(projected(fused))(args[argnum]),
                               grad(projected(plain))(args[argnum]), rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------- dense layer

def vae_layer(inputs, W, b, activation):
    """One layer written with vae.py's plain functions (activation: a name or None)."""
    if activation is not None:
        return vae.ACTIVATIONS[activation](inputs @ W + b)
    return vae.neural_net_predict([(W, b)], inputs)


LAYER_ACTIVATIONS = ["relu", "tanh", None]


@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_dense_layer_equals_the_plain_layer(activation):
    args = (rand(6, 4), rand(4, 3, seed=1), rand(3, seed=2), activation)
    out = fastgrad.dense_layer(*args)
    np.testing.assert_allclose(out, vae_layer(*args), rtol=1e-14)
    assert (activation == "relu") == bool((out == 0).any())   # the mask matters here
    if activation == "tanh":   # and the inputs reach tanh's curved part
        assert np.abs(out).max() > 0.5 and np.abs(out).max() < 1


def test_dense_layer_refuses_an_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        fastgrad.dense_layer(rand(6, 4), rand(4, 3, seed=1), rand(3, seed=2), "sigmoid")


@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
@pytest.mark.parametrize("argnum", [0, 1, 2])
def test_dense_layer_gradient_equals_the_plain_layer_gradient(activation, argnum):
    args = (rand(6, 4), rand(4, 3, seed=1), rand(3, seed=2))
    assert_same_vjp(lambda x, W, b: fastgrad.dense_layer(x, W, b, activation),
                    lambda x, W, b: vae_layer(x, W, b, activation),
                    args, argnum, rand(6, 3, seed=3))


@pytest.mark.parametrize("activation", LAYER_ACTIVATIONS)
def test_dense_layer_gradient_matches_finite_differences(activation):
    x, W, b = rand(5, 4), rand(4, 3, seed=1), rand(3, seed=2)
    check_grads(lambda x, W, b: fastgrad.dense_layer(x, W, b, activation),
                argnum=(0, 1, 2), modes=["rev"], order=1)(x, W, b)


# ---------------------------------------------------------------- networks

def network(inputs_shape):
    """Three layers, 5-7-6-3, at a scale where some ReLUs are off for these inputs."""
    params = vae.init_net_params([5, 7, 6, 3], scale=0.5)
    inputs = rand(*inputs_shape)
    W, b = params[0]
    assert (vae.relu(inputs @ W + b) == 0).any()
    return params, inputs


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("inputs_shape", [(6, 5), (5,)])
def test_neural_net_predict_equals_the_plain_network(inputs_shape, activation):
    params, inputs = network(inputs_shape)
    out = fastgrad.neural_net_predict(params, inputs, activation)
    assert out.shape == inputs_shape[:-1] + (3,)
    np.testing.assert_allclose(
        out, vae.neural_net_predict(params, inputs, vae.ACTIVATIONS[activation]), rtol=1e-13)


def test_the_activation_defaults_to_the_assignments_relu():
    params, inputs = network((6, 5))
    np.testing.assert_array_equal(vae.neural_net_predict(params, inputs),
                                  vae.neural_net_predict(params, inputs, vae.relu))
    np.testing.assert_array_equal(fastgrad.neural_net_predict(params, inputs),
                                  fastgrad.neural_net_predict(params, inputs, "relu"))
    assert not np.allclose(vae.neural_net_predict(params, inputs),
                           vae.neural_net_predict(params, inputs, anp.tanh))


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("inputs_shape", [(6, 5), (5,)])
def test_neural_net_predict_gradients_equal_the_plain_network_gradients(inputs_shape,
                                                                        activation):
    params, inputs = network(inputs_shape)
    weights = rand(*inputs_shape[:-1], 3, seed=3)

    def vjps(predict):
        d_params = grad(lambda p: anp.sum(weights * predict(p, inputs)))(params)
        d_inputs = grad(lambda x: anp.sum(weights * predict(params, x)))(inputs)
        return flatten(d_params)[0], d_inputs

    fused_vjps = vjps(lambda p, x: fastgrad.neural_net_predict(p, x, activation))
    plain_vjps = vjps(lambda p, x: vae.neural_net_predict(p, x, vae.ACTIVATIONS[activation]))
    for fused, plain in zip(fused_vjps, plain_vjps):
        np.testing.assert_allclose(fused, plain, rtol=1e-11, atol=1e-13)


def test_neural_net_predict_gradient_matches_finite_differences():
    params, inputs = network((6, 5))
    check_grads(fastgrad.neural_net_predict, argnum=(0, 1), modes=["rev"], order=1)(params, inputs)


# ---------------------------------------------------------------- Bernoulli

def bernoulli_args():
    return (rand(5, 7) > 0).astype(float), 8 * rand(5, 7, seed=1)


def test_bernoulli_log_prob_equals_the_plain_one():
    args = bernoulli_args()
    np.testing.assert_allclose(fastgrad.bernoulli_log_prob(*args), vae.bernoulli_log_prob(*args),
                               rtol=1e-14)


@pytest.mark.parametrize("argnum", [0, 1])
def test_bernoulli_gradient_equals_the_plain_gradient(argnum):
    assert_same_vjp(fastgrad.bernoulli_log_prob, vae.bernoulli_log_prob, bernoulli_args(),
                    argnum, rand(5, seed=2))


def test_bernoulli_gradient_matches_finite_differences():
    targets, logits = bernoulli_args()
    check_grads(fastgrad.bernoulli_log_prob, argnum=(0, 1), modes=["rev"], order=1)(
        targets, logits / 3)


def test_bernoulli_at_logits_of_a_thousand_is_finite_and_exact():
    # One pixel per row. x l - log(1 + e^l) with log(1 + e^1000) = 1000 and
    # log(1 + e^-1000) = 0 in float64: 0 where x agrees with the sign of l,
    # -1000 where it does not. Its derivative x - sigmoid(l) is 0, -1, +1, 0.
    targets = np.array([[1.0], [0.0], [1.0], [0.0]])
    logits = np.array([[1e3], [1e3], [-1e3], [-1e3]])
    expected, expected_grad = np.array([0.0, -1e3, -1e3, 0.0]), np.array([[0.0], [-1.0], [1.0], [0.0]])
    for log_prob in (fastgrad.bernoulli_log_prob, vae.bernoulli_log_prob):
        np.testing.assert_array_equal(log_prob(targets, logits), expected)
        d_logits = grad(lambda logits: anp.sum(log_prob(targets, logits)))(logits)
        np.testing.assert_array_equal(d_logits, expected_grad)
    # The naive formula, log(sigmoid(l)) and log(1 - sigmoid(l)), is -inf or NaN there.
    with np.errstate(divide="ignore", invalid="ignore"):
        assert not np.isfinite(student_vae.bernoulli_log_prob(targets, logits)).any()


# ---------------------------------------------------------------- sampler and KL

@pytest.mark.parametrize("N, L", SHAPES)
def test_reparameterize_equals_the_sampler_for_the_same_draw(N, L):
    q = rand(N, 2 * L)
    npr.seed(7)
    eps = npr.randn(N, L)   # the draw the sampler makes after the same seed
    npr.seed(7)
    np.testing.assert_allclose(fastgrad.reparameterize(q, eps),
                               vae.sample_latent_variables_from_posterior(q), rtol=1e-15)


@pytest.mark.parametrize("N, L", SHAPES)
def test_reparameterize_gradient_equals_the_sampler_gradient(N, L):
    npr.seed(7)
    eps = npr.randn(N, L)

    def sampler(q):
        npr.seed(7)
        return vae.sample_latent_variables_from_posterior(q)

    assert_same_vjp(lambda q: fastgrad.reparameterize(q, eps), sampler, (rand(N, 2 * L),), 0,
                    rand(N, L, seed=2))


def test_reparameterize_gradient_matches_finite_differences():
    check_grads(fastgrad.reparameterize, argnum=(0, 1), modes=["rev"], order=1)(
        rand(4, 6), rand(4, 3, seed=1))


@pytest.mark.parametrize("N, L", SHAPES)
def test_kl_equals_the_plain_kl(N, L):
    q = rand(N, 2 * L)
    np.testing.assert_allclose(fastgrad.compute_KL(q), vae.compute_KL(q), rtol=1e-14)


@pytest.mark.parametrize("N, L", SHAPES)
def test_kl_gradient_equals_the_plain_gradient(N, L):
    assert_same_vjp(fastgrad.compute_KL, vae.compute_KL, (rand(N, 2 * L),), 0, rand(N, seed=1))


def test_kl_gradient_matches_finite_differences():
    check_grads(fastgrad.compute_KL, modes=["rev"], order=1)(rand(4, 6))


# ---------------------------------------------------------------- batch mean

@pytest.mark.parametrize("shape", [(7,), (7, 3)])
def test_batch_mean_equals_np_mean_in_value_and_gradient(shape):
    x, weights = rand(*shape), rand(*shape[1:], seed=1)
    np.testing.assert_allclose(fastgrad.batch_mean(x), np.mean(x, axis=0), rtol=1e-15)
    assert_same_vjp(fastgrad.batch_mean, lambda x: anp.mean(x, axis=0), (x,), 0, weights)


def test_batch_mean_keeps_float32_where_np_mean_does_not():
    x = rand(7, 3).astype("float32")

    def d_mean(mean):
        return grad(lambda x: anp.sum(mean(x)))(x)

    assert fastgrad.batch_mean(x).dtype == d_mean(fastgrad.batch_mean).dtype == np.float32
    assert d_mean(lambda x: anp.mean(x, axis=0)).dtype == np.float64   # why batch_mean exists


# ---------------------------------------------------------------- flat parameter views

def small_model(scale=0.5):
    """(gen, rec) for data of 6 pixels and L = 2, and a binary batch of 5 images."""
    params = (vae.init_net_params([2, 3, 6], scale=scale),
              vae.init_net_params([6, 3, 4], scale=scale))
    return params, (rand(5, 6) > 0).astype(float)


def test_unflatten_views_match_autograd_flatten_and_share_memory():
    params, _ = small_model()
    flat, unflatten = flatten(params)
    expected, views = unflatten(flat), fastgrad.unflatten_views(flat, params)
    for (W, b), (W_view, b_view) in zip(expected[0] + expected[1], views[0] + views[1]):
        np.testing.assert_array_equal(W_view, W)
        np.testing.assert_array_equal(b_view, b)
        assert np.shares_memory(W_view, flat) and np.shares_memory(b_view, flat)


def plain_bound(activation):
    """vae_lower_bound (relu), or the same lines with another activation."""
    if activation == "relu":
        return vae.vae_lower_bound

    def bound(gen_params, rec_params, data):
        f = vae.ACTIVATIONS[activation]
        q_means_and_log_stds = vae.neural_net_predict(rec_params, data, f)
        z = vae.sample_latent_variables_from_posterior(q_means_and_log_stds)
        logits = vae.neural_net_predict(gen_params, z, f)
        return anp.mean(vae.bernoulli_log_prob(data, logits) - vae.compute_KL(q_means_and_log_stds))
    return bound


def bounds(params, data, activation="relu"):
    """The fused bound through flat views and the plain bound through
    autograd's unflatten, as functions of the flat vector, the same noise."""
    _, unflatten = flatten(params)

    def fused(flat):
        npr.seed(1)
        return training.fused_lower_bound(*fastgrad.unflatten_views(flat, params), data,
                                     activation=activation)

    def plain(flat):
        npr.seed(1)
        return plain_bound(activation)(*unflatten(flat), data)
    return fused, plain


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_fused_bound_equals_the_plain_bound_in_value_and_gradient(activation):
    params, data = small_model()
    flat = flatten(params)[0]
    fused, plain = bounds(params, data, activation)
    np.testing.assert_allclose(fused(flat), plain(flat), rtol=1e-13)
    np.testing.assert_allclose(grad(fused)(flat), grad(plain)(flat), rtol=1e-11, atol=1e-14)
    other = bounds(params, data, {"relu": "tanh", "tanh": "relu"}[activation])[0]
    assert abs(other(flat) - fused(flat)) > 1e-3   # the activation is not ignored


def test_fused_bound_gradient_through_flat_views_matches_finite_differences():
    params, data = small_model()
    fused, _ = bounds(params, data)
    check_grads(fused, modes=["rev"], order=1)(flatten(params)[0])


# ---------------------------------------------------------------- the whole bound as one node

def per_layer_and_flat(params, data, noise, activation):
    """The bound through unflatten_views (about 30 autograd nodes) and
    fastgrad.flat_lower_bound (one), as functions of the flat vector."""
    randn = lambda *shape: noise  # noqa: E731

    def per_layer(flat):
        return training.fused_lower_bound(*fastgrad.unflatten_views(flat, params), data, randn,
                                     activation=activation)

    def one_node(flat):
        return fastgrad.flat_lower_bound(flat, params, data, randn, activation)
    return per_layer, one_node


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("rows, split", [(5, False), (101, True)])
def test_the_bound_as_one_node_equals_the_per_layer_bound_bit_for_bit(
        monkeypatch, dtype, activation, rows, split):
    """Value and gradient, with an upstream derivative other than 1 (3 * bound),
    on a batch small enough for one pass and on one large enough for two halves."""
    monkeypatch.setattr(fastgrad, "cores", lambda: 2 if split else 1)
    monkeypatch.setattr(fastgrad, "SPLIT_SIZE", 500)
    params = (networks.cast_params(vae.init_net_params([3, 7, 8], scale=0.5), dtype),
              networks.cast_params(vae.init_net_params([8, 7, 6], scale=0.5), dtype))
    data, noise = (rand(rows, 8) > 0).astype(dtype), rand(rows, 3, seed=2).astype(dtype)
    flat = flatten(params)[0]
    per_layer, one_node = per_layer_and_flat(params, data, noise, activation)
    assert one_node(flat) == per_layer(flat) and np.result_type(one_node(flat)) == dtype
    expected = grad(lambda f: 3 * per_layer(f))(flat)
    got = grad(lambda f: 3 * one_node(f))(flat)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(expected) > expected.size // 2   # not a vacuous comparison


def test_the_bound_as_one_node_matches_finite_differences():
    params, data = small_model()
    check_grads(per_layer_and_flat(params, data, rand(5, 2, seed=3), "tanh")[1],
                modes=["rev"], order=1)(flatten(params)[0])


def test_the_derivative_of_the_bound_as_one_node_can_be_taken_twice():
    from autograd import make_vjp
    params, data = small_model()
    flat = flatten(params)[0]
    vjp, _ = make_vjp(per_layer_and_flat(params, data, rand(5, 2), "relu")[1])(flat)
    first = vjp(1.0).copy()
    np.testing.assert_array_equal(vjp(1.0), first)
    np.testing.assert_array_equal(vjp(-2.0), -2 * first)


def test_the_bound_as_one_node_draws_its_noise_once_n_images_by_l():
    params, data = small_model()
    flat, shapes = flatten(params)[0], []
    fastgrad.flat_lower_bound(flat, params, data, lambda *shape: shapes.append(shape)
                              or np.zeros(shape))
    assert shapes == [(5, 2)]


def test_the_training_objective_is_one_node_for_any_activation(monkeypatch):
    calls, one_node = [], fastgrad.flat_lower_bound

    def recording(flat, like, data, randn, activation="relu"):
        calls.append(activation)
        return one_node(flat, like, data, randn, activation)
    monkeypatch.setattr(fastgrad, "flat_lower_bound", recording)
    params, data = small_model()
    flat = flatten(params)[0]
    for activation in ("relu", "tanh"):
        training.fused_objective(params, activation)(flat, data, lambda *shape: np.zeros(shape))
    assert calls == ["relu", "tanh"]
    other = training.on_flat_params(training.fused_lower_bound, params)
    other(flat, data, lambda *shape: np.zeros(shape))
    assert calls == ["relu", "tanh"]   # another objective goes node by node


def test_views_that_do_not_fill_the_flat_vector_are_refused():
    params, _ = small_model()
    with pytest.raises(ValueError, match="do not fill a flat vector"):
        fastgrad.unflatten_views(np.zeros(flatten(params)[0].size + 1), params)


# ---------------------------------------------------------------- float32 stays float32

@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("one_node", [False, True])
def test_float32_step_keeps_every_array_float32(monkeypatch, step, one_node):
    """Records the value of every traced operation and every derivative that
    autograd computes during a training step: the bound node by node (the
    pieces of fastgrad), or as the one node the loops use, whose inside is the
    same pieces, bit for bit (test_the_bound_as_one_node_equals_...)."""
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
    gen = networks.cast_params(vae.init_net_params([4, 16, DATA_DIM]), "float32")
    rec = networks.cast_params(vae.init_net_params([DATA_DIM, 16, 8]), "float32")
    images = np.random.RandomState(0).rand(10, DATA_DIM).astype("float32")
    objective = (training.fused_objective((gen, rec)) if one_node else
                 training.on_flat_params(training.fused_lower_bound, (gen, rec)))
    (gen, rec), _ = loops.train(step, gen, rec, images, 1, 10, 1e-3, objective=objective)
    names = {name for name, _, _ in dtypes}
    assert ("flat_lower_bound" in names) == one_node and ("dense_layer" in names) != one_node
    assert len(dtypes) > (3 if one_node else 20)
    assert {dtype for _, _, dtype in dtypes} == {np.dtype("float32")}, [
        record for record in dtypes if record[2] != np.float32]
    assert {W.dtype for W, _ in gen + rec} == {np.dtype("float32")}


# ---------------------------------------------------------------- the training loops

def train_small(step, seed, epochs=3, objective=None):
    """120 synthetic images, 6 batches of 20 per epoch; objective(like) -> the
    flat objective (default: the fused bound). -> (initial flat parameters,
    final flat parameters, train ELBO per epoch)."""
    images = np.random.RandomState(5).rand(120, DATA_DIM) ** 3
    npr.seed(0)
    gen = vae.init_net_params([4, 20, DATA_DIM])
    rec = vae.init_net_params([DATA_DIM, 20, 8])
    initial = flatten((gen, rec))[0]
    params, ends = loops.train(step, gen, rec, images, epochs, 20, 1e-2, seed=seed,
                               objective=objective and objective((gen, rec)))
    return initial, flatten(params)[0], [end.train_elbo for end in ends]


def test_fast_loop_is_deterministic_for_a_seed_and_learns():
    _, first, elbos = train_small(loops.FAST, seed=3)
    _, again, _ = train_small(loops.FAST, seed=3)
    _, other, _ = train_small(loops.FAST, seed=4)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert elbos[-1] > elbos[0] + 10


@pytest.mark.parametrize("step, draws_globally", [(loops.FAST, False), (loops.SKELETON, True)])
def test_only_the_skeleton_loop_draws_from_the_global_stream(step, draws_globally):
    gen = vae.init_net_params([4, 20, DATA_DIM])
    rec = vae.init_net_params([DATA_DIM, 20, 8])
    before = npr.get_state()[1].copy()
    loops.train(step, gen, rec, np.random.RandomState(5).rand(40, DATA_DIM), 1, 20, 1e-3)
    assert draws_globally != np.array_equal(npr.get_state()[1], before)


def test_training_on_the_plain_bound_ends_where_training_on_the_fused_bound_ends():
    # 5 epochs x 6 batches = 30 Adam steps from the same seed, the same noise.
    def plain_bound(gen_params, rec_params, data, randn):
        return vae.vae_lower_bound(gen_params, rec_params, data)   # draws from npr itself

    initial, fused, _ = train_small(loops.SKELETON, seed=0, epochs=5)
    _, plain, _ = train_small(loops.SKELETON, seed=0, epochs=5,
                              objective=partial(training.on_flat_params, plain_bound))
    assert np.max(np.abs(fused - plain)) < 1e-10   # each step moves weights by ~1e-2
    assert np.max(np.abs(fused - initial)) > 1e-2   # they did move


def held_out_elbos(step, images, held_out, seeds):
    """Test ELBO (vae.evaluate_elbo, fixed noise) of one model per seed: the
    global stream seeded, parameters drawn, 6 epochs of 10 batches trained."""
    elbos = []
    for seed in seeds:
        npr.seed(seed)
        gen = vae.init_net_params([4, 20, DATA_DIM])
        rec = vae.init_net_params([DATA_DIM, 20, 8])
        (gen, rec), _ = loops.train(step, gen, rec, images, 6, 20, 1e-2, seed=seed)
        elbos.append(training.evaluate_elbo(gen, rec, held_out)["elbo"])
    return np.array(elbos)


def test_fast_and_skeleton_loops_reach_the_same_held_out_bound(mnist_train_subset):
    """Both loops take the same Adam steps on the same bound; only their
    random streams differ, so the test ELBO of their models has the same
    distribution over seeds. Seed s gives both loops the same initial
    parameters; d_s = fast - skeleton, and mean(d) must be within 4 standard
    errors std(d) / sqrt(n) of 0. (The train estimates are not compared: the
    skeleton's is taken after each update, the fast loop's before.)

    Measured on this problem: mean(d) about -0.4 nats, SE about 0.6. It fails
    for a loop that does not learn (learning rate 0: d = -336, z = -1100), that
    takes half the learning rate (z = -15) or that drops the KL from the
    objective (z = -10). With n = 10 seeds, |t_9| > 4 has probability 0.3 %."""
    images, seeds = mnist_train_subset[:200], range(10)
    held_out = vae.binarize(mnist_train_subset[200:400], np.random.RandomState(1))
    d = (held_out_elbos(loops.FAST, images, held_out, seeds)
         - held_out_elbos(loops.SKELETON, images, held_out, seeds))
    standard_error = np.std(d, ddof=1) / np.sqrt(len(d))
    assert abs(np.mean(d)) < 4 * standard_error, (np.mean(d), standard_error)


# ---------------------------------------------------------------- Adam

def test_adam_in_place_equals_the_plain_adam_over_several_steps():
    params, m, v = rand(50), np.zeros(50), np.zeros(50)
    plain = (params.copy(), np.zeros(50), np.zeros(50))
    for t in range(1, 21):   # past one denormal flush, a no-op for these normal numbers
        gradient = rand(50, seed=t)
        returned = fastgrad.adam_step(params, gradient, m, v, t, learning_rate=1e-2)
        assert all(a is b for a, b in zip(returned, (params, m, v)))   # in place
        plain_params, plain_m, plain_v = plain
        plain = vae.adam_step(plain_params, gradient, plain_m, plain_v, t, learning_rate=1e-2)
    for ours, expected in zip((params, m, v), plain):
        np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert np.max(np.abs(params - rand(50))) > 0.1   # 20 steps of about 1e-2 each


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flush_denormals_zeroes_only_denormals(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.array([tiny / 4, -tiny / 2, tiny, -tiny, 1.0, 0.0], dtype=dtype)
    fastgrad.flush_denormals(x)
    np.testing.assert_array_equal(x, np.array([0, 0, tiny, -tiny, 1.0, 0.0], dtype=dtype))


def test_adam_flushes_denormals_every_few_steps():
    tiny = np.finfo("float64").tiny
    m, v = np.full(3, tiny / 8), np.full(3, tiny / 8)
    fastgrad.adam_step(np.zeros(3), np.zeros(3), m, v, fastgrad.DENORMAL_FLUSH_EVERY - 1)
    assert (m != 0).all()     # b1 * tiny / 8 is still a (denormal) number
    fastgrad.adam_step(np.zeros(3), np.zeros(3), m, v, fastgrad.DENORMAL_FLUSH_EVERY)
    np.testing.assert_array_equal(m, 0)
    np.testing.assert_array_equal(v, 0)


def test_a_float32_update_is_computed_in_float32():
    """Every pass in float32, scalars included: the same steps written with
    np.float32 scalars give the same bits. (With NumPy float64 scalars two of
    the passes would run in float64 and round twice, slowly.)"""
    f32 = np.float32
    params, m, v = rand(10000).astype(f32), np.zeros(10000, f32), np.zeros(10000, f32)
    ours = (params.copy(), m.copy(), v.copy())
    for t in range(1, 4):
        g = (rand(10000, seed=t) * 10.0 ** -t).astype(f32)
        fastgrad.adam_step(*ours[:1], g, *ours[1:], t, learning_rate=3e-3, eps=1e-4)
        m = f32(0.9) * m + f32(1 - 0.9) * g
        v = f32(0.999) * v + f32(1 - 0.999) * (g * g)
        c = np.sqrt(1 - 0.999 ** t)   # bias corrections in float64, rounded once
        params = params + (m / (np.sqrt(v) + f32(1e-4 * c))) * f32(3e-3 * c / (1 - 0.9 ** t))
    for x, y in zip(ours, (params, m, v)):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, y)


def test_adam_with_a_scratch_array_equals_adam_without():
    g = rand(10)
    a, b = rand(10, seed=1), rand(10, seed=1)
    state_a, state_b = (np.zeros(10), np.zeros(10)), (np.zeros(10), np.zeros(10))
    for t in (1, 2, 3):
        fastgrad.adam_step(a, g, *state_a, t)
        fastgrad.adam_step(b, g, *state_b, t, scratch=np.empty(10))
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- two threads, the same numbers

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_adam_in_two_halves_equals_adam_in_one(dtype):
    n = 2 ** 16 + 3   # odd: halves of unequal length
    a, b = (rand(n, seed=1).astype(dtype) for _ in range(2))
    state_a, state_b = ([np.zeros(n, dtype) for _ in range(2)] for _ in range(2))
    for t in range(1, fastgrad.DENORMAL_FLUSH_EVERY + 2):   # through a flush
        g = rand(n, seed=t).astype(dtype) * 10.0 ** -t
        fastgrad.adam_step(a, g, *state_a, t)
        fastgrad.adam_step(b, g, *state_b, t, split=True)
    np.testing.assert_array_equal(a, b)
    for x, y in zip(state_a, state_b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_log_likelihood_in_two_halves_of_rows_equals_one_pass(monkeypatch, dtype):
    targets = (rand(301, 784) > 0).astype(dtype)   # 301 rows: unequal halves
    logits = (rand(301, 784, seed=1) * 30).astype(dtype)
    weights = rand(301, seed=2).astype(dtype)

    def value_and_gradient():
        f = lambda l: anp.sum(weights * fastgrad.bernoulli_log_prob(targets, l))  # noqa: E731
        return fastgrad.bernoulli_log_prob(targets, logits), grad(f)(logits)
    monkeypatch.setattr(fastgrad, "cores", lambda: 2)
    split = value_and_gradient()
    monkeypatch.setattr(fastgrad, "cores", lambda: 1)
    whole = value_and_gradient()
    for x, y in zip(split, whole):
        assert x.dtype == dtype
        np.testing.assert_array_equal(x, y)


def test_the_log_likelihood_of_one_image_against_many_logits_is_not_split(monkeypatch):
    # targets (D,) broadcast against logits (K, D): rows cannot be halved.
    monkeypatch.setattr(fastgrad, "cores", lambda: 2)
    targets, logits = (rand(784) > 0).astype(float), rand(200, 784, seed=1)
    np.testing.assert_allclose(fastgrad.bernoulli_log_prob(targets, logits),
                               vae.bernoulli_log_prob(targets, logits), rtol=1e-12)


def fast_steps(objective, flat, batches, prefetch=True):
    """The fast loop's steps on batches, each followed by an in-place Adam
    step (learning rate 1e-2) on flat. -> the estimates."""
    step, adam = training.fast_step(objective, np.random.default_rng(3)), training.in_place_adam()
    m, v, elbos = np.zeros_like(flat), np.zeros_like(flat), []
    for t, (images, upcoming) in enumerate(zip(batches, batches[1:] + [None]), 1):
        elbo, gradient = step(flat, images, upcoming if prefetch else None)
        adam(flat, gradient, m, v, t, 1e-2)
        elbos.append(elbo)
    return elbos


def test_the_fast_loop_draws_the_same_numbers_with_or_without_its_prefetch():
    """The next batch's binarisation, drawn by the worker thread while a step
    computes, is the stream's next draw either way."""
    images = np.random.RandomState(5).rand(70, DATA_DIM)   # a short last batch
    config = {"latent_dim": 3, "hidden_units": 10, "hidden_layers": 1}
    results = []
    for prefetch in (True, False):
        gen, rec = initial_params(config, "float64", seed=1)
        flat, unflatten = flatten((gen, rec))
        batches = [images[i:i + 20] for i in range(0, 70, 20)] * 2
        elbos = fast_steps(training.fused_objective((gen, rec)), flat, batches, prefetch)
        results.append((elbos, flat.copy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_an_objective_that_draws_noise_twice_gets_it_in_a_fixed_order():
    images = np.random.RandomState(5).rand(40, DATA_DIM)
    config = {"latent_dim": 2, "hidden_units": 5, "hidden_layers": 1}

    def twice(gen, rec, data, randn):
        return (training.fused_lower_bound(gen, rec, data, randn)
                + training.fused_lower_bound(gen, rec, data, randn)) / 2
    runs = []
    for _ in range(2):
        gen, rec = initial_params(config, "float64", seed=1)
        flat, _ = flatten((gen, rec))
        runs.append(fast_steps(training.on_flat_params(twice, (gen, rec)), flat,
                               [images[:20], images[20:]]))
    assert runs[0] == runs[1] and np.all(np.isfinite(runs[0]))


@pytest.mark.parametrize("env, expected", [({"OPENBLAS_NUM_THREADS": "1"}, 1),
                                           ({"OMP_NUM_THREADS": "2"}, 2),
                                           ({"OPENBLAS_NUM_THREADS": "x"}, None)])
def test_cores_follows_the_blas_thread_setting(monkeypatch, env, expected):
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import os
    fastgrad.cores.cache_clear()   # it reads the setting once, as the BLAS library does
    try:
        assert fastgrad.cores() == (expected or len(os.sched_getaffinity(0)))
    finally:
        fastgrad.cores.cache_clear()



# ---------------------------------------------------------------- vae.py's loop, plain and fast

def loop_both_ways(objective, optimizer, dtype="float64", epochs=2):
    """vae.train on 70 grey images (batches of 20, a short last one) from the
    skeleton's initialisation after npr.seed(0), with objective(like) -> the
    flat objective (None: the loop's default, the plain vae_lower_bound) and
    the optimiser given. -> (final flat parameters, train estimates, the
    global stream's state after)."""
    images = (np.random.RandomState(5).rand(70, DATA_DIM) ** 3).astype(dtype)
    npr.seed(0)
    gen = networks.cast_params(vae.init_net_params([3, 16, DATA_DIM]), dtype)
    rec = networks.cast_params(vae.init_net_params([DATA_DIM, 16, 6]), dtype)
    ends = list(vae.train(gen, rec, images, training.Settings(epochs, 20, 1e-2),
                          objective and objective((gen, rec)), optimizer))
    return (flatten((ends[-1].gen_params, ends[-1].rec_params))[0],
            [end.train_elbo for end in ends], npr.get_state()[1].copy())


def test_vae_py_s_loop_gives_the_same_numbers_plain_and_with_the_fast_twins():
    """`python vae.py` passes the fused bound and the in-place Adam to the loop
    whose defaults are the plain vae_lower_bound and adam_step: 8 Adam steps
    each way from the same stream. The random draws are identical; the
    fused bound's gradient differs from autograd's by rounding only, and the
    in-place Adam computes the same step with its corrections folded into the
    learning rate and eps (Kingma & Ba, end of Section 2): equal to rounding,
    far below one step's effect (about 1e-2 per weight). Measured: the
    estimates equal, the parameters within 2.3e-14 (fused bound) and 7e-17
    (in-place Adam alone)."""
    plain, plain_elbos, plain_stream = loop_both_ways(None, vae.adam_step)
    fused_objective = training.fused_objective
    for objective, optimizer in [(fused_objective, vae.adam_step),
                                 (None, training.in_place_adam()),
                                 (fused_objective, training.in_place_adam())]:
        fast, fast_elbos, fast_stream = loop_both_ways(objective, optimizer)
        np.testing.assert_array_equal(fast_stream, plain_stream)
        assert np.max(np.abs(fast - plain)) < 1e-12
        np.testing.assert_allclose(fast_elbos, plain_elbos, rtol=1e-12)
    after_one_epoch = loop_both_ways(None, vae.adam_step, epochs=1)[0]
    assert np.max(np.abs(plain - after_one_epoch)) > 1e-3   # not vacuous: the weights move
