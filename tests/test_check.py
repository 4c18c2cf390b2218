"""check.py against deliberately wrong submissions, one mistake each: the
mistakes of the assignment's list and misbehaving files (endless loops,
crashes, training or writing at import, wrong signatures, stubs). Each file
is a plain, correct student solution with one change."""
import json
from pathlib import Path

import pytest

import check

STUDENT = (Path(__file__).parent / "student_vae.py").read_text()
GUARD = 'if __name__ == "__main__":\n'
UNGUARDED = STUDENT.replace(GUARD, "if True:  # no guard\n")

# name: (replacements (old, new), function, check, status, words in the message)
MISTAKES = {
    "log_std_as_log_variance_in_sampler": (
        [("mean + np.exp(log_std) * npr", "mean + np.exp(0.5 * log_std) * npr")],
        "sample_latent_variables_from_posterior", "mean and std of 20,000 samples", "fail",
        "log_std was used as log-variance"),
    "log_std_as_log_variance_in_kl": (
        [("np.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std", "np.exp(log_std) + mean ** 2 - 1 - log_std")],
        "compute_KL", "mean 1, log_std log 2: 2 - log 2 each", "fail", "log_std was used as log-variance"),
    "bound_sums_over_the_batch": (
        [("return np.mean(bernoulli_log_prob", "return np.sum(bernoulli_log_prob")],
        "vae_lower_bound", "mean over the batch", "fail", "sums over the batch"),
    "bound_negated": (
        [("np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
          "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))")],
        "vae_lower_bound", "value with the posterior noise off", "fail", "sign is flipped"),
    "kl_summed_into_one_scalar": (
        [("- 1 - 2 * log_std, axis=-1)", "- 1 - 2 * log_std)")],
        "compute_KL", "one value per image", "fail", "summed over the whole batch"),
    "extra_parameter_in_the_bound": (
        [("def vae_lower_bound(gen_params, rec_params, data):",
          "def vae_lower_bound(gen_params, rec_params, data, latent_dim=50):")],
        "vae_lower_bound", "signature (gen_params, rec_params, data)", "fail", "three arguments"),
    "global_from_main": (
        [("    D = encoder_output.shape[-1] // 2\n", "    D = latent_dim\n"),
         (GUARD, GUARD + "    latent_dim = 50\n")],
        "sample_latent_variables_from_posterior", "returns (N, L)", "error", "global variable"),
    "bernoulli_stub_returns_none": (
        [("    p = sigmoid(logits)\n    return np.sum(targets", "    pass\n\n\ndef _unused(targets, logits, p):\n    return np.sum(targets")],
        "bernoulli_log_prob", "values at moderate logits", "fail", "stub"),
    "kl_stub_returns_zero": (
        [("    return 0.5 * np.sum(np.exp(2", "    return 0.0\n    0.5 * np.sum(np.exp(2")],
        "compute_KL", "one value per image", "fail", "the scalar 0"),
    "plain_numpy_not_differentiable": (
        [("import autograd.numpy as np\n", "import numpy as np\n")],
        "vae_lower_bound", "gradient through autograd", "fail", "autograd.numpy"),
    "relu_on_the_last_layer": (
        [("    W, b = params[-1]\n    return np.dot(inputs, W) + b", "    W, b = params[-1]\n    return relu(np.dot(inputs, W) + b)")],
        "neural_net_predict", "values", "fail", "ReLU is applied to the last layer"),
    "endless_loop_in_a_function": (
        [("    D = q_means_and_log_stds.shape[-1] // 2\n", "    while True:\n        pass\n")],
        "compute_KL", "zero at the prior", "error", "did not finish"),
    "memory_hog": (
        [("    D = q_means_and_log_stds.shape[-1] // 2\n", "    np.ones(10 ** 11)\n")],
        "compute_KL", "values", "error", "MemoryError"),
}

# name: (source, module check message words)
MISBEHAVIOURS = {
    "trains_at_import": (UNGUARDED, "did not finish within"),
    "endless_loop_at_import": (STUDENT.replace(GUARD, "while True:\n    pass\n" + GUARD), "did not finish within"),
    "crash_at_import": (STUDENT.replace(GUARD, "raise RuntimeError('boom')\n" + GUARD), "RuntimeError: boom"),
    "exit_at_import": (STUDENT.replace(GUARD, "import sys\nsys.exit(3)\n" + GUARD), "SystemExit: 3"),
    "writes_at_import": (STUDENT.replace(GUARD, "open('figure.png', 'w').write('x')\n" + GUARD),
                         "wrote files: figure.png"),
}


def submission(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


def grade(path):
    return check.check_submission(path, timeout=60, import_timeout=5, memory_mb=2048,
                                  check_seconds=2)


def verdict(report, function, check_name):
    return next(r for r in report["results"] if (r["function"], r["check"]) == (function, check_name))


def test_the_reference_passes_every_check():
    report = grade(check.PROJECT / "vae.py")
    assert report["loaded"] == "full"
    assert {r["status"] for r in report["results"]} == {"pass"}
    assert len(report["results"]) == 1 + sum(len(checks) for checks in check.CHECKS.values())
    assert check.exit_code(report) == 0


def test_a_plain_correct_solution_passes_with_a_stability_warning(tmp_path):
    report = grade(submission(tmp_path, "student", STUDENT))
    statuses = {(r["function"], r["check"]): r["status"] for r in report["results"]}
    assert statuses.pop(("bernoulli_log_prob", "exact at logits +-1000")) == "warning"
    assert set(statuses.values()) == {"pass"}
    assert check.exit_code(report) == 0


@pytest.mark.parametrize("name", MISTAKES)
def test_each_mistake_gets_its_verdict_and_a_helpful_message(tmp_path, name):
    replacements, function, check_name, status, words = MISTAKES[name]
    source = STUDENT
    for old, new in replacements:
        assert source.count(old) == 1, old   # one place to change in the student file
        source = source.replace(old, new)
    report = grade(submission(tmp_path, name, source))
    result = verdict(report, function, check_name)
    assert result["status"] == status, result
    assert words in result["message"]
    assert check.exit_code(report) == 1


@pytest.mark.parametrize("name", MISBEHAVIOURS)
def test_a_misbehaving_import_fails_but_the_functions_are_still_graded(tmp_path, name):
    source, words = MISBEHAVIOURS[name]
    report = grade(submission(tmp_path, name, source))
    module = verdict(report, "(module)", "import has no side effects")
    assert module["status"] == "fail" and words in module["message"], module
    assert report["loaded"] == "definitions only"
    assert verdict(report, "vae_lower_bound", "gradient through autograd")["status"] == "pass"
    assert check.exit_code(report) == 1


def test_a_crash_inside_a_check_is_reported_and_the_checker_survives(tmp_path):
    source = STUDENT.replace("    return 0.5 * (np.tanh", "    import os\n    os._exit(7)\n    return 0.5 * (np.tanh")
    report = grade(submission(tmp_path, "dies", source))
    died = [r for r in report["results"] if "process died" in r["message"]]
    assert len(died) == 1 and died[0]["status"] == "error" and "exit code 7" in died[0]["message"]


def test_a_file_that_cannot_be_loaded_exits_with_2(tmp_path):
    report = grade(submission(tmp_path, "broken", "def f(:\n"))
    assert report["loaded"] is None and check.exit_code(report) == 2


def test_main_grades_a_folder_one_row_per_file_and_keeps_going(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    submission(folder, "a_good", STUDENT)
    submission(folder, "b_broken", "def f(:\n")
    submission(folder, "c_negated", STUDENT.replace("np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
                                                    "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))"))
    code = check.main([str(folder), "--import-timeout", "5", "--check-timeout", "2"])
    rows = capsys.readouterr().out.strip().splitlines()
    assert len(rows) == 3 and " 0 failed" in rows[0] and "NOT LOADED" in rows[1]
    assert " 2 failed" in rows[2]   # its value and its gradient
    assert code == 2


def test_json_output_has_the_same_content(tmp_path, capsys):
    path = submission(tmp_path, "negated", STUDENT.replace(
        "np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
        "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))"))
    assert check.main([str(path), "--json", "--import-timeout", "5"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["file"] == str(path)
    assert verdict(report, "vae_lower_bound", "value with the posterior noise off")["status"] == "fail"


def test_missing_path_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        check.main(["/no/such/file.py"])
    assert exit_.value.code == 2 and "no such file" in capsys.readouterr().err
