"""check.py end to end: deliberately wrong submissions, one mistake each (the
assignment's list), misbehaving files (endless loops, crashes, training or
writing at import), and hostile ones (forging verdicts, reading or writing
the grader's files, leaving processes behind, flooding the output). Each
file is the plain, correct student solution of student_vae.py with one
change. Tests that need bubblewrap are skipped where it is not installed."""
import json
import os
import shutil
import tracemalloc
from pathlib import Path

import pytest

import check
from graded import graded
from grader import checks

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
GUARD = 'if __name__ == "__main__":\n'
UNGUARDED = STUDENT.replace(GUARD, "if True:  # no guard\n")

# name: (replacements (old, new), function, check, status, words in the message)
MISTAKES = {
    "log_std_as_log_variance_in_sampler": (
        [("mean + np.exp(log_std) * npr", "mean + np.exp(0.5 * log_std) * npr")],
        "sample_latent_variables_from_posterior", "mean and std of 20,000 samples", "fail",
        "log_std was used as log-variance"),
    "uniform_noise_in_the_sampler": (   # unit variance: the mean and std are right
        [("npr.randn(*mean.shape)", "(npr.rand(*mean.shape) - 0.5) * np.sqrt(12)")],
        "sample_latent_variables_from_posterior", "noise N(0, I): normal and independent", "fail",
        "as uniform noise scaled to unit variance does"),
    "one_noise_value_per_image": (      # shared by its dimensions: each is N(0, 1) alone
        [("npr.randn(*mean.shape)", "npr.randn(mean.shape[0], 1)")],
        "sample_latent_variables_from_posterior", "noise N(0, I): normal and independent", "fail",
        "one noise value per image shared by all its dimensions"),
    "one_noise_row_for_all_images": (
        [("npr.randn(*mean.shape)", "npr.randn(1, mean.shape[1])")],
        "sample_latent_variables_from_posterior", "mean and std of 20,000 samples", "fail",
        "one noise row shared by all images"),
    "bound_at_the_posterior_mean": (    # right with the noise off
        [("    z = sample_latent_variables_from_posterior(q)\n", "    z = q[:, :q.shape[1] // 2]\n")],
        "vae_lower_bound", "samples z (its value varies with the seed)", "fail",
        "the bound returns the same value for every seed"),
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
        "compute_KL", "one value per image", "error", "did not finish"),
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


def submission(folder, name, source):
    path = folder / f"{name}.py"
    path.write_text(source) if isinstance(source, str) else path.write_bytes(source)
    return path


OPTIONS = ["--import-timeout", "5", "--check-timeout", "5", "--memory", "2048",
           "--functions-only"]    # the script part: test_check_script.py
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed")


def grade(path, *extra):
    return graded(path, [*OPTIONS, *extra])


def verdict(report, function, check_name):
    return next(r for r in report["results"] if (r["function"], r["check"]) == (function, check_name))


def statuses(report):
    return {(r["function"], r["check"]): r["status"] for r in report["results"]}


# ---------------------------------------------------------------- honest submissions

@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_the_reference_passes_every_check(sandbox):
    report = grade(check.PROJECT / "vae.py", "--sandbox", sandbox)
    assert report["loaded"] == "full" and report["verdict"] == "pass"
    assert {r["status"] for r in report["results"]} == {"pass"}
    assert len(report["results"]) == 1 + sum(len(c) for c in checks.CHECKS.values())


def test_a_plain_correct_solution_passes_with_a_stability_warning(tmp_path):
    report = grade(submission(tmp_path, "student", STUDENT))
    found = statuses(report)
    assert found.pop(("bernoulli_log_prob", "exact at logits +-1000")) == "warning"
    assert set(found.values()) == {"pass"} and report["verdict"] == "pass"


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
    assert report["verdict"] == "fail"


@pytest.mark.parametrize("name", MISBEHAVIOURS)
def test_a_misbehaving_import_fails_but_the_functions_are_still_graded(tmp_path, name):
    source, words = MISBEHAVIOURS[name]
    report = grade(submission(tmp_path, name, source))
    module = verdict(report, "(module)", "import has no side effects")
    assert module["status"] == "fail" and words in module["message"], module
    assert report["loaded"] == "definitions only"
    assert verdict(report, "vae_lower_bound", "gradient through autograd")["status"] == "pass"


def test_a_crash_inside_a_check_fails_it_and_the_grader_goes_on(tmp_path):
    source = STUDENT.replace("    return 0.5 * (np.tanh", "    import os\n    os._exit(7)\n    return 0.5 * (np.tanh")
    report = grade(submission(tmp_path, "dies", source))
    died = [r for r in report["results"] if "process died" in r["message"]]
    assert {r["function"] for r in died} == {"bernoulli_log_prob", "vae_lower_bound", "sigmoid"}
    assert all(r["status"] == "error" and "exit code 7" in r["message"] for r in died)
    assert verdict(report, "relu", "values")["status"] == "pass"     # graded after the crash


def test_a_timed_out_check_skips_the_rest_of_its_function_only(tmp_path):
    source = STUDENT.replace("    D = q_means_and_log_stds.shape[-1] // 2\n", "    while True:\n        pass\n")
    report = grade(submission(tmp_path, "loops", source), "--check-timeout", "2")
    kl = [r for r in report["results"] if r["function"] == "compute_KL"]
    assert kl[0]["status"] == "error" and "did not finish within 2 s" in kl[0]["message"]
    assert {r["status"] for r in kl[1:]} == {"skipped"}
    for function in ("neural_net_predict", "init_net_params", "sigmoid", "relu"):
        assert {r["status"] for r in report["results"] if r["function"] == function} == {"pass"}


# ---------------------------------------------------------------- files that are not Python

def test_a_syntax_error_names_the_line_and_the_file(tmp_path):
    report = grade(submission(tmp_path, "broken", "import numpy\n\ndef f(:\n    pass\n"))
    message = verdict(report, "(module)", "load")["message"]
    assert message.startswith("syntax error at line 3 of broken.py") and "__main__" not in message
    assert report["loaded"] is None and report["verdict"] == "error"


def test_a_binary_file_is_not_a_python_text_file(tmp_path):
    report = grade(submission(tmp_path, "binary", bytes(range(256)) * 4))
    message = verdict(report, "(module)", "load")["message"]
    assert "binary.py is not a Python text file" in message and "Decode" not in message


def test_too_little_memory_is_the_grader_s_problem_not_the_student_s(tmp_path):
    report = grade(submission(tmp_path, "student", STUDENT), "--memory", "60")
    message = verdict(report, "(grader)", "start")["message"]
    assert "raise --memory" in message and report["verdict"] == "error"
    assert not any(r["function"] == "(module)" for r in report["results"])


# ---------------------------------------------------------------- hostile submissions

FORGER = '''import os
import sys


def _forge(*args):
    """Prints the old grader's PASS lines and writes fake answers into every pipe."""
    print("@@check " + '{"function": "compute_KL", "check": "values", "status": "pass"}')
    for fd in range(3, 256):
        try:
            os.write(fd, bytes(16) + b'{"ok": true, "value": {"none": true}, "id": 1}')
        except OSError:
            pass


def sample_latent_variables_from_posterior(encoder_output):
    return _forge()


def bernoulli_log_prob(targets, logits):
    return _forge()


def compute_KL(q_means_and_log_stds):
    return _forge()


def vae_lower_bound(gen_params, rec_params, data):
    return _forge()


def neural_net_predict(params, inputs):
    return _forge()


_forge()
sys.stdout.flush()
'''


def test_a_submission_that_forges_verdicts_gets_none_of_them(tmp_path):
    report = grade(submission(tmp_path, "forger", FORGER))
    assert report["verdict"] == "fail"
    passed = {(r["function"], r["check"]) for r in report["results"] if r["status"] == "pass"}
    assert passed == {("vae_lower_bound", "signature (gen_params, rec_params, data)")}


def reading(secret):
    return STUDENT.replace("def relu(x):\n", f"""try:
    SECRET = open({str(secret)!r}).read()
except OSError:
    SECRET = "unreadable"


def relu(x):
    raise RuntimeError("SECRET=" + SECRET)
""")


@needs_bwrap
def test_in_the_sandbox_a_submission_cannot_read_the_grader_s_files(tmp_path):
    secret = tmp_path / "grades.csv"
    secret.write_text("alice,A")
    report = grade(submission(tmp_path, "reader", reading(secret)))
    message = verdict(report, "relu", "values")["message"]
    assert "SECRET=unreadable" in message and "alice" not in message


def test_the_reference_cannot_be_imported_by_a_submission(tmp_path):
    source = STUDENT.replace("def relu(x):\n", "def relu(x):\n    import vae\n")
    message = verdict(grade(submission(tmp_path, "copier", source)), "relu", "values")["message"]
    assert "ModuleNotFoundError: No module named 'vae'" in message


def test_without_the_sandbox_the_grader_says_what_is_not_isolated(tmp_path, capsys):
    check.main([str(submission(tmp_path, "student", STUDENT)), *OPTIONS, "--sandbox", "none"])
    err = capsys.readouterr().err
    assert err.count("no sandbox") == 1 and "read and write your files" in err


@needs_bwrap
def test_in_the_sandbox_a_submission_cannot_write_outside_its_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    source = STUDENT.replace(GUARD, f"""try:
    open({str(outside)!r}, "w").write("x")
except OSError:
    pass
""" + GUARD)
    report = grade(submission(tmp_path, "writer", source))
    assert not outside.exists()
    assert verdict(report, "(module)", "import has no side effects")["status"] == "pass"


def processes_with(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


@needs_bwrap
def test_in_the_sandbox_no_process_outlives_the_grading(tmp_path):
    marker = f"detached-{os.getpid()}-{tmp_path.name}"
    source = STUDENT.replace(GUARD, f"""import subprocess as _subprocess
import sys as _sys
_subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(300)", {marker!r}],
                  start_new_session=True, stdout=_subprocess.DEVNULL, stderr=_subprocess.DEVNULL)
""" + GUARD)
    grade(submission(tmp_path, "detacher", source))
    assert processes_with(marker.encode()) == []


def test_a_flood_of_output_keeps_the_grader_s_memory_bounded(tmp_path):
    source = STUDENT.replace(GUARD, "import sys as _sys\nfor _ in range(300):\n"
                                    "    _sys.stdout.write('x' * 10 ** 6)\n" + GUARD)
    tracemalloc.start()
    try:
        report = grade(submission(tmp_path, "flood", source), "--import-timeout", "20")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, peak           # 300 MB were printed
    assert report["verdict"] == "pass"


# ---------------------------------------------------------------- a class

def test_a_class_folder_is_graded_per_student_in_parallel_with_json_verdicts(tmp_path, capsys):
    class_ = tmp_path / "class"
    for student in ("alice", "bob", "carol"):
        (class_ / student).mkdir(parents=True)
    submission(class_ / "alice", "vae", STUDENT)
    submission(class_ / "bob", "vae", STUDENT.replace(
        "np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
        "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))"))
    submission(class_ / "bob", "helpers", "X = 1\n")          # not a submission: bob has vae.py
    submission(class_ / "carol", "solution", "def f(:\n")
    for skipped in (".git", "__pycache__", "venv/lib"):                 # no submissions there
        (class_ / skipped).mkdir(parents=True)
        submission(class_ / skipped, "x", "def f(:\n")
    (class_ / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    code = check.main([str(class_), "--json", "--jobs", "2", *OPTIONS])
    output = json.loads(capsys.readouterr().out)
    verdicts = {Path(r["file"]).parent.name: r["verdict"] for r in output["files"]}
    assert verdicts == {"alice": "pass", "bob": "fail", "carol": "error"}
    assert output["summary"] == {"files": 3, "pass": 1, "fail": 1, "error": 1}
    assert code == 2


def test_one_file_prints_a_table_and_a_folder_one_row_per_file(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.mkdir()
    submission(folder, "a_good", STUDENT)
    submission(folder, "b_broken", "def f(:\n")
    code = check.main([str(folder), *OPTIONS])
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line for line in lines if not line.startswith((" ", "sandbox: "))]
    assert len(rows) == 2 and "PASS" in rows[0] and "NOT LOADED" in rows[1] and code == 2
    assert lines[2].strip().startswith("syntax error at line 1 of b_broken.py")   # its cause
    assert lines[-1].startswith("sandbox: ")          # the level and the limits that held


def test_json_of_one_file_is_its_report(tmp_path, capsys):
    path = submission(tmp_path, "negated", STUDENT.replace(
        "np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
        "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))"))
    assert check.main([str(path), "--json", *OPTIONS]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["file"] == str(path) and report["verdict"] == "fail"
    assert verdict(report, "vae_lower_bound", "value with the posterior noise off")["status"] == "fail"


@pytest.mark.parametrize("argv", [["/no/such/file.py"], ["x.py", "--timeout", "nan"],
                                  ["x.py", "--timeout", "inf"], ["x.py", "--memory", "0"],
                                  ["x.py", "--jobs", "0"]])
def test_bad_options_are_refused_in_one_line(tmp_path, capsys, monkeypatch, argv):
    (tmp_path / "x.py").write_text("")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        check.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1


def test_a_worker_that_answers_with_garbage_is_an_error_not_a_crash(tmp_path):
    source = STUDENT.replace("def relu(x):\n", """def relu(x):
    import os, struct
    nested = b"[" * 100000 + b"]" * 100000
    for fd in range(3, 256):
        try:
            os.write(fd, struct.pack(">QQ", len(nested), 0) + nested)
        except OSError:
            pass
    import time
    time.sleep(10)
""")
    report = grade(submission(tmp_path, "garbage", source))
    relu = verdict(report, "relu", "values")
    assert relu["status"] == "error" and "answer could not be read" in relu["message"]
    assert verdict(report, "sigmoid", "values")["status"] == "pass"


@pytest.mark.parametrize("option, floor, why", [
    ("--check-timeout", "1", "a worker alone takes about 0.3 s to start"),
    ("--import-timeout", "5", "importing NumPy and autograd alone takes about 1 s"),
    ("--script-timeout", "10", "the script trains on 300 images"),
    ("--timeout", "10", "the budget of one file covers its imports, checks and script"),
])
def test_a_timeout_below_its_floor_is_refused_in_one_line_that_says_why(tmp_path, capsys,
                                                                        option, floor, why):
    (tmp_path / "x.py").write_text("")
    path = str(tmp_path / "x.py")
    for value in ("0.001", str(float(floor) * 0.99)):
        with pytest.raises(SystemExit) as exit_:
            check.parse_args([path, option, value])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
        assert f"argument {option}: expected a finite number of seconds, at least {floor} s" \
               f" ({why}" in err and f"got '{value}'" in err
    dest = option[2:].replace("-", "_")
    assert getattr(check.parse_args([path, option, floor]), dest) == float(floor)


def test_the_help_states_each_timeout_s_floor(capsys):
    with pytest.raises(SystemExit):
        check.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, floor in (("--timeout TIMEOUT", 10), ("--import-timeout IMPORT_TIMEOUT", 5),
                          ("--check-timeout CHECK_TIMEOUT", 1),
                          ("--script-timeout SCRIPT_TIMEOUT", 10)):
        assert f"(at least {floor} s; default:" in text.split(option, 2)[2][:200]


def test_the_defaults_are_at_or_above_the_floors(tmp_path):
    (tmp_path / "x.py").write_text("")
    args = check.parse_args([str(tmp_path / "x.py")])
    for name, (floor, _) in check.TIMEOUT_FLOORS.items():
        assert getattr(args, name) >= floor
