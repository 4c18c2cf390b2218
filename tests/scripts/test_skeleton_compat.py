"""The reference consumes the global random stream exactly as the course's
skeleton does, so a correct student solution run with the same seed follows
the same trajectory. The student solution (student_vae.py) is written the way
the skeleton and a typical solution write it: naive formulas, `grad` of an
objective that binarises inside, Adam by hand, then a separate objective call
per batch."""
import autograd.numpy.random as npr
import numpy as np
from autograd.misc import flatten

import loops
import student_vae
from data import DATA_DIM
import vae

SEED, N_IMAGES, BATCH, EPOCHS = 0, 300, 50, 5   # 6 batches x 5 epochs = 30 steps
LATENT, HIDDEN = 4, 20


def reference(train_images):
    """vae.train as `python vae.py` runs it (the fused bound, the in-place Adam),
    initialised as the skeleton does."""
    npr.seed(SEED)
    gen = vae.init_net_params([LATENT, HIDDEN, HIDDEN, DATA_DIM])
    rec = vae.init_net_params([DATA_DIM, HIDDEN, HIDDEN, 2 * LATENT])
    initial = flatten((gen, rec))[0]
    (gen, rec), ends = loops.train(loops.SKELETON, gen, rec, train_images, EPOCHS, BATCH, 1e-3)
    elbos = [end.train_elbo for end in ends]
    return initial, flatten((gen, rec))[0], elbos, npr.get_state()[1].copy()


def test_reference_follows_the_student_trajectory(mnist_train_subset):
    images = mnist_train_subset[:N_IMAGES]
    student_params, student_elbos, student_state = student_vae.train(
        images, latent_dim=LATENT, hidden=HIDDEN, epochs=EPOCHS, batch_size=BATCH, seed=SEED)
    initial, ours, our_elbos, our_state = reference(images)
    # Both consumed the same random numbers in the same order ...
    np.testing.assert_array_equal(our_state, student_state)
    # ... and took the same 30 Adam steps: only rounding differs (each weight
    # moves by about 1e-3 per step, so 1e-12 is far below one step's effect).
    assert np.max(np.abs(ours - student_params)) < 1e-12
    np.testing.assert_allclose(our_elbos, student_elbos, rtol=1e-12)
    # The parameters did move, so the comparison is not vacuous.
    assert np.max(np.abs(ours - initial)) > 1e-2
