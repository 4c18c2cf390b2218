"""checks.py in-process: each check through a local stand-in for check.py's
proxy (LocalProxy), on the plain student solution with one mistake at a
time. The sandbox itself (timeouts, crashes, memory) is test_check.py's."""
import copy
import inspect
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import autograd.numpy
import autograd.numpy.random as npr
import numpy as np
import pytest
from autograd import grad
from autograd.misc import flatten

import vae
from grader import checks, draws, protocol, verdicts
from grader.grading import knock_on
from test_check import MISTAKES

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
FILENAME = "submission.py"
NEGATED = ("np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
           "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))")
NORMALISED = "(h - np.mean(h, axis=0)) / np.sqrt(np.var(h, axis=0) + 1e-5)"
BATCH_NORM = {   # in the hidden layers; in every layer
    "hidden": [("        inputs = relu(np.dot(inputs, W) + b)\n",
                f"        h = np.dot(inputs, W) + b\n        inputs = relu({NORMALISED})\n")],
    "every": [("        inputs = relu(np.dot(inputs, W) + b)\n",
               f"        h = np.dot(inputs, W) + b\n        inputs = relu({NORMALISED})\n"),
              ("    W, b = params[-1]\n    return np.dot(inputs, W) + b",
               f"    W, b = params[-1]\n    h = np.dot(inputs, W) + b\n    return {NORMALISED}")]}
LOG_LIKELIHOOD = "targets * np.log(p) + (1 - targets) * np.log(1 - p)"
NO_LOG = (LOG_LIKELIHOOD, "targets * p + (1 - targets) * (1 - p)")
PLUS_MINUS_ONE = (LOG_LIKELIHOOD, "np.log(sigmoid(targets * logits))")
KL_LOG_VARIANCE = MISTAKES["log_std_as_log_variance_in_kl"][0][0]
# Checked by the sandbox, not by the checks: the worker's time and memory limits.
SANDBOX_MISTAKES = ("endless_loop_in_a_function", "memory_hog")


class LocalProxy:
    """check.py's proxy interface, called in this process."""

    def __init__(self, module, name):
        self.module, self.function, self.name = module, getattr(module, name), name
        self.parameters = list(inspect.signature(self.function).parameters)
        modules = [value for value in vars(module).values() if isinstance(value, types.ModuleType)]
        self.plain_numpy = (any(m is np for m in modules)
                            and not any(m is autograd.numpy for m in modules))
        self.filename = module.__file__
        self.lines = getattr(module, "SOURCE", None) or Path(module.__file__).read_text()
        self.lines = self.lines.splitlines()

    def __call__(self, *args):
        return self.call(*args).value

    def seeded(self, seed, *args):
        return self.call(*args, seed=seed).value

    def call(self, *args, seed=None, errstate=None):
        args = copy.deepcopy(args)     # as if sent to another process
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with np.errstate(all=errstate) if errstate else np.errstate():
                value = self.guarded(lambda: draw_or_call(seed, self.function, *args))
        return verdicts.Result(decoded(value), len(caught))

    def sibling(self, name):
        return type(self)(self.module, name) if callable(getattr(self.module, name, None)) \
            else None

    def bound_gradient(self, seed, gen_params, rec_params, data):
        flat, unflatten = flatten((gen_params, rec_params))
        objective = lambda p: draw_or_call(seed, self.function, *unflatten(p), data)  # noqa: E731
        return np.asarray(self.guarded(lambda: grad(objective)(flat)), float)

    def guarded(self, thunk):
        try:
            return thunk()
        except Exception as e:
            frames = [frame for frame in extract(e) if frame[0] == self.filename]
            line = frames[-1][1] if frames else None
            text = self.lines[line - 1].strip() if line else ""
            raise verdicts.SubmissionError(type(e).__name__, str(e), line, text) from None


def extract(error):
    tb, frames = error.__traceback__, []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def draw_or_call(seed, function, *args):
    if seed is not None:
        npr.seed(seed)
    return function(*args)


def decoded(value):
    """What comes back from the worker: None, float or int arrays, lists, or Unsupported."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [decoded(item) for item in value]
    numeric = isinstance(value, (int, float, np.generic, np.ndarray))
    if numeric and np.asarray(value).dtype.kind in "biuf":
        return np.array(value)
    return protocol.Unsupported(type(value).__name__)


def student(*replacements):
    """The student solution with each (old, new) made, as the module `submission`."""
    source = STUDENT
    for old, new in replacements:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    module = types.ModuleType("submission")
    module.__file__, module.SOURCE = FILENAME, source
    exec(compile(source, FILENAME, "exec"), module.__dict__)
    return module


def grade(module, seed=0, proxy=LocalProxy):
    """[{"function", "check", "status", "message"} (and "explained" where the check
    measured it)] as check.py's loop makes them."""
    rng, results = np.random.default_rng(seed), []
    for name, named_checks in checks.CHECKS.items():
        f, failed = proxy(module, name), False
        for check_name, check in named_checks:
            if failed and check in checks.AFTER_SUCCESS_ONLY:
                status, message = "skipped", ""
            else:
                status, message, explained = verdicts.judge(check, f, vae, rng)
            failed = failed or status in ("fail", "error")
            results.append({"function": name, "check": check_name, "status": status,
                            "message": message})
            if status != "skipped" and explained:
                results[-1]["explained"] = explained
    return results


def result(module, function, check_name, seed=0):
    check = dict(checks.CHECKS[function])[check_name]
    rng = np.random.default_rng(seed)
    return verdicts.run_check(check, LocalProxy(module, function), vae, rng)


def test_the_reference_passes_every_check():
    assert {r["status"] for r in grade(vae)} == {"pass"}


def test_the_plain_student_passes_but_for_the_documented_stability_warning():
    statuses = {(r["function"], r["check"]): (r["status"], r["message"]) for r in grade(student())}
    status, message = statuses.pop(("bernoulli_log_prob", "exact at logits +-1000"))
    assert status == "warning" and "underflows to log(0)" in message
    assert {status for status, _ in statuses.values()} == {"pass"}


@pytest.mark.parametrize("name", [name for name in MISTAKES if name not in SANDBOX_MISTAKES])
def test_each_mistake_gets_its_verdict_and_a_helpful_message(name):
    replacements, function, check_name, status, words = MISTAKES[name]
    got, message = result(student(*replacements), function, check_name)
    assert got == status and words in message, message


@pytest.mark.parametrize("layers", BATCH_NORM)
def test_batch_normalisation_in_the_network_is_named(layers):
    status, message = result(student(*BATCH_NORM[layers]), "neural_net_predict", "values")
    assert status == "fail" and "normalises over the batch (batch normalisation)" in message


@pytest.mark.parametrize("layers", BATCH_NORM)
def test_batch_normalisation_shows_in_the_1d_input_check_without_a_shape_complaint(layers):
    status, message = result(student(*BATCH_NORM[layers]), "neural_net_predict", "1-D input")
    assert status == "warning"
    assert "a 1-D input gives the right shape, (784,), but other values" in message
    assert "looks like batch normalisation" in message and "should give" not in message


@pytest.mark.parametrize("layers", BATCH_NORM)
def test_batch_normalisation_is_named_by_the_bound_value(layers):
    status, message = result(student(*BATCH_NORM[layers]), "vae_lower_bound",
                             "value with the posterior noise off")
    assert status == "fail" and "batch normalisation" in message, message


def test_a_negated_bound_is_recognised_from_its_ratio():
    status, message = result(student(NEGATED), "vae_lower_bound",
                             "value with the posterior noise off")
    assert status == "fail" and "(-1 times as much)" in message
    assert "the sign is flipped: it returns KL - log p(x|z)" in message


def test_a_required_extra_argument_is_reported_as_the_error_it_is():
    module = student(("def vae_lower_bound(gen_params, rec_params, data):",
                      "def vae_lower_bound(gen_params, rec_params, data, N):"))
    status, message = result(module, "vae_lower_bound", "gradient through autograd")
    assert status == "error" and message == (
        "calling it for the gradient raised TypeError: vae_lower_bound() missing "
        "1 required positional argument: 'N'; the harness calls it as vae_lower_bound("
        "gen_params, rec_params, data), and N has no default: give it a default or take it "
        "out (see the signature check)")


def test_an_error_inside_the_bound_is_reported_with_its_line_and_no_autograd_advice():
    module = student(("def vae_lower_bound(gen_params, rec_params, data):",
                      "def vae_lower_bound(gen_params, rec_params, data, N=None):"),
                     (NEGATED[0], "np.sum(bernoulli_log_prob(data, logits) - compute_KL(q)) / N"))
    status, message = result(module, "vae_lower_bound", "gradient through autograd")
    line = STUDENT.splitlines().index("    return " + NEGATED[0]) + 1
    assert status == "error" and "autograd.numpy" not in message
    assert message.startswith("calling it for the gradient raised TypeError: unsupported operand")
    assert message.endswith(f"at line {line}: `return np.sum(bernoulli_log_prob(data, logits) "
                            "- compute_KL(q)) / N`")


def test_a_global_variable_in_the_bound_gets_the_global_variable_advice():
    module = student((NEGATED[0], NEGATED[0] + " * scale"))
    status, message = result(module, "vae_lower_bound", "gradient through autograd")
    assert status == "error" and "NameError: name 'scale' is not defined" in message
    assert "global variable" in message and "autograd.numpy" not in message


PLAIN_NUMPY_INSIDE = {   # numpy imported as onp beside autograd.numpy, used on traced values
    "ufunc": ("np.log(1 - p)", "onp.log(onp.clip(1 - p, 1e-300, 1))"),
    "asarray": ("p = sigmoid(logits)", "p = onp.asarray(sigmoid(logits), dtype=float)")}


@pytest.mark.parametrize("use", PLAIN_NUMPY_INSIDE)
def test_plain_numpy_on_traced_values_gets_the_autograd_advice(use):
    module = student(("import autograd.numpy as np\n", "import autograd.numpy as np\n"
                      "import numpy as onp\n"), PLAIN_NUMPY_INSIDE[use])
    status, message = result(module, "vae_lower_bound", "gradient through autograd")
    assert status == "fail" and message.startswith("autograd cannot differentiate it: raised")
    assert "use autograd.numpy" in message


def test_in_place_assignment_in_the_bound_gets_its_own_advice():
    module = student(("    z = sample_latent_variables_from_posterior(q)\n",
                      "    z = sample_latent_variables_from_posterior(q)\n    z[0] = z[0]\n"))
    status, message = result(module, "vae_lower_bound", "gradient through autograd")
    assert status == "fail" and "in-place assignment" in message and "plain numpy" not in message


def test_a_missing_log_in_the_likelihood_is_named():
    status, message = result(student(NO_LOG), "bernoulli_log_prob", "values at moderate logits")
    assert status == "fail" and "the log is missing: these are probabilities" in message


def test_plus_minus_one_targets_are_named():
    status, message = result(student(PLUS_MINUS_ONE), "bernoulli_log_prob",
                             "values at moderate logits")
    assert status == "fail" and "targets -1 and +1" in message and "log(0.5)" in message


def test_the_extremes_check_runs_only_after_the_values_are_right():
    statuses = {(r["function"], r["check"]): r["status"] for r in grade(student(NO_LOG))}
    assert statuses[("bernoulli_log_prob", "exact at logits +-1000")] == "skipped"


def test_a_missing_log_is_named_at_extreme_logits_too():
    status, message = result(student(NO_LOG), "bernoulli_log_prob", "exact at logits +-1000")
    assert status == "fail" and "the log is missing" in message


def test_a_student_error_is_described_by_its_line():
    error = verdicts.SubmissionError("ValueError", "shapes (5,40) and (784,40) not aligned", 17,
                                   "return np.dot(inputs, W) + b")
    assert verdicts.describe_error(error) == ("raised ValueError: shapes (5,40) and (784,40) not "
                                            "aligned at line 17: `return np.dot(inputs, W) + b`")


def test_an_error_outside_the_submission_has_no_line():
    error = verdicts.SubmissionError("TypeError", "f() missing 1 required positional argument: 'N'")
    assert "at line" not in verdicts.describe_error(error)


def test_an_error_in_a_check_names_the_student_line():
    module = student(("    W, b = params[-1]\n    return np.dot(inputs, W) + b",
                      "    W, b = params[-1]\n    return np.dot(inputs, W.T) + b"))
    status, message = result(module, "neural_net_predict", "values")
    line = STUDENT.splitlines().index("    return np.dot(inputs, W) + b") + 1
    assert status == "error"
    assert message.startswith("raised ValueError: shapes (5,40) and (784,40) not aligned")
    assert message.endswith(f"at line {line}: `return np.dot(inputs, W.T) + b`")


def test_an_unsupported_return_value_is_named_by_its_type():
    module = student(("    return 0.5 * np.sum(np.exp(2",
                      "    return 'KL'\n    0.5 * np.sum(np.exp(2"))
    status, message = result(module, "compute_KL", "values")
    assert status == "fail" and "got an object of type str" in message


def test_knock_on_names_the_failing_component_in_the_bound_failures():
    results = knock_on(grade(student(KL_LOG_VARIANCE)))
    bound = {r["check"]: r for r in results if r["function"] == "vae_lower_bound"}
    assert bound["value with the posterior noise off"]["message"].endswith(
        " (this follows from compute_KL failing: fix compute_KL first)")


def test_knock_on_leaves_the_signature_alone():
    results = [{"function": "compute_KL", "check": "values", "status": "error", "message": "x"},
               {"function": "vae_lower_bound", "check": "signature (gen_params, rec_params, data)",
                "status": "fail", "message": "y"}]
    assert knock_on(results) == results


class Recorder:
    """A proxy that records the arguments of every call."""

    def __init__(self, f):
        self.f, self.calls = f, []
        self.name, self.parameters, self.plain_numpy = f.name, f.parameters, f.plain_numpy

    def __call__(self, *args):
        self.calls.append(args)
        return self.f(*args)

    def seeded(self, seed, *args):
        self.calls.append((seed,) + args)
        return self.f.seeded(seed, *args)

    def call(self, *args, **options):
        self.calls.append(args)
        return self.f.call(*args, **options)

    def bound_gradient(self, *args):
        self.calls.append(args)
        return self.f.bound_gradient(*args)


# Closed forms need their constants: the prior, mean 1 and log_std log 2, logits +-1000.
CONSTANT_INPUTS = {checks.check_kl_zero, checks.check_kl_known_value,
                   checks.check_bernoulli_extremes, checks.check_bound_signature}


@pytest.mark.parametrize("function, check", [
    (function, check) for function, named in checks.CHECKS.items() for _, check in named
    if check not in CONSTANT_INPUTS], ids=lambda value: getattr(value, "__name__", value))
def test_each_file_gets_fresh_inputs(function, check):
    calls = []
    for seed in (1, 2):
        f = Recorder(LocalProxy(vae, function))
        assert verdicts.run_check(check, f, vae, np.random.default_rng(seed)) == ("pass", "")
        calls.append(f.calls)
    assert len(calls[0]) == len(calls[1]) > 0
    for first, second in zip(*calls):   # every argument of every call, seeds included
        for a, b in zip(first, second):
            a, b = numbers(a), numbers(b)
            assert a.shape != b.shape or not np.array_equal(a, b)


def numbers(value):
    """Every number in nested lists and tuples of arrays and numbers, as one vector."""
    if isinstance(value, (list, tuple)):
        return np.concatenate([numbers(item) for item in value] or [np.zeros(0)])
    return np.ravel(np.asarray(value, dtype=float))


def test_timeouts_and_crashes_of_the_proxy_pass_through():
    class Timeout(BaseException):
        pass

    class Stuck(LocalProxy):
        def call(self, *args, **options):
            raise Timeout()

    with pytest.raises(Timeout):
        verdicts.run_check(checks.check_kl_values, Stuck(vae, "compute_KL"), vae,
                         np.random.default_rng(0))


# ---- The reference's answers from a private stream, bit for bit -------------------
# The checks compose the reference's contract functions with noise from a private
# RandomState(seed) instead of seeding the global stream. If vae.py changed how
# it draws, these would fail before a verdict did.

SEEDS = (0, 1, 4321, 2 ** 31 - 1)


def after_seeding(seed, function, *args, **options):
    """function(*args, **options) right after npr.seed(seed), as the worker calls it."""
    npr.seed(seed)
    return function(*args, **options)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, latent", [(1, 1), (6, 50), (200, 3)])
def test_the_private_sampler_draws_the_reference_s_samples_bit_for_bit(seed, n, latent):
    q = np.random.default_rng(seed).standard_normal((n, 2 * latent))
    expected = after_seeding(seed, vae.sample_latent_variables_from_posterior, q)
    assert np.array_equal(draws.reference_sample(vae, q, draws.skeleton_randn(seed)), expected)


def bound_inputs(seed, n, noise_off):
    rng = np.random.default_rng(seed)
    gen, rec = draws.networks(rng, noise_off)
    return gen, rec, draws.binary_images(rng, n)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, noise_off", [(1, False), (4, False), (4, True)])
def test_the_private_bound_is_the_reference_s_bit_for_bit(seed, n, noise_off):
    gen, rec, data = bound_inputs(seed, n, noise_off)
    expected = after_seeding(seed, vae.vae_lower_bound, gen, rec, data)
    got = draws.reference_bound(vae, gen, rec, data, draws.skeleton_randn(seed))
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("noise_off", [False, True])
def test_the_private_bound_s_gradient_is_the_reference_s_bit_for_bit(seed, noise_off):
    gen, rec, data = bound_inputs(seed, 3, noise_off)
    flat, unflatten = flatten((gen, rec))
    expected = grad(lambda p: after_seeding(seed, vae.vae_lower_bound, *unflatten(p), data))(flat)
    got = grad(lambda p: draws.reference_bound(vae, *unflatten(p), data,
                                                draws.skeleton_randn(seed)))(flat)
    assert np.any(got != 0) and np.array_equal(got, expected)


@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("predict", checks.BATCH_NORMALISED,
                         ids=lambda p: f"eps={p.keywords['eps']},last={p.keywords['every_layer']}")
def test_the_private_bound_with_another_network_is_the_reference_s_with_it(
        seed, predict, monkeypatch):
    # Noise on: with it off, the encoder's constant log_std column normalises to
    # 0 / 0 at eps 0, and NaN equals nothing.
    gen, rec, data = bound_inputs(seed, 4, noise_off=False)
    monkeypatch.setattr(vae, "neural_net_predict", predict)   # vae_lower_bound looks it up
    with np.errstate(all="ignore"):
        expected = after_seeding(seed, vae.vae_lower_bound, gen, rec, data)
        got = draws.reference_bound(vae, gen, rec, data, draws.skeleton_randn(seed), predict)
    assert np.isfinite(expected) and np.array_equal(got, expected)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("sizes, options", [([3, 5, 2], {}), ([50, 40, 784], {}),
                                            ([4, 4], {"scale": 0.3})])
def test_the_private_init_draws_the_reference_s_parameters_bit_for_bit(seed, sizes, options):
    expected = after_seeding(seed, vae.init_net_params, sizes, **options)
    got = draws.reference_init(draws.skeleton_randn(seed), sizes, **options)
    assert len(got) == len(expected) == len(sizes) - 1
    for (W, b), (W_expected, b_expected) in zip(got, expected):
        assert np.array_equal(W, W_expected) and np.array_equal(b, b_expected)


@contextmanager
def global_stream_kept():
    state = npr.get_state()
    try:
        yield
    finally:
        npr.set_state(state)


class OwnProcess(LocalProxy):
    """LocalProxy whose calls leave the global stream as they found it, as the
    worker does: it seeds and draws from the stream of a process of its own."""

    def call(self, *args, **options):
        with global_stream_kept():
            return super().call(*args, **options)

    def bound_gradient(self, *args):
        with global_stream_kept():
            return super().bound_gradient(*args)


def global_stream():
    """The global stream's state, comparable with ==."""
    _, key, pos, has_gauss, gauss = npr.get_state()
    return key.tolist(), pos, has_gauss, gauss


@pytest.mark.parametrize("graded", ["reference", "student", "batch_norm"])
def test_the_checks_neither_draw_from_nor_reseed_the_global_stream(graded):
    # check.py grades files in parallel threads, which share the global stream;
    # batch normalisation takes the hints' path through the bound's checks too.
    module = {"reference": lambda: vae, "student": student,
              "batch_norm": lambda: student(*BATCH_NORM["hidden"])}[graded]()
    npr.seed(2024)
    npr.randn()   # a cached second normal is part of the state too
    before = global_stream()
    statuses = {r["status"] for r in grade(module, proxy=OwnProcess)}
    assert global_stream() == before
    assert "error" not in statuses and (statuses == {"pass"}) == (graded == "reference")


# ---- The sampler's noise and the bound's sampling -------------------------------------

SAMPLER, BOUND = "sample_latent_variables_from_posterior", "vae_lower_bound"
MOMENTS, NOISE = "mean and std of 20,000 samples", "noise N(0, I): normal and independent"
SAMPLES = "samples z (its value varies with the seed)"
EPS = "npr.randn(*mean.shape)"          # the student's noise, to replace
Z = "    z = sample_latent_variables_from_posterior(q)\n"
OTHER_GENERATOR = [   # correct, but not the skeleton's stream
    (EPS, "GENERATOR.standard_normal(mean.shape)"),
    ("def sample_latent_variables_from_posterior(encoder_output):\n",
     "GENERATOR = np.random.default_rng(7)\n\n\n"
     "def sample_latent_variables_from_posterior(encoder_output):\n")]


def test_a_sampler_drawing_from_another_generator_passes_all_but_the_stream_checks():
    statuses = {(r["function"], r["check"]): r["status"] for r in grade(student(*OTHER_GENERATOR))}
    warned = {key for key, status in statuses.items() if status != "pass"}
    assert warned == {(SAMPLER, "same draws as the skeleton"),
                      (BOUND, "same draws as the skeleton"),
                      ("bernoulli_log_prob", "exact at logits +-1000")}
    assert {statuses[key] for key in warned} == {"warning"}
    assert statuses[(SAMPLER, NOISE)] == statuses[(BOUND, SAMPLES)] == "pass"


@pytest.mark.parametrize("name", ["uniform_noise_in_the_sampler", "one_noise_value_per_image"])
def test_noise_of_unit_variance_that_is_not_n_0_i_passes_the_moments_not_the_noise_check(name):
    module = student(*MISTAKES[name][0])
    assert result(module, SAMPLER, MOMENTS) == ("pass", "")
    assert result(module, SAMPLER, NOISE)[0] == "fail"


FORGED_NOISE = {   # name: (the student's eps replaced, words of the noise check's message)
    "repeated for pairs of images": (
        "np.repeat(npr.randn((len(mean) + 1) // 2, mean.shape[1]), 2, axis=0)[:len(mean)]",
        "the noise of consecutive images is correlated (lag-1 correlation 0.5"),
    "half shared by the dimensions": (   # correlation 1/2 between any two dimensions
        "(npr.randn(*mean.shape) + npr.randn(len(mean), 1)) / np.sqrt(2)",
        "the dimensions do not get independent noise"),
    "one row for all images": ("npr.randn(1, mean.shape[1])", "one noise row shared by all images")}


@pytest.mark.parametrize("name", FORGED_NOISE)
def test_forged_noise_fails_the_noise_check_with_its_mistake_named(name):
    eps, words = FORGED_NOISE[name]
    status, message = result(student((EPS, eps)), SAMPLER, NOISE)
    assert status == "fail" and words in message, message


def test_a_sampler_that_adds_no_noise_is_named():
    module = student(("mean + np.exp(log_std) * " + EPS, "mean"))
    assert result(module, SAMPLER, MOMENTS) == (
        "fail", "the samples equal the mean: no noise is added (z = mean + exp(log_std) * eps)")


def test_the_noise_check_runs_only_after_the_mean_and_std_are_right():
    results = grade(student(*MISTAKES["log_std_as_log_variance_in_sampler"][0]))
    statuses = {(r["function"], r["check"]): r["status"] for r in results}
    assert statuses[(SAMPLER, MOMENTS)] == "fail" and statuses[(SAMPLER, NOISE)] == "skipped"


def test_a_bound_at_the_posterior_mean_passes_with_the_noise_off_and_fails_sampling():
    results = grade(student(*MISTAKES["bound_at_the_posterior_mean"][0]))
    bound = {r["check"]: r["status"] for r in results if r["function"] == BOUND}
    assert bound["value with the posterior noise off"] == "pass"
    assert bound["gradient through autograd"] == "pass"
    assert bound[SAMPLES] == "fail" and bound["same draws as the skeleton"] == "skipped"


def test_noise_from_a_generator_seeded_on_every_call_fails_the_bound_s_sampling_check():
    status, message = result(student((EPS, "np.random.RandomState(0).randn(*mean.shape)")),
                             BOUND, SAMPLES)
    assert status == "fail" and "the same value for every seed" in message
    assert "a generator seeded inside the function" in message


def test_a_bound_with_nearly_no_noise_barely_varies():
    module = student((Z, "    L = q.shape[1] // 2\n"
                          "    z = q[:, :L] + 1e-7 * npr.randn(len(q), L)\n"))
    status, message = result(module, BOUND, SAMPLES)
    assert status == "fail" and message.startswith("the bound barely varies with the seed")


@pytest.mark.parametrize("shift", [0.0, 0.003, 0.05])
def test_the_ks_test_of_the_noise_is_scipy_s(shift):
    from scipy import stats
    values = np.random.RandomState(3).randn(100000) + shift
    distance, p = checks.ks_normal(values)
    expected = stats.kstest(values, "norm", method="asymp")
    assert np.isclose(distance, expected.statistic, rtol=1e-12)
    assert np.isclose(p, expected.pvalue, rtol=1e-9, atol=1e-300)
