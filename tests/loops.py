"""The training loops as the tests run them: vae.train (the skeleton's order)
or training.fast_train, by default with what `python vae.py` passes them (the
fused bound and the in-place Adam). Not a test module."""
from vaelib import training
import vae


def train(loop, gen, rec, images, epochs, batch_size, learning_rate, objective=None,
          optimizer=None, seed=0, adam_eps=training.ADAM_EPS, resume=None, activation="relu"):
    """-> ((gen_params, rec_params) after the last epoch, [training.EpochEnd])."""
    objective = training.fused_objective((gen, rec), activation) if objective is None else objective
    optimizer = training.in_place_adam() if optimizer is None else optimizer
    settings = training.Settings(epochs, batch_size, learning_rate, adam_eps, seed)
    ends = list(loop(gen, rec, images, settings, objective, optimizer, resume=resume))
    return (ends[-1].gen_params, ends[-1].rec_params), ends


SKELETON, FAST = vae.train, training.fast_train
