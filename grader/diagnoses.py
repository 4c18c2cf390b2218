"""What a wrong value of a student's function most likely is, for the checks
of grader/checks.py. Each diagnosis checks its own signature on the values
(several inputs where one could match by chance) and returns "" or None when
the evidence does not support it, so that a check then describes only what
it measured. Proxies `f` are the checks' (see the top of checks.py); every
input comes from the check's `rng`.

- the bound composed from the student's own functions (own_bound), which
  tells a bound's own mistake (bound_mistake) from one it inherits from the
  functions it calls, errors included (bound_at);
- batch normalisation in neural_net_predict: an image's output depends on the
  other images of the batch, then the likely form (BATCH_NORMALISED);
- the known mistakes of compute_KL, alone or combined (kl_mistakes);
- bernoulli_log_prob returning a product of probabilities (product_of_probabilities);
- a sampler whose images all get the same noise (same_noise_for_every_image).
"""
from functools import partial
from itertools import product
from typing import NamedTuple

import numpy as np

from grader.draws import (LATENT, PIXELS, binary_images, encoder_outputs, noise_off_inputs,
                          reference_bound, reference_sample, skeleton_randn)
from grader.verdicts import Failed, SubmissionError, as_array, call_mismatch, close, describe_error


# ---- a sampler whose images share their noise ------------------------------------------

def same_noise_for_every_image(eps):
    """What is wrong if every image got the same noise eps (N, L), else "". Rounding
    in (z - mean) / exp(log_std) is below 1e-12 at these means and stds;
    independent draws spread over about 8 in 20,000 images."""
    if not np.all(np.ptp(eps, axis=0) < 1e-6):
        return ""
    if np.all(np.abs(eps) < 1e-6):
        return "the samples equal the mean: no noise is added (z = mean + exp(log_std) * eps)"
    return ("every image gets the same noise: one noise row shared by all images "
            "(npr.randn(1, L) broadcast?); eps needs a draw per image and dimension, "
            "npr.randn(N, L)")


# ---- the bound composed from the student's own functions --------------------------

class Composed(NamedTuple):
    """value: mean(bernoulli_log_prob - compute_KL) of the student's functions, or
    None; failure: why it could not be composed ("" if it was), e.g. a stub."""
    value: object
    failure: str = ""
    error: object = None          # the SubmissionError a function raised, if one did


COMPONENTS = ("compute_KL", "bernoulli_log_prob", "sample_latent_variables_from_posterior",
              "neural_net_predict")


def own_bound(f, reference, seed, gen, rec, data, student=COMPONENTS):
    """The bound composed from the student's neural_net_predict (the reference's
    where the file has none, or where it gives no (N, out) array), their sampler
    seeded with `seed`, bernoulli_log_prob and compute_KL, each called through
    its proxy; the reference's for the COMPONENTS not in `student`: Composed."""
    functions = {name: f.sibling(name) if name in student else None for name in COMPONENTS}
    missing = [name for name in COMPONENTS[:3] if name in student and functions[name] is None]
    if missing:
        return Composed(None, f"the file defines no {missing[0]}")

    def predict(params, inputs):
        if functions["neural_net_predict"] is not None:
            try:
                value = functions["neural_net_predict"](params, inputs)
                if isinstance(value, np.ndarray) and \
                        value.shape == (len(inputs), params[-1][1].shape[0]):
                    return value
            except SubmissionError:
                pass
        return reference.neural_net_predict(params, inputs)

    def usable(name, value):
        if isinstance(value, list):
            try:
                value = np.array(value, dtype=float)
            except (TypeError, ValueError):
                pass
        if not isinstance(value, np.ndarray) or np.ndim(value) > 2:
            raise LookupError(f"{name} returned {'None' if value is None else 'no array'}")
        return value.astype(float)

    def own(name, reference_value, *args, seed=None):
        g = functions[name]
        if g is None:
            return reference_value(*args)
        return usable(name, g(*args) if seed is None else g.seeded(seed, *args))

    try:
        q = predict(rec, data)
        z = own("sample_latent_variables_from_posterior",
                lambda q: reference_sample(reference, q, skeleton_randn(seed)), q, seed=seed)
        if z.shape != (len(data), LATENT):
            return Composed(None, "the sampler returned another shape")
        log_p = own("bernoulli_log_prob", reference.bernoulli_log_prob, data, predict(gen, z))
        kl = own("compute_KL", reference.compute_KL, q)
        with np.errstate(all="ignore"):
            return Composed(float(np.mean(log_p - kl)))
    except SubmissionError as e:
        return Composed(None, f"{e.type} in a function it calls", e)
    except (LookupError, ValueError, TypeError) as e:   # a stub, or shapes that do not combine
        return Composed(None, str(e))


def contributing(f, reference, seed, gen, rec, data, value):
    """The COMPONENTS whose student version the composed `value` depends on:
    with the reference's in its place, the composition changes."""
    others = [own_bound(f, reference, seed, gen, rec, data,
                        tuple(other for other in COMPONENTS if other != name)).value
              for name in COMPONENTS]
    return [name for name, other in zip(COMPONENTS, others)
            if other is None or not close(value, other, 1e-8)]


def explains_error(error, composed):
    """Whether the student's bound raising `error` follows from the functions it
    calls: composing them raised the same error, or one of them returned None
    and the bound's error is the TypeError of an operation on it."""
    if composed.error is not None:
        return (composed.error.type, composed.error.message) == (error.type, error.message)
    return error.type == "TypeError" and "NoneType" in error.message and "None" in composed.failure


def bound_at(f, reference, seed, gen, rec, data):
    """f.seeded(seed, gen, rec, data); an error that composing the student's own
    functions raises too is theirs (Failed "error", explained)."""
    try:
        return f.seeded(seed, gen, rec, data)
    except SubmissionError as e:
        if not call_mismatch(e, f) and explains_error(
                e, own_bound(f, reference, seed, gen, rec, data)):
            raise Failed(describe_error(e, f), "error", explained=True) from e
        raise


def value_follows(f, reference, seed, gen, rec, data):
    """(the student's bound at these inputs or None, whether it is the bound
    composed from their own functions while the reference's differs: False, or
    the functions whose student version makes the difference, or True)."""
    try:
        value = float(as_array(f.seeded(seed, gen, rec, data), (), "a scalar"))
    except (SubmissionError, Failed):
        return None, False
    own = own_bound(f, reference, seed, gen, rec, data).value
    if own is None or not close(value, own, 1e-8) or close(
            own, reference_bound(reference, gen, rec, data, skeleton_randn(seed)), 1e-8):
        return value, False
    return value, contributing(f, reference, seed, gen, rec, data, own) or True


def repeats(sampler, rng, seeds):
    """Whether the sampler returns the same z for two seeds."""
    q = encoder_outputs(rng, 4)
    try:
        return np.array_equal(sampler.seeded(seeds[0], q), sampler.seeded(seeds[1], q))
    except SubmissionError:
        return False


# What a bound is, as a function of the right one (`of`) for n images.
BOUND_MISTAKES = [
    (lambda of, n: -of, "the sign is flipped: it returns KL - log p(x|z), the bound is "
                        "log p(x|z) - KL"),
    (lambda of, n: n * of, "looks like a sum over the batch instead of the mean")]
OWN = "the bound composed from your own functions"


def bound_mistake(f, reference, rng, got, expected, own, n):
    """The BOUND_MISTAKES relation that got has to the reference's bound, or to
    `own`, the one composed from the student's functions, on this and 2 more
    drawn inputs (noise off), worded; or ""."""
    for base, said in ((expected, ""), (own, OWN)):
        for relation, why in BOUND_MISTAKES:
            if base is None or not close(got, relation(base, n), 1e-6):
                continue
            for _ in range(2):
                seed, (gen, rec, data) = noise_off_inputs(rng, n)
                try:
                    value = float(as_array(f.seeded(seed, gen, rec, data), (), "a scalar"))
                except (SubmissionError, Failed):
                    return ""
                other = (own_bound(f, reference, seed, gen, rec, data).value if said else
                         reference_bound(reference, gen, rec, data, skeleton_randn(seed)))
                if other is None or not close(value, relation(other, n), 1e-6):
                    return ""
            return why + (f" (measured against {said}, on 3 inputs)" if said else "")
    return ""


# ---- batch normalisation in neural_net_predict -----------------------------------------

BATCH_NORM = ("neural_net_predict normalises over the batch (batch normalisation); "
              "the assignment's network has none")


def batch_normalised(params, inputs, eps, every_layer=False, std_plus_eps=False,
                     after_relu=False):
    """The reference network with each hidden layer normalised over axis 0 (the
    batch; the units of a 1-D input): (h - mean) / sqrt(var + eps), or / (std + eps),
    before or after its ReLU; the linear last layer too if every_layer."""
    def normalised(h):
        with np.errstate(all="ignore"):    # eps 0 and a batch of one: 0 / 0
            scale = h.std(axis=0) + eps if std_plus_eps else np.sqrt(h.var(axis=0) + eps)
            return (h - h.mean(axis=0)) / scale
    for W, b in params[:-1]:
        h = np.dot(inputs, W) + b
        inputs = normalised(np.maximum(h, 0.0)) if after_relu else np.maximum(normalised(h), 0.0)
    W, b = params[-1]
    return normalised(np.dot(inputs, W) + b) if every_layer else np.dot(inputs, W) + b


# The students' forms: both denominators, before or after the ReLU, with and
# without the last layer, at the usual eps.
BATCH_NORM_EPS = (0.0, 1e-8, 1e-5, 1e-3, 1e-2, 1e-1)
BATCH_NORMALISED = [partial(batch_normalised, eps=eps, every_layer=last, std_plus_eps=std,
                            after_relu=after)
                    for std, after, last, eps in product((False, True), (False, True),
                                                         (False, True), BATCH_NORM_EPS)
                    if eps or not (std or after)]   # std + 0 is sqrt(var + 0); after the
#                                                         ReLU, eps 0 makes a dead unit 0 / 0


def batch_form(got, predict):
    """Whether got matches predict(form) for one of the batch normalisations
    (rtol 1e-3), and the parts of its form that every matching one shares, in
    one phrase ("" if none): (matched, phrase)."""
    matching = [form.keywords for form in BATCH_NORMALISED if close(got, predict(form), 1e-3)]
    if not matching:
        return False, ""
    eps = max(k["eps"] for k in matching)
    eps_said = (f"eps = {eps:g}" if len({k["eps"] for k in matching}) == 1
                else f"eps at most {eps:g}")
    std = {k["std_plus_eps"] for k in matching}
    parts = [("(h - mean) / " + ("(std + eps)" if std == {True} else "sqrt(var + eps)"
                                 if std == {False} else "std") + f" over the batch, {eps_said}")]
    after = {k["after_relu"] for k in matching}
    if len(after) == 1:
        parts.append(("after" if after == {True} else "before") + " the ReLU of each hidden layer")
    last = {k["every_layer"] for k in matching}
    if len(last) == 1:
        parts.append("on the last layer too" if last == {True} else "not on the last layer")
    return True, ", ".join(parts)


def batch_dependence(f, gen, rng):
    """The largest relative change of the outputs of 3 images when the other
    images of the batch change (2, then 3 others), or None if it cannot be
    measured. An image's output depends on it alone: 0 but for rounding."""
    z = rng.standard_normal((8, LATENT))
    try:
        first, second = f(gen, z[:5]), f(gen, np.vstack([z[:3], z[5:]]))
    except SubmissionError:
        return None
    if not all(isinstance(v, np.ndarray) and v.shape[1:] == (PIXELS,) and len(v) in (5, 6)
               and np.all(np.isfinite(v)) for v in (first, second)):
        return None
    a, b = first[:3], second[:3]
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def batch_norm_diagnosis(f, gen, z, got, rng):
    """What the values of a neural_net_predict got on (gen, z) say of batch
    normalisation, or "" if its outputs do not depend on the batch."""
    dependence = batch_dependence(f, gen, rng)
    if dependence is None or dependence < 1e-9:
        return ""
    _, form = batch_form(got, lambda predict: predict(gen, z))
    return (f"the output for an image depends on the other images in the batch (the same 3 "
            f"images give outputs up to {dependence:.2g} apart, relatively, inside two "
            "different batches): neural_net_predict " + (
                f"normalises over the batch (batch normalisation), likely {form}; " if form
                else "normalises or mixes over the batch (batch normalisation?); ")
            + "the assignment's network has none: each image on its own, ReLU on every hidden "
              "layer and a linear last layer")


# ---- compute_KL ----------------------------------------------------------------------

# (name, its values as a function of (mean, log_std) per dimension, or a factor).
KL_PARTS = {
    "variance": [("", lambda m, s: np.exp(2 * s) - 2 * s),
                 ("log_std was used as log-variance (exp(log_std) and log_std where the KL has "
                  "exp(2 log_std) and 2 log_std)", lambda m, s: np.exp(s) - s)],
    "mean": [("", lambda m, s: m ** 2), ("mean ** 4 instead of mean ** 2", lambda m, s: m ** 4),
             ("mean instead of mean ** 2", lambda m, s: m)],
    "one": [("", -1.0), ("the - 1 term is missing", 0.0)],
    "half": [("", 0.5), ("the factor 1/2 is missing", 1.0)],
    "sign": [("", 1.0), ("the sign is flipped", -1.0)],
    "over": [("", np.sum), (f"a mean over the {LATENT} latent dimensions instead of a sum",
                            np.mean)],
}


def kl_variant(q, variance, mean, one, half, sign, over):
    m, s = q[:, :LATENT], q[:, LATENT:]
    return sign * half * over(variance(m, s) + mean(m, s) + one, axis=-1)


def kl_mistakes(pairs):
    """pairs: [(q, the student's KL of q)]. -> the fewest known mistakes whose
    combination explains every pair (rtol 1e-8), as a list of their names, or []."""
    best = None
    for choice in product(*KL_PARTS.values()):
        names = [name for name, _ in choice if name]
        if not names or (best is not None and len(names) >= len(best)):
            continue
        with np.errstate(all="ignore"):
            if all(close(got, kl_variant(q, *[value for _, value in choice]), 1e-8)
                   for q, got in pairs):
                best = names
    return best or []


def kl_cause(f, q, got, rng, known=()):
    """The combination of mistakes explaining the student's KL `got` of q and of
    two more drawn inputs (and `known` pairs), worded; or ""."""
    pairs = list(known) + [(q, got)]
    for _ in range(2):
        other = encoder_outputs(rng, 4)
        try:
            value = f(other)
        except SubmissionError:
            return ""
        if not isinstance(value, np.ndarray) or value.shape != (4,):
            return ""
        pairs.append((other, value.astype(float)))
    names = kl_mistakes(pairs)
    if not names:
        return ""
    said = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (f"looks like {said}" if len(names) == 1 else
            f"looks like {len(names)} mistakes together: {said}") + (
            f" (this explains its values on {len(pairs)} inputs)")


# ---- bernoulli_log_prob -----------------------------------------------------------------

def product_of_probabilities(f, reference, rng):
    """Whether the student's function returns prod p^x (1 - p)^(1 - x) over the
    pixels: at logits of +-30 agreeing with the targets on all but 5 pixels the
    product does not underflow (it lies between about 1e-6 and 1). -> a sentence
    with the values measured, or ""."""
    n, disagreeing = 4, 5
    x = binary_images(rng, n)
    logits = 30 * (2 * x - 1)
    for row in logits:
        row[rng.choice(PIXELS, disagreeing, replace=False)] = rng.uniform(-3, 3, disagreeing)
    try:
        got = f(x, logits)
    except SubmissionError:
        return ""
    expected = np.exp(reference.bernoulli_log_prob(x, logits))
    if isinstance(got, list):              # a list of numbers, as the checks accept
        try:
            got = np.array(got, dtype=float)
        except (TypeError, ValueError):
            return ""
    if not (isinstance(got, np.ndarray) and got.shape == (n,) and close(got, expected, 1e-6)):
        return ""
    return ("these are probabilities (a product over pixels), not log-probabilities: at logits "
            f"of +-30 that agree with the targets on all but {disagreeing} pixels it returns "
            f"{got[:2].round(4)} ..., which are prod p^x (1 - p)^(1 - x); over {PIXELS} pixels "
            "at moderate logits that product underflows to 0. Sum the logs instead: "
            "x log p + (1 - x) log(1 - p)")

