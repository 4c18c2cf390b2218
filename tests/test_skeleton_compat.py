"""The reference consumes the global random stream exactly as the course's
skeleton does, so a correct student solution run with the same seed follows
the same trajectory. The student loop below is written the way the skeleton
and a typical solution write it: naive formulas, `grad` of an objective that
binarises inside, Adam by hand, then a separate objective call per batch."""
import autograd.numpy as anp
import numpy as np
import autograd.numpy.random as npr
from autograd import grad
from autograd.misc import flatten

import vae

SEED, N_IMAGES, BATCH, EPOCHS = 0, 300, 50, 5   # 6 batches x 5 epochs = 30 steps
LATENT, HIDDEN = 4, 20


def student_solution(train_images):
    """A plain student solution of the practical, skeleton-shaped."""
    def neural_net_predict(params, inputs):
        for W, b in params[:-1]:
            inputs = anp.maximum(0, anp.dot(inputs, W) + b)
        W, b = params[-1]
        return anp.dot(inputs, W) + b

    def sample(q):
        mean, log_std = q[:, :LATENT], q[:, LATENT:]
        return mean + anp.exp(log_std) * npr.randn(*mean.shape)

    def bernoulli_log_prob(targets, logits):
        probs = 1 / (1 + anp.exp(-logits))
        return anp.sum(targets * anp.log(probs) + (1 - targets) * anp.log(1 - probs), axis=-1)

    def compute_kl(q):
        mean, log_std = q[:, :LATENT], q[:, LATENT:]
        return -0.5 * anp.sum(1 + 2 * log_std - mean ** 2 - anp.exp(2 * log_std), axis=-1)

    def vae_lower_bound(gen_params, rec_params, data):
        q = neural_net_predict(rec_params, data)
        logits = neural_net_predict(gen_params, sample(q))
        return anp.mean(bernoulli_log_prob(data, logits) - compute_kl(q))

    def init(sizes, scale=1e-2):
        return [(scale * npr.randn(m, n), scale * npr.randn(n))
                for m, n in zip(sizes[:-1], sizes[1:])]

    npr.seed(SEED)
    init_gen = init([LATENT, HIDDEN, HIDDEN, 784])
    init_rec = init([784, HIDDEN, HIDDEN, 2 * LATENT])
    flat, unflat = flatten((init_gen, init_rec))
    num_batches = int(anp.ceil(len(train_images) / BATCH))

    def objective(flat_params):
        gen_params, rec_params = unflat(flat_params)
        x = train_images[batch * BATCH:(batch + 1) * BATCH]
        on = x > npr.uniform(size=x.shape)
        images = x * 0.0
        images[on] = 1.0
        return vae_lower_bound(gen_params, rec_params, images)

    objective_grad = grad(objective)
    m, v, t = anp.zeros(len(flat)), anp.zeros(len(flat)), 1
    elbos = []
    for epoch in range(EPOCHS):
        elbo_est = 0
        for batch in range(num_batches):
            g = objective_grad(flat)
            m = 0.9 * m + (1 - 0.9) * g
            v = 0.999 * v + (1 - 0.999) * g ** 2
            mhat, vhat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)
            flat = flat + 0.001 * mhat / (anp.sqrt(vhat) + 1e-8)
            elbo_est += objective(flat)
            t += 1
        elbos.append(elbo_est / num_batches)
    return flat, elbos, npr.get_state()[1].copy()


def reference(train_images):
    npr.seed(SEED)
    gen = vae.init_net_params([LATENT, HIDDEN, HIDDEN, vae.DATA_DIM])
    rec = vae.init_net_params([vae.DATA_DIM, HIDDEN, HIDDEN, 2 * LATENT])
    initial = flatten((gen, rec))[0]
    elbos = []
    gen, rec = vae.train(gen, rec, train_images, EPOCHS, BATCH, 1e-3,
                         on_epoch_end=lambda epoch, g, r, elbo, s: elbos.append(elbo))
    return initial, flatten((gen, rec))[0], elbos, npr.get_state()[1].copy()


def test_reference_follows_the_student_trajectory(mnist_train_subset):
    images = mnist_train_subset[:N_IMAGES]
    student_params, student_elbos, student_state = student_solution(images)
    initial, ours, our_elbos, our_state = reference(images)
    # Both consumed the same random numbers in the same order ...
    np.testing.assert_array_equal(our_state, student_state)
    # ... and took the same 30 Adam steps: only rounding differs (each weight
    # moves by about 1e-3 per step, so 1e-12 is far below one step's effect).
    assert np.max(np.abs(ours - student_params)) < 1e-12
    np.testing.assert_allclose(our_elbos, student_elbos, rtol=1e-12)
    # The parameters did move, so the comparison is not vacuous.
    assert np.max(np.abs(ours - initial)) > 1e-2
