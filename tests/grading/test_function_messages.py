"""The messages of the function checks name the mistake a student made (issue
26, cases 3, 4, 5 and 7), and a bound's failure is said to follow from the
functions it calls only where the grader measured that it does: the bound
composed from the student's own functions gives the student's value, while
the reference's differs. Each fixture is the plain correct solution
(student_vae.py) with the mistake made by string replacement, graded in the
sandbox as check.py grades it."""
from pathlib import Path

import pytest

from graded import graded

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
OPTIONS = ["--import-timeout", "5", "--check-timeout", "5", "--memory", "2048",
           "--functions-only"]
BOUND = "vae_lower_bound"
VALUE = "value with the posterior noise off"
FOLLOWS = "this follows from"

KL_TERMS = "np.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std"
KL_LOG_VARIANCE = (KL_TERMS, "np.exp(log_std) + mean ** 2 - 1 - log_std")
LOG_LIKELIHOOD = "targets * np.log(p) + (1 - targets) * np.log(1 - p)"
NEGATED = ("np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
           "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))")
HIDDEN_LAYER = "        inputs = relu(np.dot(inputs, W) + b)\n"
SKELETON = [   # every TODO function a stub, the bound `return 0.0`
    ("    return mean + np.exp(log_std) * npr.randn(*mean.shape)",
     "    return None  # TODO\n    mean + np.exp(log_std) * npr.randn(*mean.shape)"),
    ("    p = sigmoid(logits)\n    return np.sum(targets",
     "    return None  # TODO\n    p = sigmoid(logits)\n    np.sum(targets"),
    ("    return 0.5 * np.sum(np.exp(2", "    return 0.0  # TODO\n    0.5 * np.sum(np.exp(2"),
    ("    q = neural_net_predict(rec_params, data)\n",
     "    return 0.0  # TODO\n    q = neural_net_predict(rec_params, data)\n")]


def grade(tmp_path, name, *replacements):
    source = STUDENT
    for old, new in replacements:
        assert source.count(old) == 1, old     # the replaced text is there, once
        source = source.replace(old, new)
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return {(r["function"], r["check"]): r for r in graded(path, OPTIONS)["results"]}


def bound_messages(results):
    return {check: r["message"] for (function, check), r in results.items() if function == BOUND}


# ---- case 3: a negated bound over wrong functions ----------------------------------

def test_a_negated_bound_over_wrong_functions_is_named_negated_not_their_knock_on(tmp_path):
    results = grade(tmp_path, "negated", NEGATED, KL_LOG_VARIANCE,
                    (LOG_LIKELIHOOD, "targets * np.log(p)"))
    assert results[("compute_KL", "values")]["status"] == "fail"
    assert results[("bernoulli_log_prob", "values at moderate logits")]["status"] == "fail"
    value = results[(BOUND, VALUE)]
    assert value["status"] == "fail"
    assert "the sign is flipped: it returns KL - log p(x|z), the bound is log p(x|z) - KL" \
        in value["message"]
    assert "measured against the bound composed from your own functions, on 3 inputs" \
        in value["message"]
    assert not any(FOLLOWS in message for message in bound_messages(results).values())


# ---- case 4: the signature, and the unfilled skeleton -------------------------------------

def test_a_parameter_without_default_is_blamed_on_the_signature_not_on_other_functions(
        tmp_path):
    results = grade(tmp_path, "extra_parameter", KL_LOG_VARIANCE,   # a failing KL beside it
                    ("def vae_lower_bound(gen_params, rec_params, data):",
                     "def vae_lower_bound(gen_params, rec_params, data, N):"))
    assert results[("compute_KL", "values")]["status"] == "fail"
    assert results[(BOUND, "signature (gen_params, rec_params, data)")]["status"] == "fail"
    for check in ("returns a scalar", VALUE, "mean over the batch",
                  "samples z (its value varies with the seed)", "gradient through autograd"):
        r = results[(BOUND, check)]
        assert r["status"] == "error", r
        assert ("missing 1 required positional argument: 'N'; the harness calls it as "
                "vae_lower_bound(gen_params, rec_params, data), and N has no default: give it "
                "a default or take it out (see the signature check)") in r["message"]
        assert FOLLOWS not in r["message"]


def test_the_unfilled_skeleton_s_bound_is_a_stub_with_no_knock_on_note(tmp_path):
    results = grade(tmp_path, "skeleton", *SKELETON)
    messages = bound_messages(results)
    assert results[(BOUND, VALUE)]["status"] == "fail"
    assert messages[VALUE].endswith(", got 0.0: is the function still a stub?")
    assert messages["samples z (its value varies with the seed)"] == (
        "the bound returns 0.0 for every seed: is the function still a stub?")
    assert messages["gradient through autograd"] == (
        "the gradient is zero everywhere: the value does not depend on the parameters "
        "(it is 0.0: is the function still a stub?)")
    assert not any(FOLLOWS in message for message in messages.values())


# ---- case 5: products of probabilities; two KL mistakes at once ---------------------------

@pytest.mark.parametrize("product", [
    "np.prod(p ** targets * (1 - p) ** (1 - targets), axis=-1)",
    # a list of one product per image, row by row, as a real student's file returns it
    "[np.prod(x * q + (1 - x) * (1 - q)) for x, q in zip(targets, p)]"])
def test_a_product_of_probabilities_is_named_by_a_call_where_it_does_not_underflow(tmp_path,
                                                                                   product):
    results = grade(tmp_path, "product", (f"np.sum({LOG_LIKELIHOOD}, axis=-1)", product))
    r = results[("bernoulli_log_prob", "values at moderate logits")]
    assert r["status"] == "fail" and "got [0. 0.] ..." in r["message"]
    assert ("these are probabilities (a product over pixels), not log-probabilities: at logits "
            "of +-30 that agree with the targets on all but 5 pixels it returns") in r["message"]
    assert "which are prod p^x (1 - p)^(1 - x); over 784 pixels at moderate logits that " \
           "product underflows to 0" in r["message"]


def test_every_mistake_of_a_kl_with_two_is_named(tmp_path):
    results = grade(tmp_path, "kl_two", (KL_TERMS, "np.exp(log_std) + mean ** 4 - 1 - log_std"))
    for check in ("mean 1, log_std log 2: 2 - log 2 each", "values"):
        r = results[("compute_KL", check)]
        assert r["status"] == "fail"
        assert ("looks like 2 mistakes together: log_std was used as log-variance (exp(log_std) "
                "and log_std where the KL has exp(2 log_std) and 2 log_std) and mean ** 4 "
                "instead of mean ** 2 (this explains its values on 3 inputs)") in r["message"]


def test_one_kl_mistake_is_named_alone(tmp_path):
    r = grade(tmp_path, "kl_log_variance", KL_LOG_VARIANCE)[("compute_KL", "values")]
    assert r["status"] == "fail" and "looks like log_std was used as log-variance" in r["message"]
    assert "mistakes together" not in r["message"] and "mean ** 4" not in r["message"]


# ---- case 7: batch normalisation in neural_net_predict -----------------------------------

BATCH_NORMS = {   # name: (the hidden layer, the form the message names)
    "std_plus_0.01_before_relu": (
        "        h = np.dot(inputs, W) + b\n"
        "        inputs = relu((h - np.mean(h, axis=0)) / (np.std(h, axis=0) + 0.01))\n",
        "likely (h - mean) / (std + eps) over the batch, eps = 0.01, before the ReLU of each "
        "hidden layer, not on the last layer"),
    "sqrt_var_after_relu": (
        "        h = relu(np.dot(inputs, W) + b)\n"
        "        inputs = (h - np.mean(h, axis=0)) / np.sqrt(np.var(h, axis=0) + 1e-5)\n",
        "after the ReLU of each hidden layer, not on the last layer"),
}


@pytest.mark.parametrize("name", BATCH_NORMS)
def test_batch_normalisation_is_recognised_by_its_dependence_on_the_batch(tmp_path, name):
    layer, form = BATCH_NORMS[name]
    results = grade(tmp_path, name, (HIDDEN_LAYER, layer))
    r = results[("neural_net_predict", "values")]
    assert r["status"] == "fail"
    assert r["message"].startswith("the output for an image depends on the other images in "
                                   "the batch (the same 3 images give outputs up to ")
    assert "neural_net_predict normalises over the batch (batch normalisation), " \
           in r["message"] and form in r["message"]
    assert "the assignment's network has none" in r["message"]
    # The bound calls it, and the composition of the student's functions shows it.
    assert results[(BOUND, VALUE)]["message"].endswith(
        "(this follows from neural_net_predict failing: fix neural_net_predict first)")


# ---- the knock-on note where it is right ----------------------------------------------

def test_a_correct_bound_over_a_wrong_kl_follows_from_the_kl(tmp_path):
    results = grade(tmp_path, "kl_wrong", KL_LOG_VARIANCE)
    note = " (this follows from compute_KL failing: fix compute_KL first)"
    for check in (VALUE, "gradient through autograd"):
        r = results[(BOUND, check)]
        assert r["status"] == "fail" and r["message"].endswith(note), r


def test_the_note_names_only_the_failing_functions_that_make_the_difference(tmp_path):
    # The sampler's mistake (log-variance) vanishes with the noise off (log_std -50).
    results = grade(tmp_path, "kl_and_sampler_wrong", KL_LOG_VARIANCE, (
        "mean + np.exp(log_std) * npr", "mean + np.exp(0.5 * log_std) * npr"))
    assert results[("sample_latent_variables_from_posterior",
                    "mean and std of 20,000 samples")]["status"] == "fail"
    assert results[(BOUND, VALUE)]["message"].endswith(
        " (this follows from compute_KL failing: fix compute_KL first)")


def test_an_error_from_a_stub_the_bound_calls_follows_from_the_stub(tmp_path):
    results = grade(tmp_path, "likelihood_stub", (
        "    p = sigmoid(logits)\n    return np.sum(targets",
        "    return None\n    p = sigmoid(logits)\n    np.sum(targets"))
    r = results[(BOUND, VALUE)]
    assert r["status"] == "error" and "NoneType" in r["message"]
    assert r["message"].endswith(
        " (this follows from bernoulli_log_prob failing: fix bernoulli_log_prob first)")


def test_the_honest_solution_gets_none_of_these_messages(tmp_path):
    results = grade(tmp_path, "student")
    statuses = {key: r["status"] for key, r in results.items()}
    assert statuses.pop(("bernoulli_log_prob", "exact at logits +-1000")) == "warning"
    assert set(statuses.values()) == {"pass"}
