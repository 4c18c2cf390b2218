"""What the checks draw: inputs from the file's generator `rng` (drawn afresh
for each file, so no answer can be precomputed), in the assignment's
dimensions, and the reference's answers for a seed composed with noise from
a private RandomState(seed), never the global NumPy stream (check.py grades
several files in parallel threads; tests/grading/test_checks.py pins the
compositions to what the worker draws, bit for bit)."""
import autograd.numpy as anp    # in the compositions that autograd differentiates
import numpy as np

LATENT, PIXELS = 50, 784     # the assignment's latent size and image size
HIDDEN = 40                  # hidden units of the small networks the checks use
INIT_SCALE = 1e-2           # init_net_params' default scale, the assignment's


def new_seed(rng):
    return int(rng.integers(2 ** 31))


def layers(rng, sizes, scale):
    return [(scale * rng.standard_normal((m, n)), scale * rng.standard_normal(n))
            for m, n in zip(sizes[:-1], sizes[1:])]


def networks(rng, noise_off=False):
    """Generator (L, HIDDEN, D) and recognition (D, HIDDEN, 2L) parameters that
    give moderate logits. noise_off: the encoder's log_std is -50, so z = mean
    to within exp(-50) ~ 2e-22 and the bound is deterministic."""
    gen = layers(rng, [LATENT, HIDDEN, PIXELS], 0.2)
    rec = layers(rng, [PIXELS, HIDDEN, 2 * LATENT], 0.05)
    if noise_off:
        W, b = rec[-1]
        rec[-1] = (np.hstack([W[:, :LATENT], np.zeros((HIDDEN, LATENT))]),
                   np.concatenate([b[:LATENT], np.full(LATENT, -50.0)]))
    return gen, rec


def binary_images(rng, n):
    return (rng.random((n, PIXELS)) < 0.3).astype(float)


def encoder_outputs(rng, n, mean=None, log_std=None):
    """(n, 2L): mean, then log_std; each drawn from rng unless given."""
    mean = rng.standard_normal((n, LATENT)) if mean is None else mean
    log_std = 0.5 * rng.standard_normal((n, LATENT)) if log_std is None else log_std
    return np.hstack([np.broadcast_to(mean, (n, LATENT)), np.broadcast_to(log_std, (n, LATENT))])


def noise_off_inputs(rng, n):
    """seed, (gen_params, rec_params, data) for a deterministic bound of n images."""
    gen, rec = networks(rng, noise_off=True)
    return new_seed(rng), (gen, rec, binary_images(rng, n))



def skeleton_randn(seed):
    """randn(*shape) drawing what npr.randn draws in the worker after npr.seed(seed):
    a private RandomState(seed) is the same MT19937 stream with the same normal
    transform, and leaves the global stream, shared by the grading threads, alone."""
    return np.random.RandomState(seed).randn


def reference_init(randn, layer_sizes, scale=INIT_SCALE):
    """reference.init_net_params with its draws from randn: [(W (m, n), b (n,)), ...],
    scale * randn(m, n) then scale * randn(n), layer by layer."""
    return [(scale * randn(m, n), scale * randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def reference_sample(reference, q, randn):
    """reference.sample_latent_variables_from_posterior with eps = randn(N, L):
    z = mean + exp(log_std) * eps. q: (N, 2L) -> (N, L)."""
    mean, log_std = reference.unpack_gaussian_params(q)
    return mean + anp.exp(log_std) * randn(*mean.shape)


def reference_bound(reference, gen_params, rec_params, data, randn, predict=None):
    """reference.vae_lower_bound with eps from randn, and predict in place of its
    network if given: the mean over the batch of log p(x|z) - KL. -> scalar."""
    predict = predict or reference.neural_net_predict
    q = predict(rec_params, data)
    logits = predict(gen_params, reference_sample(reference, q, randn))
    return anp.mean(reference.bernoulli_log_prob(data, logits) - reference.compute_KL(q))

