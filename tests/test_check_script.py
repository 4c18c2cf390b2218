"""check.py's second part: the submission runs as a script on a subset of
MNIST, and its training loop and figures are judged. Each script is the
student solution of student_vae.py with one mistake of the assignment's list;
the correct one and the project's own vae.py must pass."""
from pathlib import Path

import pytest

import check
from graded import graded

STUDENT = (Path(__file__).parent / "student_vae.py").read_text()
OPTIONS = ["--import-timeout", "10", "--check-timeout", "10", "--memory", "2048"]
ADAM = "            flat_params = flat_params + 0.001 * mhat / (np.sqrt(vhat) + 1e-8)\n"
START = "    m, v, t = np.zeros(len(flat_params)), np.zeros(len(flat_params)), 1\n"

# name: (old, new, check, words in the message)
MISTAKES = {
    "adam_descends": (ADAM, ADAM.replace("+ 0.001", "- 0.001"), "the ELBO rises", "descends"),
    "second_moment_from_g4": ("(1 - 0.999) * g ** 2", "(1 - 0.999) * g ** 4",
                              "the ELBO rises", "g**4"),
    "bias_correction_from_t_0": (START, START.replace(", 1\n", ", 0\n"), "the ELBO rises",
                                 "t = 0"),
    "bias_correction_from_t_2": (START, START.replace(", 1\n", ", 2\n"), "Adam and the loop",
                                 "starts at t = 2"),
    "never_updates": (ADAM, ADAM.replace("flat_params = ", "new_params = "), "the ELBO rises",
                      "never changed"),
    "no_prior_samples": ('    save_images(samples, "samples.png")\n', "", "25 prior samples",
                         "no save_images call with 25 images"),
    "no_reconstructions": ('    s_images(np.concatenate([test_images[:10], reconstructions]), '
                           '"reconstructions.png",\n             ims_per_row=10, vmin=0, vmax=1)\n',
                           "", "10 test images and their reconstructions", "not found"),
    "one_interpolation": ("for a, b in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:",
                          "for a, b in [(0, 1)]:", "five interpolations", "missing (2, 3)"),
    "interpolates_samples": ("ends = neural_net_predict(rec_params, test_images[[a, b]])[:, :50]",
                             "ends = sample_latent_variables_from_posterior("
                             "neural_net_predict(rec_params, test_images[[a, b]]))",
                             "five interpolations", "posterior samples"),
    "thirty_steps": ("np.linspace(0, 1, 25)", "np.linspace(0, 1, 30)", "five interpolations",
                     "30 frames instead of 25"),
}


def grade(tmp_path, name, source, *extra):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return graded(path, [*OPTIONS, *extra])


def part(report, tag):
    return {r["check"]: r for r in report["results"] if r["function"] == tag}


def test_a_correct_script_passes_as_a_whole(tmp_path):
    report = grade(tmp_path, "student", STUDENT)
    assert report["parts"] == {"functions": "pass", "script": "pass", "training": "pass",
                               "figures": "pass"}
    assert "comparable with the reference" in part(report, "(training)")["Adam and the loop"]["message"]


def test_the_reference_script_passes_as_a_whole():
    report = graded(check.PROJECT / "vae.py", OPTIONS)
    assert report["verdict"] == "pass", [r for r in report["results"] if r["status"] != "pass"]
    assert "comparable with the reference" in part(report, "(training)")["Adam and the loop"]["message"]


@pytest.mark.parametrize("name", MISTAKES)
def test_each_mistake_fails_with_a_message_naming_it(tmp_path, name):
    old, new, check_name, words = MISTAKES[name]
    assert STUDENT.count(old) == 1, old
    report = grade(tmp_path, name, STUDENT.replace(old, new))
    results = {**part(report, "(training)"), **part(report, "(figures)")}
    assert results[check_name]["status"] == "fail", results[check_name]
    assert words in results[check_name]["message"]
    assert report["verdict"] == "fail" and report["parts"]["functions"] == "pass"


def test_a_script_that_cannot_run_on_the_data_gets_one_message_and_its_function_verdicts(tmp_path):
    source = STUDENT.replace("    N, train_images, _, test_images, _ = load_mnist()\n",
                             "    N, train_images, _, test_images, _ = load_mnist()\n"
                             "    extra = open('/data/fashion-mnist.npz', 'rb').read()\n")
    report = grade(tmp_path, "reads_other_files", source)
    ran = part(report, "(script)")["runs as a script"]
    assert ran["status"] == "error" and "the script stopped" in ran["message"]
    assert "without downloading" in ran["message"]
    assert report["parts"]["functions"] == "pass" and report["verdict"] == "fail"


def test_functions_only_skips_the_script(tmp_path):
    report = grade(tmp_path, "student", STUDENT, "--functions-only")
    assert set(report["parts"]) == {"functions"} and report["verdict"] == "pass"
