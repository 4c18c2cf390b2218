"""The checks of check.py: each grades one property of one function of a
student's vae.py against the reference module, passed in as `reference`.

They run in the grading process; the student's function is a proxy `f` to
check.py's sandboxed worker, which only computes: f(*args), f.seeded(seed,
*args) (npr.seed(seed) first), f.call(*args, seed, errstate) -> Result(value,
warnings), f.bound_gradient(seed, gen_params, rec_params, data) (autograd's
gradient w.r.t. the flattened parameters), f.name, f.parameters, f.plain_numpy,
and f.sibling(name): the proxy of the same file's function `name` (a key of
CHECKS) within the same check's time, or None if the file has none (the
diagnoses call the student's other functions through it). Values come back
as None, arrays (0-d for scalars), lists or Unsupported; the student's
exceptions as SubmissionError; the proxy's timeouts and crashes
(BaseException) pass through every check. `rng`, drawn afresh for each file,
draws every input, so no answer can be precomputed. The dimensions are the
assignment's: submissions may hard-code them.

A check raises Failed(message, status, explained): explained=True where it
measured that the difference follows from the functions the graded one calls
(the bound composed from the student's own functions gives the student's
value); grading.knock_on then names those of them that fail, and only there.

Nothing here touches the global NumPy stream (--jobs grades files in
parallel threads): inputs and the reference's answers for a seed come from
grader/draws.py; verdicts are worded by grader/verdicts.py; the likely causes
that take more than one comparison (several inputs, the student's other
functions) are grader/diagnoses.py's.
"""
import numpy as np
from autograd import grad
from autograd.misc import flatten
from scipy import special

from grader.draws import (LATENT, PIXELS, binary_images, encoder_outputs, networks, new_seed,
                          noise_off_inputs, reference_bound, reference_init, reference_sample,
                          skeleton_randn)
from grader.diagnoses import (BATCH_NORM, BATCH_NORMALISED, batch_form,  # noqa: F401
                              batch_norm_diagnosis, bound_at, bound_mistake, explains_error,
                              contributing, kl_cause, own_bound, product_of_probabilities, repeats,
                              same_noise_for_every_image, value_follows)
from grader.verdicts import (Failed, SubmissionError, as_array, call_mismatch, close,
                             describe_error, described, likely_cause)

GRADED = ("sample_latent_variables_from_posterior", "bernoulli_log_prob", "compute_KL",
          "vae_lower_bound")


# ---- sample_latent_variables_from_posterior -------------------------------------

def check_sampler_shape(f, reference, rng):
    as_array(f(encoder_outputs(rng, 7)), (7, LATENT), "z")


def check_sampler_mean(f, reference, rng):
    q = encoder_outputs(rng, 5, log_std=-50.0)
    z = as_array(f(q), (5, LATENT), "z")
    # exp(-50) * eps is below 1e-20; 1e-8 still tells a mean from a sample.
    if not np.allclose(z, q[:, :LATENT], rtol=0, atol=1e-8):
        raise Failed("with log_std = -50 the samples should equal the mean (exp(-50) is "
                     f"2e-22); the largest difference was {np.max(np.abs(z - q[:, :LATENT])):.3g}. "
                     "Check that the first L columns are the mean and the noise is scaled "
                     "by exp(log_std)")


def standardised(z, q):
    """The noise the sampler used, eps = (z - mean) / exp(log_std): (N, L)."""
    return (z - q[:, :LATENT]) / np.exp(q[:, LATENT:])


def check_sampler_moments(f, reference, rng):
    # 20,000 draws per dimension: the sample mean has standard error std/141 and
    # the sample standard deviation std/200; 5 standard errors leave false alarms
    # below one in a million while log-variance (std sqrt(sigma)) is ~50 errors off
    # at log_std +-0.8, which the shuffled grid always includes.
    n, mean = 20000, rng.standard_normal(LATENT)
    log_std = rng.permutation(np.linspace(-0.8, 0.8, LATENT))
    q = encoder_outputs(rng, n, mean, log_std)
    z = as_array(f(q), (n, LATENT), "z")
    shared = same_noise_for_every_image(standardised(z, q))
    if shared:
        raise Failed(shared)
    std, sample_std = np.exp(log_std), z.std(axis=0, ddof=1)
    errors = np.abs(z.mean(axis=0) - mean) / (std / np.sqrt(n))
    if not np.all(errors < 5):
        raise Failed("the samples' mean is not the encoder's mean (off by up to "
                     f"{errors.max():.0f} standard errors)")
    if np.all(np.abs(sample_std - std) < 5 * std / np.sqrt(2 * n)):
        return
    hints = [(np.sqrt(std), "looks like log_std was used as log-variance: samples have "
                            "standard deviation sqrt(sigma) = exp(log_std / 2)"),
             (std ** 2, "samples have standard deviation sigma^2 = exp(2 log_std)"),
             (np.ones_like(std), "samples have standard deviation 1: the noise is not scaled")]
    raise Failed(f"expected standard deviations exp(log_std) (from {std.min():.3f} to "
                 f"{std.max():.3f}), got {sample_std.min():.3f} to {sample_std.max():.3f}: "
                 + (likely_cause(sample_std, hints, 0.03)
                    or "the noise is not scaled by exp(log_std)"))


# check_sampler_noise's false alarms on a correct sampler, per file: KS_ALARM_RATE
# for the normality test; for the correlations, CORRELATION_ERRORS standard errors
# (a two-sided normal tail of 2.0e-9) for each of 1,225 pairs of dimensions
# (2.4e-6) and 50 lag-1 correlations (1e-7). In all 3.5e-6, one file in 290,000.
KS_ALARM_RATE = 1e-6
CORRELATION_ERRORS = 6


def ks_normal(values):
    """Kolmogorov-Smirnov distance of values from N(0, 1) and its p-value from
    Kolmogorov's asymptotic distribution: scipy.stats.kstest(values, "norm",
    method="asymp") (tests/grading/test_checks.py compares them), without importing
    scipy.stats, which would add half a second to every grading run."""
    n = len(values)
    cdf = special.ndtr(np.sort(values))
    distance = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    return float(distance), float(special.kolmogorov(np.sqrt(n) * distance))


def check_sampler_noise(f, reference, rng):
    # Moments cannot tell N(0, 1) noise from other unit-variance noise, or
    # independent draws from shared ones: test eps = (z - mean) / exp(log_std)
    # of 5,000 images x 50 dimensions itself (a mean and log_std per entry).
    # 5,000 keep a wide margin (uniform noise is 8 times the KS limit away,
    # shared noise a correlation of 1 against a limit of 0.085) at a quarter
    # of the time of 20,000.
    n = 5000
    q = encoder_outputs(rng, n)
    z = as_array(f.seeded(new_seed(rng), q), (n, LATENT), "z")
    eps = standardised(z, q)
    if not np.all(np.isfinite(eps)):
        raise Failed(f"{np.sum(~np.isfinite(eps))} of {eps.size:,} samples are not finite")
    shared = same_noise_for_every_image(eps)
    if shared:
        raise Failed(shared)
    # Under independence each sample correlation is ~N(0, 1/n): standard error 0.014.
    bound = CORRELATION_ERRORS / np.sqrt(n)   # 0.085
    centred = eps - eps.mean(axis=0)
    # Consecutive images, dimension by dimension (lag-1 correlations).
    lag1 = np.sum(centred[:-1] * centred[1:], axis=0) / np.sum(centred ** 2, axis=0)
    if not np.all(np.abs(lag1) < bound):
        j = int(np.argmax(np.abs(lag1)))
        raise Failed(f"the noise of consecutive images is correlated (lag-1 correlation "
                     f"{lag1[j]:.2f} in dimension {j}; independent draws stay within "
                     f"+-{bound:.3f}): eps needs a fresh draw per image, npr.randn(N, L)")
    # Every pair of dimensions of one image.
    correlation = np.corrcoef(eps, rowvar=False)[np.triu_indices(LATENT, 1)]
    if not np.all(np.abs(correlation) < bound):
        worst = np.max(np.abs(correlation))
        raise Failed(f"the noise of the {LATENT} dimensions of an image is correlated "
                     f"(correlations up to {worst:.2f}; independent draws stay within "
                     f"+-{bound:.3f}): " + (
                         "one noise value per image shared by all its dimensions "
                         "(npr.randn(N, 1) broadcast?)" if worst > 0.99 else
                         "the dimensions do not get independent noise")
                     + "; eps needs a draw per image and dimension, npr.randn(N, L)")
    # All 250,000 values against N(0, 1), Kolmogorov-Smirnov, p from Kolmogorov's
    # asymptotic distribution (at this size within a fraction of a percent of the
    # exact one, which is far slower): the limit is a distance of 0.0054 (uniform
    # noise: 0.058).
    distance, p = ks_normal(eps.ravel())
    if p < KS_ALARM_RATE:
        uniform = np.max(np.abs(eps)) < np.sqrt(3) + 1e-9   # U(-a, a) of variance 1: a = sqrt(3)
        threshold = special.kolmogi(KS_ALARM_RATE) / np.sqrt(eps.size)
        raise Failed(f"the noise (z - mean) / exp(log_std) is not standard normal: the "
                     f"Kolmogorov-Smirnov distance of its {eps.size:,} values from N(0, 1) is "
                     f"{distance:.3f}, where normal noise stays within {threshold:.4f} in all "
                     "but one file in a million; " + (
                         "it all lies within +-sqrt(3) = +-1.732, as uniform noise scaled to "
                         "unit variance does (npr.rand?); " if uniform else "")
                     + "eps must be drawn with npr.randn(N, L)")


def check_sampler_stream(f, reference, rng):
    seed, q = new_seed(rng), encoder_outputs(rng, 6)
    expected = reference_sample(reference, q, skeleton_randn(seed))
    if not close(as_array(f.seeded(seed, q), expected.shape, "z"), expected, 1e-9):
        raise Failed("the samples are valid but not the skeleton's draws: eps should come "
                     "from one npr.randn(N, L) call on the global stream, so that a run "
                     "matches the reference run number for number", "warning")


# ---- bernoulli_log_prob ------------------------------------------------------

def check_bernoulli_values(f, reference, rng):
    # Moderate logits (|l| < 15): a naive but correct formula agrees with the
    # stable one to about 1e-12 relative, so rtol 1e-8 separates right from wrong.
    x, logits = binary_images(rng, 6), 3 * rng.standard_normal((6, PIXELS))
    got = as_array(f(x, logits), (6,), "one log-probability per image")
    expected = reference.bernoulli_log_prob(x, logits)
    if close(got, expected, 1e-8):
        return
    p = reference.sigmoid(logits)
    hints = [(-expected, "the sign is flipped"),
             (expected / PIXELS, "looks like a mean over pixels instead of a sum"),
             (np.sum(x * np.log(p), axis=1), "the (1 - x) log(1 - p) term is missing"),
             (np.sum(x * p + (1 - x) * (1 - p), axis=1),
              "the log is missing: these are probabilities, not log-probabilities"),
             (-np.sum(np.logaddexp(0, -x * logits), axis=1),
              "log sigmoid(x * l) is the formula for targets -1 and +1, but the targets are "
              "0 and 1 (so every 0 pixel gives log(0.5)); use 2x - 1, or x l - log(1 + e^l)")]
    cause = likely_cause(got, hints) or (np.all((got >= 0) & (got <= 1))
                                         and product_of_probabilities(f, reference, rng))
    raise Failed(f"expected {expected[:2].round(3)} ... (sum over pixels of log Bernoulli(x | "
                 f"sigmoid(l))), got {got[:2].round(3)} ...; {cause}".rstrip("; "))


def check_bernoulli_extremes(f, reference, rng):
    # Run only once the values are right. One pixel per call, so that one
    # non-finite term does not hide the others; the limits are x l - log(1 + e^l).
    x, logits = np.array([1.0, 1.0, 0.0, 0.0]), np.array([1e3, -1e3, 1e3, -1e3])
    expected = np.array([0.0, -1e3, -1e3, 0.0])
    got = np.array([as_array(f.call(x[None, [d]], logits[None, [d]], errstate="ignore").value,
                             (1,), "one log-probability per image")[0] for d in range(4)])
    if np.allclose(got, expected, rtol=1e-9, atol=1e-9):
        return
    said = (f"at x = [1, 1, 0, 0] and logits [1000, -1000, 1000, -1000] expected "
            f"[0, -1000, -1000, 0], got {got}: ")
    if np.allclose(got, [1.0, 0.0, 0.0, 1.0]):
        raise Failed(said + "the log is missing: these are probabilities, not log-probabilities")
    advice = "; x * l - logaddexp(0, l) is exact. Harmless at the logits of a normal run"
    if not np.all(np.isfinite(got)):
        raise Failed(said + "log(sigmoid(l)) underflows to log(0)" + advice, "warning")
    raise Failed(said + "finite but not exact (is p clipped away from 0 and 1?)" + advice,
                 "warning")


# ---- compute_KL ----------------------------------------------------------------

def check_kl_shape(f, reference, rng):
    got = f(encoder_outputs(rng, 5))
    if isinstance(got, np.ndarray) and got.shape == ():
        raise Failed(f"expected one KL per image, shape (5,), got {described(got)}: " + (
            "is the function still a stub?" if float(got) == 0 else
            "the KL was summed over the whole batch"))
    as_array(got, (5,), "one KL per image")


def check_kl_zero(f, reference, rng):
    got = as_array(f(np.zeros((3, 2 * LATENT))), (3,), "one KL per image")
    if not np.allclose(got, 0, atol=1e-12):
        raise Failed(f"KL(N(0, I) || N(0, I)) is 0, got {got}")


def check_kl_known_value(f, reference, rng):
    # Mean 1 and log_std log 2 in every dimension: 1/2 (4 + 1 - 1 - 2 log 2) = 2 - log 2 each.
    expected = LATENT * (2 - np.log(2))
    q = encoder_outputs(rng, 2, 1.0, np.log(2.0))
    got = as_array(f(q), (2,), "one KL per image")
    if close(got, expected, 1e-10):
        return
    hints = [(LATENT * 0.5 * (2 + 1 - 1 - np.log(2)),
              "looks like log_std was used as log-variance"),
             (-expected, "the sign is flipped")]
    # At mean 1 some mistakes (mean ** 4) do not show: name those of drawn inputs too.
    cause = kl_cause(f, q, got, rng) or likely_cause(got, hints)
    raise Failed(f"mean 1, log_std log 2 in {LATENT} dimensions: expected {LATENT} (2 - log 2) = "
                 f"{expected:.4f}, got {got[0]:.4f}; {cause}".rstrip("; "))


def check_kl_values(f, reference, rng):
    q = encoder_outputs(rng, 4)
    got, expected = as_array(f(q), (4,), "one KL per image"), reference.compute_KL(q)
    if not close(got, expected, 1e-10):
        cause = kl_cause(f, q, got, rng)
        raise Failed(f"expected {expected.round(4)}, got {got.round(4)} (closed form, "
                     "Kingma & Welling 2014, Appendix B)" + (f"; {cause}" if cause else ""))


# ---- vae_lower_bound -------------------------------------------------------------

def check_bound_signature(f, reference, rng):
    if len(f.parameters) != 3:
        raise Failed(f"expected exactly (gen_params, rec_params, data), got "
                     f"({', '.join(f.parameters)}): the harness calls it with three arguments")
    if list(f.parameters) != ["gen_params", "rec_params", "data"]:
        raise Failed(f"three parameters as expected, named ({', '.join(f.parameters)}) instead "
                     "of (gen_params, rec_params, data)", "warning")


def check_bound_scalar(f, reference, rng):
    seed, args = noise_off_inputs(rng, 4)
    got = bound_at(f, reference, seed, *args)
    if not (isinstance(got, np.ndarray) and got.shape == ()):
        per_image = isinstance(got, np.ndarray) and got.shape == (4,)
        raise Failed(f"expected a scalar (the mean over the batch), got {described(got)}"
                     + (": one value per image instead of their mean" if per_image else ""))


def check_bound_value(f, reference, rng):
    # Noise off, so both are deterministic; rtol 1e-8 as for the log-likelihood.
    # Batch normalisation is recognised by computing it, not by the ratio: over
    # 50 draws of these networks it gives 1.013 to 1.026 times the reference's
    # value in the hidden layers, 0.21 to 0.22 when the last layer is normalised too.
    seed, (gen, rec, data) = noise_off_inputs(rng, 4)
    got = float(as_array(bound_at(f, reference, seed, gen, rec, data), (), "a scalar"))
    expected = reference_bound(reference, gen, rec, data, skeleton_randn(seed))
    if close(got, expected, 1e-8):
        return
    said = f"with the posterior noise switched off expected {expected:.4f}, got "
    if got == 0:
        raise Failed(f"{said}0.0: is the function still a stub?")
    said += f"{got:.4f} ({got / expected:.3g} times as much)"
    own = own_bound(f, reference, seed, gen, rec, data).value
    with np.errstate(all="ignore"):
        normalised, form = batch_form(got, lambda predict: reference_bound(
            reference, gen, rec, data, skeleton_randn(seed), predict))
    cause = bound_mistake(f, reference, rng, got, expected, own, len(data)) or (
        f"{BATCH_NORM} (likely {form})" if normalised else "")
    raise Failed(f"{said}; {cause}".rstrip("; "), explained=own is not None and close(
        got, own, 1e-8) and (contributing(f, reference, seed, gen, rec, data, own) or True))


def check_bound_batch_mean(f, reference, rng):
    seed, (gen, rec, one) = noise_off_inputs(rng, 1)
    single = float(as_array(bound_at(f, reference, seed, gen, rec, one), (), "a scalar"))
    five = np.repeat(one, 5, axis=0)
    batch = float(as_array(bound_at(f, reference, seed, gen, rec, five), (), "a scalar"))
    if not close(batch, single, 1e-10):
        ratio = batch / single if single else float("nan")
        own = [own_bound(f, reference, seed, gen, rec, x).value for x in (one, five)]
        raise Failed(f"a batch of 5 copies of one image should give that image's bound "
                     f"{single:.4f}, got {batch:.4f} ({ratio:.2f} times): "
                     + ("it sums over the batch instead of averaging" if abs(ratio - 5) < 1e-6
                        else "it is not the mean over the batch"),
                     explained=None not in own and close([single, batch], own, 1e-8))


SPREAD_SEEDS = 6
SPREAD_RATIO = 1e-3   # the least spread of the student's values, over the reference's


def check_bound_samples(f, reference, rng):
    # One z ~ q(z|x) per image makes the bound vary with the seed: over 6 seeds
    # the reference's values have a standard deviation of 5 to 49 nats (median 23,
    # 300 draws of these networks). A correct student's is another such draw (or
    # the same, on the skeleton's stream): below SPREAD_RATIO of the reference's with
    # the probability that an F(5, 5) variable is below 1e-6, 5e-15.
    gen, rec = networks(rng)
    data = binary_images(rng, 4)
    seeds = [new_seed(rng) for _ in range(SPREAD_SEEDS)]
    got = np.array([float(as_array(bound_at(f, reference, seed, gen, rec, data), (), "a scalar"))
                    for seed in seeds])
    if not np.all(np.isfinite(got)):
        raise Failed(f"with the posterior noise on, the bound is not finite: {got}")
    expected = [reference_bound(reference, gen, rec, data, skeleton_randn(seed)) for seed in seeds]
    spread, reference_spread = np.std(got), np.std(expected)
    if spread >= SPREAD_RATIO * reference_spread:
        return
    if np.all(got == 0):
        raise Failed("the bound returns 0.0 for every seed: is the function still a stub?")
    own = [own_bound(f, reference, seed, gen, rec, data).value for seed in seeds]
    explained = None not in own and close(got, own, 1e-8)
    why = (": it does not sample z ~ q(z|x) (is z the mean?), or it draws the same noise on "
           "every call (a generator seeded inside the function?)")
    if explained:   # its functions do the same: the sampler, or knock_on names them
        repeated = repeats(f.sibling(GRADED[0]), rng, seeds)
        why = (f": {GRADED[0]} returns the same z for every seed (no noise, or a generator "
               "seeded inside the function?)" if repeated else "")
    if spread <= 1e-12 * np.max(np.abs(got)):   # rounding: BLAS sums depend on alignment
        raise Failed(f"the bound returns the same value for every seed ({got[0]:.4f} for "
                     f"{SPREAD_SEEDS} seeds, where the reference's values have a standard "
                     f"deviation of {reference_spread:.2f}){why}", explained=explained)
    raise Failed(f"the bound barely varies with the seed (standard deviation {spread:.2g} over "
                 f"{SPREAD_SEEDS} seeds, the reference's {reference_spread:.2f})" + why,
                 explained=explained)


USE_AUTOGRAD = ("use autograd.numpy (import autograd.numpy as np), not plain numpy, in every "
                "function the bound calls")
# Words of the errors that plain numpy raises on autograd's traced values.
AUTOGRAD_WORDS = ("ArrayBox", "Can't differentiate", "float() argument", "dtype=object",
                  "dtype('O')", "object array", "setting an array element with a sequence")


def check_bound_gradient(f, reference, rng):
    # Gradients through autograd with the noise off; rtol 1e-6 allows naive formulas.
    if f.plain_numpy:   # differentiating it makes object arrays: slow, then an error
        raise Failed("the file imports plain numpy and not autograd.numpy, so autograd cannot "
                     "differentiate the bound: " + USE_AUTOGRAD)
    seed, (gen, rec, data) = noise_off_inputs(rng, 3)
    try:
        got = f.bound_gradient(seed, gen, rec, data)
    except SubmissionError as e:
        if "item assignment" in e.message:
            raise Failed(f"autograd cannot differentiate it: {describe_error(e)}; autograd does "
                         "not support in-place assignment (x[i] = ...): build a new array, e.g. "
                         "with np.where or np.concatenate") from e
        if any(word in e.message for word in AUTOGRAD_WORDS):
            raise Failed(f"autograd cannot differentiate it: {describe_error(e)}; "
                         + USE_AUTOGRAD) from e
        raise Failed("calling it for the gradient " + describe_error(e, f), "error",
                     explained=not call_mismatch(e, f) and explains_error(
                         e, own_bound(f, reference, seed, gen, rec, data))) from e
    flat, unflatten = flatten((gen, rec))
    expected = grad(lambda p: reference_bound(reference, *unflatten(p), data,
                                              skeleton_randn(seed)))(flat)
    got = as_array(got, expected.shape, "a gradient")
    if np.allclose(got, expected, rtol=1e-6, atol=1e-9):
        return
    value, explained = value_follows(f, reference, seed, gen, rec, data)
    if not np.any(got):
        stub = value == 0
        raise Failed("the gradient is zero everywhere: the value does not depend on the "
                     "parameters" + (" (it is 0.0: is the function still a stub?)" if stub
                                     else ""), explained=explained)
    worst = np.argmax(np.abs(got - expected))
    raise Failed(f"the gradient differs from the reference's (largest difference at "
                 f"parameter {worst}: {got[worst]:.4g} instead of {expected[worst]:.4g})",
                 explained=explained)


def check_bound_stream(f, reference, rng):
    gen, rec = networks(rng)
    seed, data = new_seed(rng), binary_images(rng, 4)
    got = float(as_array(f.seeded(seed, gen, rec, data), (), "a scalar"))
    if not close(got, reference_bound(reference, gen, rec, data, skeleton_randn(seed)), 1e-9):
        raise Failed("with the posterior noise on, the value differs from the reference's "
                     "for the same seed: the sampler differs (see its checks) or the noise is "
                     "not drawn as one npr.randn(N, L) per call, as in the skeleton", "warning")


# ---- the optional functions --------------------------------------------------------

def check_sigmoid_values(f, reference, rng):
    x = rng.uniform(-20, 20, 41)
    if not close(as_array(f(x), (41,), "elementwise values"), reference.sigmoid(x), 1e-9):
        raise Failed("expected 1 / (1 + exp(-x)) elementwise")


def check_relu_values(f, reference, rng):
    x = rng.uniform(-2, 2, 20)
    if not close(as_array(f(x), (20,), "elementwise values"), np.maximum(0, x), 1e-12):
        raise Failed("expected max(0, x) elementwise")


def layer_shapes(params):
    """[(W shape, b shape), ...], or None if params is not a list of pairs of arrays."""
    if not isinstance(params, list) or not all(
            isinstance(layer, (list, tuple)) and len(layer) == 2
            and all(isinstance(p, np.ndarray) for p in layer) for layer in params):
        return None
    return [(W.shape, b.shape) for W, b in params]


def layer_sizes(rng):
    return [int(size) for size in rng.integers(2, 9, size=3)]


def check_init_shapes(f, reference, rng):
    sizes = layer_sizes(rng)
    got = f(sizes)
    m, n, k = sizes
    if layer_shapes(got) != [((m, n), (n,)), ((n, k), (k,))]:
        raise Failed(f"for layer sizes {sizes} expected [(W {(m, n)}, b {(n,)}), "
                     f"(W {(n, k)}, b {(k,)})], got {layer_shapes(got) or described(got)}")


def check_init_stream(f, reference, rng):
    seed, sizes = new_seed(rng), layer_sizes(rng)
    got, expected = f.seeded(seed, sizes), reference_init(skeleton_randn(seed), sizes)
    if layer_shapes(got) != layer_shapes(expected) or not all(
            np.allclose(a, b) for layer, ref in zip(got, expected) for a, b in zip(layer, ref)):
        raise Failed("valid shapes, but not the skeleton's draws (scale * npr.randn, W then b, "
                     "layer by layer, default scale 1e-2)", "warning")


def check_predict_values(f, reference, rng):
    gen, _ = networks(rng)
    z = rng.standard_normal((5, LATENT))
    expected = reference.neural_net_predict(gen, z)
    got = as_array(f(gen, z), expected.shape, "outputs")
    if close(got, expected, 1e-10):
        return
    hints = [(np.maximum(expected, 0),
              "ReLU is applied to the last layer too; it should be linear")]
    cause = likely_cause(got, hints, 1e-8) or batch_norm_diagnosis(f, gen, z, got, rng)
    raise Failed(cause or "expected ReLU on every hidden layer and a linear last layer, "
                          "np.dot(inputs, W) + b")


def check_predict_vector(f, reference, rng):
    gen, _ = networks(rng)
    z = rng.standard_normal(LATENT)
    try:
        got = f(gen, z)
    except SubmissionError as e:
        raise Failed(f"a 1-D input (D_in,) fails: {describe_error(e)}", "warning") from e
    if not isinstance(got, np.ndarray) or got.shape != (PIXELS,):
        raise Failed(f"a 1-D input ({LATENT},) should give ({PIXELS},), got {described(got)}",
                     "warning")
    expected = reference.neural_net_predict(gen, z)
    if close(got, expected, 1e-10):
        return
    # Batch normalisation over axis 0 normalises a 1-D input over its units,
    # and a batch of one to zero (leaving the last layer's bias).
    try:
        one = f(gen, z[None])
    except SubmissionError:
        one = None
    pairs = [(value, bn(gen, inputs)) for value, inputs in [(got, z), (one, z[None])]
             for bn in BATCH_NORMALISED]
    looks_normalised = any(isinstance(value, np.ndarray) and value.shape == bn.shape
                           and close(value, bn, 1e-3) for value, bn in pairs)
    raise Failed(f"a 1-D input gives the right shape, ({PIXELS},), but other values than the "
                 f"reference: expected {expected[:2].round(3)} ..., got {got[:2].round(3)} ..."
                 + ("; looks like batch normalisation (normalising over the batch)"
                    if looks_normalised else ""), "warning")


CHECKS = {
    "sample_latent_variables_from_posterior": [
        ("returns (N, L)", check_sampler_shape),
        ("returns the mean when log_std = -50", check_sampler_mean),
        ("mean and std of 20,000 samples", check_sampler_moments),
        ("noise N(0, I): normal and independent", check_sampler_noise),
        ("same draws as the skeleton", check_sampler_stream)],
    "bernoulli_log_prob": [
        ("values at moderate logits", check_bernoulli_values),
        ("exact at logits +-1000", check_bernoulli_extremes)],
    "compute_KL": [
        ("one value per image", check_kl_shape),
        ("zero at the prior", check_kl_zero),
        ("mean 1, log_std log 2: 2 - log 2 each", check_kl_known_value),
        ("values", check_kl_values)],
    "vae_lower_bound": [
        ("signature (gen_params, rec_params, data)", check_bound_signature),
        ("returns a scalar", check_bound_scalar),
        ("value with the posterior noise off", check_bound_value),
        ("mean over the batch", check_bound_batch_mean),
        ("samples z (its value varies with the seed)", check_bound_samples),
        ("gradient through autograd", check_bound_gradient),
        ("same draws as the skeleton", check_bound_stream)],
    "neural_net_predict": [
        ("values", check_predict_values), ("1-D input", check_predict_vector)],
    "init_net_params": [
        ("shapes", check_init_shapes), ("same draws as the skeleton", check_init_stream)],
    "sigmoid": [("values", check_sigmoid_values)],
    "relu": [("values", check_relu_values)],
}

# Run only when the function's earlier checks passed: whether a wrong function
# draws the skeleton's numbers, or is exact at extreme logits, means little;
# the noise of a sampler with the wrong mean or std is not N(0, I) for that reason.
AFTER_SUCCESS_ONLY = {check_sampler_noise, check_sampler_stream, check_bound_stream,
                      check_init_stream, check_bernoulli_extremes}
