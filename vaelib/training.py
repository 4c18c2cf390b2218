"""The training engine: what vae.py's loop and the fast loop share.

- the objective the loops differentiate, built from fastgrad's fused
  derivatives (fused_elbo_terms, fused_lower_bound, fused_objective: the
  same numbers as vae.vae_lower_bound, tested) and the in-place Adam
  (in_place_adam: adam_step's signature and numbers, to float rounding);
- the epochs: their batches in order behind a progress bar, the learning
  rate of each (burda_learning_rate), the per-batch estimate with its
  divergence check, and what an epoch hands its caller (EpochEnd);
- the state that continues a run exactly (training_state, restore);
- the fast loop (fast_train): one value-and-gradient pass per step, noise
  from a generator, the next batch binarised by a second thread;
- the one test-set evaluation (evaluate_elbo) and the epoch's table row.

What it needs of vae.py's functions is passed in; it never imports vae.py.
"""
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Union

import autograd.numpy as anp
import autograd.numpy.random as npr
from autograd import value_and_grad
from autograd.misc import flatten

from vaelib import fastgrad, runs, tuning

ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8
ADAM_SPLIT_SIZE = 2 ** 16    # parameters from which Adam updates in two threads
TEST_BINARIZATION_SEED = 1234  # the test set is binarised once, with its own stream
TEST_POSTERIOR_SEED = 4321     # the posterior samples of the test ELBO, same every epoch
EVAL_BATCH_SIZE = 1000
TRAIN_BINARIZATION = "dynamic: every training batch binarised afresh, x > uniform(0, 1)"
THRESHOLD = 0.5                  # --binarize threshold: pixel > 0.5
TEST_BINARIZATION = ("sampled once: x > uniform(0, 1) drawn from "
                     f"numpy.random.RandomState({TEST_BINARIZATION_SEED})")


def binarize_split(images, how):
    """'sample': x > uniform noise drawn once from RandomState(TEST_BINARIZATION_SEED),
    as vae.py binarises its test set; 'threshold': x > 0.5.
    -> (binary images, a sentence that says which)."""
    if how == "threshold":
        return ((images > THRESHOLD).astype(anp.float64),
                f"thresholded: x > {THRESHOLD}")
    return binarize_once(images), TEST_BINARIZATION


def binarize_once(images, seed=TEST_BINARIZATION_SEED):
    """A fixed binarisation (the test set's): pixel d is 1 with probability
    images[:, d], from one uniform draw of RandomState(seed). -> 0.0 / 1.0."""
    return (images > npr.RandomState(seed).uniform(size=images.shape)).astype(images.dtype)


# ---- The objective and the optimiser of `python vae.py` ------------------------------

def fused_elbo_terms(gen_params, rec_params, data, randn, activation="relu"):
    """The terms of vae_lower_bound per image, built from fastgrad's fused
    derivatives, with eps = randn(N, L) and hidden layers of the activation
    named ("relu" or "tanh"). -> log p(x|z) (N,), KL (N,)."""
    q_means_and_log_stds = fastgrad.neural_net_predict(rec_params, data, activation)
    eps = randn(len(data), q_means_and_log_stds.shape[-1] // 2)
    logits = fastgrad.neural_net_predict(
        gen_params, fastgrad.reparameterize(q_means_and_log_stds, eps), activation)
    return (fastgrad.bernoulli_log_prob(data, logits),
            fastgrad.compute_KL(q_means_and_log_stds))


def fused_lower_bound(gen_params, rec_params, data, randn=npr.randn, activation="relu"):
    """vae_lower_bound from fused pieces: the same value and gradient for the
    same noise (tests/library/test_fastgrad.py). With the default randn it draws from
    the global stream as vae_lower_bound does."""
    log_px_given_z, kl = fused_elbo_terms(gen_params, rec_params, data, randn, activation)
    return fastgrad.batch_mean(log_px_given_z - kl)


def fused_objective(like, activation="relu"):
    """The objective the loops differentiate in `python vae.py`: the bound of
    the networks shaped like `like` ((gen_params, rec_params)) that a flat
    parameter vector holds, as one autograd node (fastgrad.flat_lower_bound).
    -> objective(flat_params, data, randn=npr.randn) -> scalar."""
    def objective(flat_params, data, randn=npr.randn):
        return fastgrad.flat_lower_bound(flat_params, like, data, randn, activation)
    return objective


def on_flat_params(objective, like):
    """objective(gen_params, rec_params, data, randn) as a function of the flat
    parameter vector (viewed as `like`), node by node: for other models' bounds.
    -> objective(flat_params, data, randn=npr.randn)."""
    def flat_objective(flat_params, data, randn=npr.randn):
        return objective(*fastgrad.unflatten_views(flat_params, like), data, randn)
    return flat_objective


def in_place_adam():
    """An optimiser with adam_step's signature, (params, gradient, m, v, t,
    learning_rate, b1, b2, eps) -> (params, m, v), that updates params, m and v
    in place (fastgrad.adam_step) with its work space kept between steps, in
    two threads for large vectors on two free cores (the same numbers)."""
    scratch = []

    def step(params, gradient, m, v, t, learning_rate=1e-3, b1=ADAM_B1, b2=ADAM_B2,
             eps=ADAM_EPS):
        if not scratch:
            scratch.append(anp.empty_like(params))
        return fastgrad.adam_step(params, gradient, m, v, t, learning_rate, b1, b2, eps,
                                  scratch=scratch[0],
                                  split=params.size >= ADAM_SPLIT_SIZE and tuning.cores() > 1)
    return step


# ---- Epochs ---------------------------------------------------------------------------

def burda_learning_rate(epoch, base=1e-3):
    """Burda, Grosse and Salakhutdinov (2016), Section 5: base * 10^(-i/7)
    for 3^i passes, i = 0, ..., 7 (3,280 passes in all; i stays 7 after)."""
    i = 0
    while i < 7 and epoch > (3 ** (i + 1) - 1) // 2:   # passes of stages 0..i
        i += 1
    return base * 10 ** (-i / 7)


LR_SCHEDULES = {"constant": lambda base: lambda epoch: base,
                "burda": lambda base: partial(burda_learning_rate, base=base)}


@dataclass
class Settings:
    """How a loop trains: epochs in all (a resumed run's included), images per
    Adam step, the learning rate (a number, or a function of the epoch 1, 2,
    ...), Adam's eps, the seed of the fast loop's generator, a progress bar."""
    epochs: int
    batch_size: int
    learning_rate: Union[float, Callable] = 1e-3
    adam_eps: float = ADAM_EPS
    seed: int = 0
    progress: bool = False

    def rate(self, epoch):
        return self.learning_rate(epoch) if callable(self.learning_rate) else self.learning_rate


@dataclass
class EpochEnd:
    """What a loop yields after an epoch: its number, the parameters, the
    mean of the batches' estimates, the seconds it took, and the state that,
    given back as `resume` with these parameters, continues exactly."""
    epoch: int
    gen_params: list
    rec_params: list
    train_elbo: float
    seconds: float
    state: dict


class Epoch:
    """One pass over the training images: iterating gives its batches in order
    (the last may be short) behind a progress bar; add(estimate) sums the
    batches' estimates and stops training (runs.TrainingDiverged) at one that
    is not finite; end(params, state) -> the EpochEnd."""

    def __init__(self, number, train_images, settings):
        from tqdm import tqdm
        size = settings.batch_size
        self.batches = [train_images[i:i + size] for i in range(0, len(train_images), size)]
        self.number, self.learning_rate = number, settings.rate(number)
        self.start, self.elbo_sum, self.done = time.perf_counter(), 0.0, 0
        self.bar = tqdm(total=len(self.batches), desc=f"epoch {number}/{settings.epochs}",
                        leave=False, unit="batch", disable=None if settings.progress else True)

    def __iter__(self):
        return iter(self.batches)

    def upcoming(self, n):
        """The batch after batch n (counted from 0), or None after the last."""
        return self.batches[n + 1] if n + 1 < len(self.batches) else None

    def add(self, elbo):
        self.done += 1
        if not anp.isfinite(elbo):
            raise runs.TrainingDiverged(f"the ELBO became {elbo} at epoch {self.number}, "
                                        f"batch {self.done}")
        self.elbo_sum += float(elbo)
        self.bar.update(1)
        self.bar.set_postfix(elbo=f"{self.elbo_sum / self.done:.2f}")

    def end(self, params, state):
        self.bar.close()
        return EpochEnd(self.number, *params, self.elbo_sum / len(self.batches),
                        time.perf_counter() - self.start, state)


def epochs(train_images, settings, resume=None):
    """The epochs still to run, after the one resume's state was taken after."""
    tuning.keep_freed_memory()
    done = 0 if resume is None else resume["epoch"]
    for number in range(done + 1, settings.epochs + 1):
        yield Epoch(number, train_images, settings)


def final_params(epoch_ends, on_epoch_end=None):
    """Runs a loop (the EpochEnds it yields) to its end, calling
    on_epoch_end(end) after every epoch. -> (gen_params, rec_params) of the last."""
    for end in epoch_ends:
        if on_epoch_end is not None:
            on_epoch_end(end)
    return end.gen_params, end.rec_params


# ---- Resuming exactly -----------------------------------------------------------------

def training_state(epoch, m, v, t, generator=None, seed=0):
    """What continuing after `epoch` needs, exactly: Adam's moments and step
    count, and both random streams: the global one, which vae.py's loop draws
    from, and the fast loop's generator (default: numpy.random.default_rng(seed)
    unused, for a loop that has none). Arrays and JSON values."""
    generator = npr.default_rng(seed) if generator is None else generator
    stream = npr.get_state(legacy=False)
    return {"epoch": epoch, "adam_t": t, "adam_m": m.copy(), "adam_v": v.copy(),
            "generator": generator.bit_generator.state, "global_key": stream["state"]["key"],
            "global_stream": {"pos": stream["state"]["pos"], "has_gauss": stream["has_gauss"],
                              "gauss": stream["gauss"]}}


def restore(state, flat_params, generator=None):
    """Adam's (m, v, t) for the flat parameters: zeros and 0 to start, or
    those of a training_state, whose random streams are then restored too
    (the generator's if one is given). -> (m, v, t)."""
    m, v = anp.zeros_like(flat_params), anp.zeros_like(flat_params)
    if state is None:
        return m, v, 0
    m[...], v[...] = state["adam_m"], state["adam_v"]
    if generator is not None:
        generator.bit_generator.state = state["generator"]
    stream = state["global_stream"]
    npr.set_state({"bit_generator": "MT19937", "has_gauss": stream["has_gauss"],
                   "gauss": stream["gauss"],
                   "state": {"key": state["global_key"], "pos": stream["pos"]}})
    return m, v, state["adam_t"]


# ---- The fast loop --------------------------------------------------------------------

def fast_step(objective, generator, binarize=True):
    """The fast loop's step: one value-and-gradient pass of
    objective(flat_params, data, randn), binarisation and noise from the
    generator (numpy.random.default_rng(seed)) in the data's dtype (binarize
    False: the objective sees the grey levels). step(flat_params, images,
    upcoming) -> (estimate before the update, gradient); if the next step's
    images are given, their binarisation, the stream's next draw, is made by a
    second thread while the optimiser runs (the same numbers)."""
    objective_and_grad = value_and_grad(objective)
    pending = []   # the next batch's binarised data, being drawn

    def binarized(images):
        data = generator.random(images.shape, dtype=images.dtype)
        return anp.greater(images, data, out=data, casting="unsafe")   # x > u as 0.0 / 1.0

    def step(flat_params, images, upcoming=None):
        data = pending.pop().result() if pending else binarized(images) if binarize else images
        elbo, gradient = objective_and_grad(
            flat_params, data, lambda *shape: generator.standard_normal(shape, dtype=images.dtype))
        if upcoming is not None and binarize:   # not earlier: beside the products, it would slow them
            pending.append(tuning.worker().submit(binarized, upcoming))
        return elbo, gradient
    return step


def fast_train(gen_params, rec_params, train_images, settings, objective, optimizer,
               resume=None, binarize=True):
    """vae.train's mathematics with one value-and-gradient pass per step (the
    estimate is the objective before the update) and noise from
    numpy.random.default_rng(settings.seed): not stream-compatible with the
    skeleton. objective(flat_params, data, randn); optimizer: adam_step's
    signature. Yields an EpochEnd after every epoch (see vae.train)."""
    flat_params, unflatten = flatten((gen_params, rec_params))
    generator = npr.default_rng(settings.seed)
    m, v, t = restore(resume, flat_params, generator)
    step = fast_step(objective, generator, binarize)
    for epoch in epochs(train_images, settings, resume):
        for n, images in enumerate(epoch):
            elbo, gradient = step(flat_params, images, epoch.upcoming(n))
            t += 1
            flat_params, m, v = optimizer(flat_params, gradient, m, v, t, epoch.learning_rate,
                                          eps=settings.adam_eps)
            del gradient          # not held through the next step's pass (peak memory)
            epoch.add(elbo)
        yield epoch.end(unflatten(flat_params), training_state(epoch.number, m, v, t, generator))


# ---- The test set ---------------------------------------------------------------------

def evaluate_elbo(gen_params, rec_params, binary_images, seed=TEST_POSTERIOR_SEED,
                  activation="relu", terms=None):
    """ELBO of a fixed binary data set, one posterior sample per image drawn
    from RandomState(seed): the global stream is untouched and repeated calls
    are comparable. terms(gen_params, rec_params, data, randn) -> (log p(x|z),
    KL) per image (default: fused_elbo_terms with the activation; another
    model's terms for variants.py). -> {"elbo", "log_px_given_z", "kl"}, means
    over images."""
    terms = partial(fused_elbo_terms, activation=activation) if terms is None else terms
    rs = npr.RandomState(seed)
    parts = [terms(gen_params, rec_params, binary_images[i:i + EVAL_BATCH_SIZE], rs.randn)
             for i in range(0, len(binary_images), EVAL_BATCH_SIZE)]
    log_px_given_z = anp.concatenate([lp for lp, _ in parts])
    kl = anp.concatenate([kl for _, kl in parts])
    return {"elbo": float(anp.mean(log_px_given_z - kl)),
            "log_px_given_z": float(anp.mean(log_px_given_z)), "kl": float(anp.mean(kl))}


EPOCH_HEADER = (f"{'epoch':>5} {'train ELBO':>11} {'test ELBO':>10} {'log p(x|z)':>11} "
                f"{'KL':>7} {'seconds':>8}")


def epoch_record(epoch, train_elbo, test, seconds, **more):
    """The history record of an epoch, printed as a row under EPOCH_HEADER;
    test: evaluate_elbo's dict. Raises runs.TrainingDiverged if the test ELBO
    is not finite."""
    if not anp.isfinite(test["elbo"]):
        raise runs.TrainingDiverged(f"the test ELBO became {test['elbo']} after epoch {epoch}")
    print(f"{epoch:5d} {train_elbo:11.2f} {test['elbo']:10.2f} "
          f"{test['log_px_given_z']:11.2f} {test['kl']:7.2f} {seconds:8.1f}", flush=True)
    return {"epoch": epoch, "train_elbo": train_elbo, "test_elbo": test["elbo"],
            "test_log_px_given_z": test["log_px_given_z"], "test_kl": test["kl"],
            "seconds": seconds, **more}


def run_metrics(config, checkpoint, history, status, wall_seconds):
    """vae.py's metrics.json: everything needed to interpret and reproduce the run."""
    train_stream = (" from the global numpy.random stream" if config["loop"] == "skeleton"
                    else f" from numpy.random.default_rng({config['seed']})")
    return {
        "status": status, "config": config, "seed": config["seed"],
        "versions": runs.library_versions(),
        "units": "nats per image, summed over pixels, averaged over images; higher is better",
        "binarization": {"train": TRAIN_BINARIZATION + train_stream,
                         "test": TEST_BINARIZATION,
                         "test_posterior_samples": "one per image, numpy.random.RandomState"
                                                   f"({TEST_POSTERIOR_SEED}), the same "
                                                   "every epoch"},
        "epochs": history,
        "final_test_elbo": history[-1]["test_elbo"] if history else None,
        "wall_seconds": wall_seconds, "checkpoint": str(checkpoint),
        "log_likelihood": {
            "note": "the ELBO is a lower bound on log p(x); evaluate.py estimates log p(x) "
                    "of this checkpoint by importance sampling",
            "command": runs.EVALUATE_COMMAND.format(checkpoint),
            "report": str(Path(checkpoint).parent / runs.EVALUATION_NAME)},
    }
