"""The figures of a student's run, judged from what the script passed to save_images.

check.py runs the submission as __main__ on a subset of MNIST with save_images
replaced by a recorder, then calls judge_figures with the recorded calls, the
trained parameters it found and the test images the script was given. One
result per figure the course skeleton asks for (../shared/ASSIGNMENT.md,
"Figures the skeleton asks for"):

1. 25 prior samples, shown as Bernoulli means sigmoid(logits);
2. the first 10 test images followed by their reconstructions;
3. five interpolations between the encoder means of test images (0, 1), ...,
   (8, 9), 25 frames each, s = linspace(0, 1, 25), in either direction.

File names are not prescribed, so figures are recognised by their content.
Figures that depend on noise are compared in logit space, logit(p) with p
clipped to [1e-6, 1 - 1e-6] (|logit| <= 13.8): there posterior samples of
different test images are told apart better than in pixel space (the
numbers are at RECONSTRUCTION_RATIO), and the model's decodings from noise
or from other parameters (at PRIOR_RATIO in grader/prior.py).
"""
import numpy as np

from data import DATA_DIM, IMAGE_SIDE
from grader import interpolations
from grader.pixels import (SAME, binary, in_unit_interval, logit_distance, same, shown_as_logits,
                           sigmoid, smooth_path)
from grader.prior import Prior, prior_problem
from vae import INTERPOLATION_PAIRS, INTERPOLATION_STEPS, NUM_PRIOR_SAMPLES, NUM_RECONSTRUCTIONS

CALIBRATION_SAMPLES = 500   # posterior samples per test image that measure its spread
CALIBRATION_SEED = 0
MIN_SPREAD = 1e-3      # floor of a spread, in logits, for a collapsed posterior
# Reconstructions are posterior samples, so they are not compared for
# equality. A figure's statistic T is the mean over its 10 reconstructions of
# |logit(r_i) - logit(d_i)| / spread_i, d_i = sigmoid(decoder(encoder mean of
# test image i)), spread_i the mean of that distance over CALIBRATION_SAMPLES
# posterior samples of image i (so E[T] = 1 for a correct figure). Measured
# (20000 correct figures, 3000 of each mistake) with the parameters of the
# skeleton's run on the grader's subset: 300 images, 30 epochs, 60 Adam steps,
# KL 1 to 13 nats per image, so the posteriors of the 10 images overlap:
#   correct: 99.9% 1.85, 99.99% 2.02, max 2.18, 3 of 20000 above 2.0 (after
#            10 epochs on 1000 images: 99.99% 2.10; 60 epochs on 300: 2.08)
#   reversed order: median 2.5, 91% above 2.0;  shifted by one: 90% above 2.0
#   prior samples instead: 99.97% above 2.0;  the originals again: 8.3
# So a correct figure fails about once in 7000 runs and a wrong order is
# missed about once in 10 (more often with a less trained model: after 10
# epochs on 1000 images, 60% of reversed orders pass). In pixels the
# posteriors overlap more: accepting r_i if mean |r_i - d_i| < 0.05 or if d_i
# is its nearest decoded mean, for every i, fails 38% of correct figures
# (posterior samples reach 0.24; they are the nearest to their own d_i for 2%
# to 76% of the images), and no pixel limit that passes them fails the
# originals (0.10 to 0.19) or a reversed order.
RECONSTRUCTION_RATIO = 2.0


def result(check, status, message=""):
    return {"function": "(figures)", "check": check, "status": status, "message": message}


# ---- The recorded calls ----------------------------------------------------------

def as_images(images):
    """A recorded images argument as (n, DATA_DIM) float64, or None if it is
    not images: (n, 784), (n, 28, 28), (784,) or (28, 28), lists too."""
    try:
        array = np.asarray(images, dtype=np.float64)
    except Exception:   # ragged lists, objects that are not numbers
        return None
    if array.size == 0 or array.ndim == 0:
        return None
    if array.shape[-1] == DATA_DIM or array.shape[-2:] == (IMAGE_SIDE, IMAGE_SIDE):
        return array.reshape(-1, DATA_DIM)
    return None


def figures_of(calls):
    """[(filename, (n, DATA_DIM) images), ...] of the calls that hold images."""
    try:
        calls = list(calls)
    except TypeError:
        calls = []
    figures = []
    for call in calls:
        try:
            images, filename = call[0], str(call[1])
        except Exception:   # not an (images, filename, kwargs) tuple
            continue
        images = as_images(images)
        if images is not None:
            figures.append((filename, images))
    return figures


# ---- The trained model's view of the first 10 test images ------------------------

class Model:
    """Decoded encoder means d (10, D) of the first 10 test images, their
    spread (10,) in logits, and the trained networks."""

    def __init__(self, gen_params, rec_params, test_images, reference):
        self.gen_params, self.reference = gen_params, reference
        self.originals = test_images[:NUM_RECONSTRUCTIONS]
        self.mean, self.log_std = reference.unpack_gaussian_params(
            np.asarray(reference.neural_net_predict(rec_params, self.originals), dtype=np.float64))
        self.decoded_means = self.decode(self.mean)
        if self.decoded_means.shape != self.originals.shape:
            raise ValueError(f"decoded images of shape {self.decoded_means.shape[1:]}, "
                             f"not ({DATA_DIM},)")
        # spread_i: the mean logit distance of posterior samples of image i from
        # d_i, from a stream of its own (the global one is left alone).
        eps = np.random.RandomState(CALIBRATION_SEED).randn(CALIBRATION_SAMPLES, *self.mean.shape)
        samples = self.decode(self.mean + np.exp(self.log_std) * eps)   # (S, 10, D)
        self.spread = np.maximum(
            logit_distance(samples, self.decoded_means).mean(axis=0), MIN_SPREAD)

    def decode(self, z):
        """Bernoulli means sigmoid(decoder(z)): (..., L) -> (..., D)."""
        z = np.asarray(z, dtype=np.float64)
        flat = self.reference.neural_net_predict(self.gen_params, z.reshape(-1, z.shape[-1]))
        return np.asarray(self.reference.sigmoid(flat), dtype=np.float64).reshape(
            *z.shape[:-1], -1)

    def interpolation(self, a, b):
        """The 25 frames sigmoid(decoder((1 - s) z_a + s z_b)), s = linspace(0, 1, 25)."""
        s = np.linspace(0, 1, INTERPOLATION_STEPS)[:, None]
        return self.decode((1 - s) * self.mean[a] + s * self.mean[b])

    def ratios(self, images, indices):
        """Logit distance of images[k] from d[indices[k]], over that image's spread."""
        indices = list(indices)
        return logit_distance(images, self.decoded_means[indices]) / self.spread[indices]


# ---- Logits shown instead of Bernoulli means --------------------------------------

def outside_unit_interval(images, logit):
    """Words for images not in [0, 1]; logit: True if their sigmoid passes,
    False if it does not, None if it could not be checked."""
    if logit:
        return "values outside [0, 1]: these are logits: apply the sigmoid (the Bernoulli means)"
    finite = images[np.isfinite(images)]
    seen = f"from {finite.min():.3g} to {finite.max():.3g}" if finite.size else "none finite"
    seen += ", NaN or inf too" * (finite.size < images.size)
    if logit is None:
        return f"values outside [0, 1] ({seen}): not Bernoulli means (logits, not sigmoid(logits)?)"
    return (f"values outside [0, 1] ({seen}): not Bernoulli means, and their sigmoid does not "
            "pass either")


def prior_shown_as_logits(images, test_images, prior):
    """True if sigmoid(images) passes as 25 prior samples."""
    if not shown_as_logits(images):
        return False
    means = sigmoid(images)
    return (not binary(means) and prior_problem(means, prior) is None
            and not (test_images is not None and any(
                np.max(np.abs(test_images - image), axis=-1).min() <= SAME for image in means)))


# ---- 1. Samples from the prior ---------------------------------------------------

def judge_prior_samples(figures, test_images, prior, no_prior, seen=None):
    """seen (a dict), if given, gets the images the verdict is about."""
    check = "25 prior samples"
    seen = {} if seen is None else seen
    candidates = [(f, x) for f, x in figures if len(x) == NUM_PRIOR_SAMPLES]
    samples = [(f, x) for f, x in candidates if not smooth_path(x)]
    if not samples:
        return result(check, "fail", "no save_images call with 25 images"
                      + " (other than interpolations)" * bool(candidates))
    problems = []
    for filename, images in samples:
        if not in_unit_interval(images):
            problems.append(outside_unit_interval(
                images, None if prior is None else prior_shown_as_logits(images, test_images,
                                                                         prior)))
        elif binary(images):
            problems.append("25 images but binary (0/1): show sigmoid(logits), the "
                            "Bernoulli means, not samples")
        elif test_images is not None and any(
                np.max(np.abs(test_images - image), axis=-1).min() <= SAME for image in images):
            problems.append("the 25 images include test images, not samples from the prior")
        elif prior is None:
            seen[check] = images
            return result(check, "pass", f"{filename}: 25 Bernoulli means in [0, 1]; "
                          f"{no_prior}, so the samples could not be compared with the model")
        elif (problem := prior_problem(images, prior)) is not None:
            problems.append(problem)
        else:
            seen[check] = images
            return result(check, "pass", f"{filename}: 25 Bernoulli means, decodings of your "
                          "trained model")
    seen[check] = samples[0][1]
    return result(check, "fail", f"{samples[0][0]}: {problems[0]}")


# ---- 2. Reconstructions ----------------------------------------------------------

def originals_at(figures, originals):
    """[(figure index, row), ...] where the 10 originals are consecutive rows."""
    n = len(originals)
    starts = [(k, row) for k, (_, images) in enumerate(figures)
              for row in np.flatnonzero(np.max(np.abs(images - originals[0]), axis=-1) <= SAME)]
    return [(k, int(row)) for k, row in starts if same(figures[k][1][row:row + n], originals)]


def reconstruction_candidates(figures, locations, n):
    """[(where, images)]: the n rows after each originals location, then every
    other call of n images."""
    after = [(f"{figures[k][0]} (after the originals)", figures[k][1][row + n:row + 2 * n])
             for k, row in locations if len(figures[k][1]) >= row + 2 * n]
    used = {k for k, _ in locations}
    alone = [(filename, images) for k, (filename, images) in enumerate(figures)
             if len(images) == n and (k not in used or len(used) > 1)]
    return after + alone


def reconstruction_problem(images, model):
    """None if the images are reconstructions of the originals, else why not."""
    if not in_unit_interval(images):
        logit = shown_as_logits(images) and reconstruction_problem(sigmoid(images), model) is None
        return "reconstructions with " + outside_unit_interval(images, logit)
    if same(images, model.originals):
        return "the reconstructions are the originals shown again: encode, sample z, decode"
    if binary(images):
        return ("binary (0/1) reconstructions: show sigmoid(logits), the Bernoulli means, "
                "not samples")
    ratios = model.ratios(images, range(len(images)))
    if ratios.mean() > RECONSTRUCTION_RATIO:
        k = int(np.argmax(ratios))
        return (f"reconstruction {k} does not decode test image {k}: the reconstructions "
                f"are {ratios.mean():.1f} times as far (in logits) from the decoded encoder "
                f"means as posterior samples are on average (at most {RECONSTRUCTION_RATIO} "
                f"passes; reconstruction {k}: {ratios[k]:.1f} times)")
    return None


def judge_reconstructions(figures, model, originals, no_model, seen=None):
    """seen (a dict), if given, gets the originals found and the reconstructions
    the verdict is about, one array."""
    check = "10 test images and their reconstructions"
    seen = {} if seen is None else seen
    if originals is None:
        return result(check, "warning", f"{no_model}, so the originals could not be looked for")
    locations = originals_at(figures, originals)
    if not locations:
        return result(check, "fail", "the first 10 test images were not found in any call")
    candidates = reconstruction_candidates(figures, locations, len(originals))
    seen[check] = np.concatenate([originals] + [images for _, images in candidates[:1]])
    if not candidates:
        return result(check, "fail", "10 originals found but no reconstructions after them "
                                     "or in a call of 10")
    if model is None:
        return result(check, "warning", f"originals and 10 images found in {candidates[0][0]}; "
                      f"{no_model}, so the reconstructions could not be checked")
    problems = []
    for where, images in candidates:
        problem = reconstruction_problem(images, model)
        if problem is None:
            seen[check] = np.concatenate([originals, images])
            ratio = model.ratios(images, range(len(images))).mean()
            return result(check, "pass", f"{where}: the reconstructions decode the originals "
                          f"(on average {ratio:.2f} times as far from the decoded encoder means "
                          f"as posterior samples are; at most {RECONSTRUCTION_RATIO} passes)")
        problems.append(f"{where}: {problem}")
    return result(check, "fail", problems[0])


# ---- 3. Interpolations (grader/interpolations.py) ---------------------------------

def judge_interpolations(figures, model, no_model, seen=None):
    """seen (a dict), if given, gets the frames the verdict is about: each pair's
    interpolation found or attempt diagnosed, in the pairs' order, else the
    calls that look like interpolations (25 frames, a smooth path)."""
    check = "five interpolations"
    pairs = {}
    try:
        if model is None:
            return result(check, "warning",
                          f"{no_model}, so the interpolations could not be checked")
        return result(check, *interpolations.judge(figures, model, pairs))
    finally:
        if seen is not None:
            shown = [pairs[pair] for pair in INTERPOLATION_PAIRS if pair in pairs] or [
                frames for _, frames in interpolations.segments(figures)
                if len(frames) == INTERPOLATION_STEPS and smooth_path(frames)]
            if shown:
                seen[check] = rows_of(shown[:len(INTERPOLATION_PAIRS)], INTERPOLATION_STEPS)


def rows_of(sequences, width):
    """The sequences as one array of whole rows of width images (blank, 0, after
    a shorter one), at most len(INTERPOLATION_PAIRS) rows."""
    rows = []
    for frames in sequences:
        blank = -len(frames) % width
        rows.append(np.concatenate([frames, np.zeros((blank, frames.shape[1]))]))
    return np.concatenate(rows)[:width * len(INTERPOLATION_PAIRS)]


# ---- All three -------------------------------------------------------------------

def judge_figures(calls, gen_params, rec_params, test_images, reference,
                  no_params="the trained parameters were not found", seen=None):
    """One result per figure of the assignment: 25 prior samples, 10 test
    images and their reconstructions, five interpolations. calls: recorded
    save_images calls (images, filename, kwargs); gen_params, rec_params: the
    trained networks or None; test_images: (N, D) the script was given;
    reference: the vae module; no_params: why gen_params and rec_params are
    None; seen: a dict that gets {check: images} of the figures each verdict is
    about (for the pages: shown()). Never raises: a check that cannot run is a
    warning."""
    with np.errstate(all="ignore"):   # student images may hold inf and NaN
        figures = figures_of(calls)
        test_images = as_images(test_images)
        originals, model, no_model = None, None, no_params
        prior, no_prior = None, no_model
        if gen_params is not None:
            try:
                prior = Prior(gen_params, reference)
            except Exception as e:   # parameters of another layout, or NaN
                no_prior = f"the trained parameters do not decode ({type(e).__name__}: {e})"
        if test_images is None or len(test_images) < NUM_RECONSTRUCTIONS:
            no_model = "fewer than 10 test images were given"
        else:
            originals = test_images[:NUM_RECONSTRUCTIONS]
            if gen_params is not None and rec_params is not None:
                try:
                    model = Model(gen_params, rec_params, test_images, reference)
                except Exception as e:   # parameters of another layout
                    no_model = f"the trained parameters do not decode ({type(e).__name__}: {e})"
        checks = {"25 prior samples":
                      lambda: judge_prior_samples(figures, test_images, prior, no_prior, seen),
                  "10 test images and their reconstructions":
                      lambda: judge_reconstructions(figures, model, originals, no_model, seen),
                  "five interpolations":
                      lambda: judge_interpolations(figures, model, no_model, seen)}
        return [guarded(check, judge) for check, judge in checks.items()]


def guarded(check, judge):
    """judge(), or a warning if odd input broke it."""
    try:
        return judge()
    except Exception as e:
        return result(check, "warning", f"could not be checked ({type(e).__name__}: {e})")
