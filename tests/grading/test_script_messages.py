"""What a student reads when the file itself misbehaves (issue 26, cases 1, 9,
11 and 12): the import that runs the training names the line that does it,
a crash shows the student's frames (innermost first, down from their own
call), the course's stand-ins speak in the course's names, and the script
runs in a copy of the student's folder. Each fixture is the correct solution
tests/student_vae.py with one change; the grader's own modules, and the
reference, are out of the submission's reach."""
import ast
from pathlib import Path

import pytest

from graded import graded
from grader import intake

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
GUARD = 'if __name__ == "__main__":\n'
FUNCTIONS = ["--import-timeout", "5", "--check-timeout", "5", "--memory", "2048",
             "--functions-only"]
SCRIPT = ["--import-timeout", "10", "--check-timeout", "10", "--memory", "2048"]
SAMPLES = '    save_images(samples, "samples.png")\n'


def edited(*changes):
    source = STUDENT
    for old, new in changes:
        assert source.count(old) == 1, old    # one place to change in the student file
        source = source.replace(old, new)
    return source


def line_of(source, text):
    return next(n for n, line in enumerate(source.splitlines(), 1) if text in line)


def write(folder, source, name="vae.py"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(source)
    return folder / name


def results(report, function=None):
    return {(r["function"], r["check"]): r for r in report["results"]
            if function is None or r["function"] == function}


def module_message(report):
    return results(report)[("(module)", "import has no side effects")]


# ---------------------------------------------------------------- case 1: no __main__ guard

def test_a_file_without_a_main_guard_is_told_which_line_runs_at_import(tmp_path):
    source = edited((GUARD, "if True:  # no guard\n"))
    report = graded(write(tmp_path, source), FUNCTIONS)
    module = module_message(report)
    line = line_of(source, "= load_mnist()")
    assert module["status"] == "fail"
    assert "did not finish within 5 s" in module["message"]
    assert ('The file has no `if __name__ == "__main__":` guard, so importing it runs all the '
            f"code at its top level (its training and figures), from line {line}: "
            "`N, train_images, _, test_images, _ = load_mnist()`") in module["message"]
    assert report["loaded"] == "definitions only"


def test_the_skeleton_s_settings_at_the_top_level_are_not_the_work_a_missing_guard_runs():
    # Hyper-parameters computed and a line printed at the top level, as the course's
    # skeleton has them: the work named is the first other call, the data's loading.
    source = ("import autograd.numpy.random as npr\nfrom data import load_mnist\n"
              "npr.seed(0)\nlatent_dim, n_units, n_layers = 50, 200, 2\n"
              "gen_layer_sizes = [latent_dim] + [n_units for i in range(n_layers)] + [784]\n"
              "print('Loading training data...')\n"
              "N, train_images, _, test_images, _ = load_mnist()\nfor epoch in range(3):\n"
              "    pass\n")
    assert intake.first_work(ast.parse(source), source) == (
        7, "N, train_images, _, test_images, _ = load_mnist()")


def test_a_stray_top_level_call_is_named_with_its_line(tmp_path):
    source = edited((GUARD, "open('figure.png', 'w').write('x')\n" + GUARD))
    module = module_message(graded(write(tmp_path, source), FUNCTIONS))
    line = line_of(source, "open('figure.png'")
    assert module["status"] == "fail"
    assert "importing it wrote files: figure.png" in module["message"]
    assert (f"Line {line}, `open('figure.png', 'w').write('x')`, is outside "
            '`if __name__ == "__main__":`') in module["message"]


def test_an_import_that_fails_before_any_work_is_not_blamed_on_the_guard(tmp_path):
    source = edited(("import autograd.numpy as np\n",
                     "import autograd.numpy as np\nimport no_such_module_of_yours\n"),
                    (GUARD, "if True:  # no guard\n"))
    module = module_message(graded(write(tmp_path, source), FUNCTIONS))
    assert "No module named 'no_such_module_of_yours'" in module["message"]
    assert "no `if __name__" not in module["message"]
    assert 'Put the training and plotting code under `if __name__ == "__main__":`' \
        in module["message"]


def test_the_honest_file_imports_without_a_word(tmp_path):
    report = graded(write(tmp_path, STUDENT), FUNCTIONS)
    assert module_message(report) == {"function": "(module)", "check": "import has no side "
                                      "effects", "status": "pass", "message": ""}


# ---------------------------------------------------------------- the grader out of the way

IMPORTS = ("def relu(x):\n", """def relu(x):
    import importlib
    said = []
    for name in ("grader", "grader.protocol", "vae", "vaelib", "check", "data", "plotting"):
        try:
            importlib.import_module(name)
            said.append(name + " imported")
        except ImportError as e:
            said.append(f"{name}: {type(e).__name__}")
    raise RuntimeError("; ".join(said))
""")


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_nothing_of_the_grader_nor_the_reference_can_be_imported(tmp_path, sandbox):
    path = write(tmp_path, edited(IMPORTS), "student.py")    # a vae.py would import itself
    report = graded(path, [*FUNCTIONS, "--sandbox", sandbox])
    message = results(report)[("relu", "values")]["message"]
    for name in ("grader", "grader.protocol", "vae", "vaelib", "check"):
        assert f"{name}: ModuleNotFoundError" in message, message
    assert "data imported" in message and "plotting imported" in message


def test_a_module_of_the_student_s_named_grader_is_theirs(tmp_path):
    source = edited(("    return np.maximum(0, x)\n",
                     "    import grader\n    return np.maximum(0, x) * grader.ONE\n"))
    (tmp_path / "grader.py").write_text("ONE = 1\n")
    report = graded(write(tmp_path, source), FUNCTIONS)
    assert results(report)[("relu", "values")]["status"] == "pass"


# ---------------------------------------------------------------- case 9: the student's frames

def test_a_crash_is_shown_down_from_the_student_s_own_call(tmp_path):
    call = "    q = neural_net_predict(rec_params, test_images[:10])\n"
    source = edited((call, call.replace("rec_params", "gen_params")))
    script = results(graded(write(tmp_path, source), SCRIPT), "(script)")
    message = script[("(script)", "runs as a script")]["message"]
    inner = line_of(source, "inputs = relu(np.dot(inputs, W) + b)")
    outer = line_of(source, "q = neural_net_predict(gen_params")
    assert message.startswith("the script stopped: ValueError: shapes (10,784) and (50,200) "
                              "not aligned"), message
    assert (f"at line {inner} in neural_net_predict: `inputs = relu(np.dot(inputs, W) + b)`, "
            f"called from line {outer}: `q = neural_net_predict(gen_params, "
            "test_images[:10])`") in message
    assert "data.load_mnist() returns" not in message     # not a file or argument problem


def test_a_function_s_crash_shows_the_call_in_the_function_checked(tmp_path):
    call = "    q = neural_net_predict(rec_params, data)\n"
    source = edited((call, call.replace("rec_params", "gen_params")))
    message = results(graded(write(tmp_path, source), FUNCTIONS))[
        ("vae_lower_bound", "returns a scalar")]["message"]
    inner = line_of(source, "inputs = relu(np.dot(inputs, W) + b)")
    outer = line_of(source, "q = neural_net_predict(gen_params, data)")
    assert (f"at line {inner} in neural_net_predict: `inputs = relu(np.dot(inputs, W) + b)`, "
            f"called from line {outer} in vae_lower_bound: "
            "`q = neural_net_predict(gen_params, data)`") in message, message


def test_a_deep_recursion_shows_five_frames_at_most(tmp_path):
    from grader import protocol
    path = write(tmp_path, "def f(n):\n    return 1 / n if n == 0 else f(n - 1)\n")
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    try:
        namespace["f"](50)
    except ZeroDivisionError as e:
        info = protocol.error_info(e, path)
    protocol.check_answer("call", {"id": 1, "ok": False, "error": info})
    assert len(info["frames"]) == 5 and info["more_frames"] == 46
    assert protocol.where(info) == (
        " at line 2 in f: `return 1 / n if n == 0 else f(n - 1)`"
        + ", called from line 2 in f: `return 1 / n if n == 0 else f(n - 1)`" * 4
        + " (through 46 more calls)")


# ---------------------------------------------------------------- case 11: the course's names

def test_an_argument_the_grader_s_load_mnist_does_not_take_is_named(tmp_path):
    source = edited(("    N, train_images, _, test_images, _ = load_mnist()\n",
                     "    N, train_images, _, test_images, _ = load_mnist(sklearn=True)\n"))
    report = graded(write(tmp_path, source), SCRIPT)
    message = results(report)[("(script)", "runs as a script")]["message"]
    line = line_of(source, "load_mnist(sklearn=True)")
    assert message.startswith(
        "the script stopped: TypeError: data.load_mnist() takes no argument sklearn in the "
        "grader: it returns the grader's subset of MNIST at line "
        f"{line}: `N, train_images, _, test_images, _ = load_mnist(sklearn=True)`"), message
    for internal in ("run_script", "<locals>", "<lambda>", "grader/", "script.py"):
        assert internal not in message


def test_the_stand_ins_look_like_the_course_s_functions():
    import inspect

    import data
    import plotting
    from grader.script import stand_in
    fake = stand_in(data.load_mnist, "data", lambda: "subset", "it returns the subset")
    assert fake.__name__ == fake.__qualname__ == "load_mnist" and fake() == "subset"
    assert inspect.signature(fake) == inspect.signature(data.load_mnist)
    with pytest.raises(TypeError, match=r"^data\.load_mnist\(\) takes no positional "
                                        r"arguments \(1 given\) in the grader"):
        fake("mnist.npz")
    recorded = []
    save = stand_in(plotting.save_images, "plotting", lambda *a, **k: recorded.append(k), "")
    save([[0.0]], "a.png", vmin=0)
    with pytest.raises(TypeError, match=r"^plotting\.save_images\(\) missing a required "
                                        r"argument: 'filename' in the grader"):
        save([[0.0]])
    assert recorded == [{"vmin": 0}]


# ---------------------------------------------------------------- case 12: the student's folder

SAVES = (SAMPLES, SAMPLES + '    np.save("trained_params/data.npy", flat_params)\n')


def test_a_folder_the_script_writes_into_is_staged_with_the_file(tmp_path):
    path = write(tmp_path / "alice", edited(SAVES))
    (tmp_path / "alice" / "trained_params").mkdir()
    (tmp_path / "alice" / "trained_params" / ".gitkeep").write_text("")
    report = graded(path, SCRIPT)
    assert report["verdict"] == "pass", [r for r in report["results"] if r["status"] != "pass"]
    assert {part: status for part, status in report["parts"].items()} == {
        "functions": "pass", "script": "pass", "training": "pass", "figures": "pass"}


def test_a_folder_the_script_writes_into_and_does_not_make_is_named(tmp_path):
    source = edited(SAVES)
    report = graded(write(tmp_path / "bob", source), SCRIPT)
    ran = results(report)[("(script)", "runs as a script")]
    line = line_of(source, "np.save(")
    assert ran["status"] == "error"
    assert ran["message"] == (
        f'the script stopped at line {line}: `np.save("trained_params/data.npy", flat_params)`: '
        "your script writes into trained_params/, which a fresh copy of your folder does not "
        "have: create it with os.makedirs('trained_params', exist_ok=True) before writing "
        "into it. What it saved before this line is graded below")
    figures = results(report, "(figures)")
    assert figures[("(figures)", "25 prior samples")]["status"] == "pass"     # saved before
    assert figures[("(figures)", "10 test images and their reconstructions")]["status"] == "fail"
    assert {r["status"] for r in results(report, "(training)").values()} == {"pass"}


def test_importing_sees_what_it_writes_into_the_student_s_folders(tmp_path):
    folder = tmp_path / "carol"
    (folder / "trained_params").mkdir(parents=True)
    (folder / "trained_params" / "old.npy").write_bytes(b"\x93NUMPY")
    (folder / "samples.png").write_bytes(b"\x89PNG")
    honest = graded(write(folder, STUDENT), FUNCTIONS)
    assert module_message(honest)["status"] == "pass"
    source = edited((GUARD, "np.save('trained_params/new.npy', np.zeros(3))\n" + GUARD))
    writes = module_message(graded(write(folder, source), FUNCTIONS))
    assert writes["status"] == "fail"
    assert "importing it wrote files: trained_params/new.npy." in writes["message"]
