"""Gradescope: results.json validated against Gradescope's published format, and
the autograder zip end to end in a root laid out as /autograder.

The schema below is written from Gradescope's specification,
https://gradescope-autograders.readthedocs.io/en/latest/specs/ ("Output format",
"Controlling Test Case Visibility", "Test case status", "Output String
Formatting"): a top-level score or a score on every test; tests with score,
max_score, status "passed" | "failed", name, name_format, number, output,
output_format, tags, visibility, extra_data; visibility one of hidden,
after_due_date, after_published, visible; formats text, html, simple_format,
md, ansi.

The end-to-end tests build the zip with check.py, unpack it into ROOT/source,
copy run_autograder to ROOT (as Gradescope does), and run setup.sh's python,
requirements and permissions steps (not `system`: apt) with AUTOGRADER_PYTHON
set to a fresh virtual environment whose site-packages are hard links to the
current interpreter's: pip then finds every pinned package installed
(PIP_NO_INDEX=1: it fails rather than download) and the sandbox, which mounts
only the Python installation the grader runs with, sees them too.
"""
import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import jsonschema
import pytest

import check
from grader import gradescope, grading, rubric
from grader.outputs import Graded
from grader.rubric import Record

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
GUARD = 'if __name__ == "__main__":\n'
MISTAKE = ("np.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std",
           "np.exp(log_std) + mean ** 2 - 1 - log_std")          # log_std as log-variance
# The interpreter crashes at import: in the file's definitions too (a file whose import only
# raises is graded from its imports and definitions, so its functions may still earn points).
CRASH = "import ctypes\n\n\nclass Crash:\n    ctypes.string_at(0)\n\n\n"

VISIBILITY = {"enum": ["hidden", "after_due_date", "after_published", "visible"]}
FORMAT = {"enum": ["text", "html", "simple_format", "md", "ansi"]}
TEST = {"type": "object", "additionalProperties": False, "properties": {
    "score": {"type": "number"}, "max_score": {"type": "number", "minimum": 0},
    "status": {"enum": ["passed", "failed"]}, "name": {"type": "string"},
    "name_format": FORMAT, "number": {"type": "string"}, "output": {"type": "string"},
    "output_format": FORMAT, "tags": {"type": "array", "items": {"type": "string"}},
    "visibility": VISIBILITY, "extra_data": {"type": "object"}}}
RESULTS = {"type": "object", "additionalProperties": False, "properties": {
    "score": {"type": "number"}, "execution_time": {"type": "number", "minimum": 0},
    "output": {"type": "string"}, "output_format": FORMAT, "test_output_format": FORMAT,
    "test_name_format": FORMAT, "visibility": VISIBILITY, "stdout_visibility": VISIBILITY,
    "extra_data": {"type": "object"}, "tests": {"type": "array", "items": TEST},
    "leaderboard": {"type": "array"}},
    "anyOf": [{"required": ["score"]},
              {"required": ["tests"], "properties": {"tests": {"items": {"required": ["score"]}}}}]}


def valid(body):
    """body, checked against Gradescope's format and this grader's choices: no
    top-level score (every test has one), stdout hidden from students."""
    jsonschema.Draft202012Validator(RESULTS).validate(body)
    assert "score" not in body and body["stdout_visibility"] == "hidden"
    return body


def score(body):
    return sum(t["score"] for t in body["tests"]), sum(t["max_score"] for t in body["tests"])


def visible_failures(body):
    return [t for t in body["tests"] if t["status"] == "failed" and t["visibility"] == "visible"]


# ---- The zip, unpacked and set up once ------------------------------------------------

def unpack(archive, root):
    """As Gradescope does: the zip in root/source, run_autograder copied to root."""
    source = root / "source"
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            target = source / info.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
            os.chmod(target, (info.external_attr >> 16) & 0o777)
    shutil.copy2(source / "run_autograder", root / "run_autograder")
    return source


@pytest.fixture(scope="module")
def python():
    """A fresh virtual environment of the current Python with its packages (hard links)."""
    folder = Path(tempfile.mkdtemp(prefix="gradescope-venv-"))
    os.chmod(folder, 0o755)             # the fallback sandbox's uids run this Python
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    site.rmdir()
    subprocess.run(["cp", "-al", sysconfig.get_path("purelib"), str(site)], check=True)
    yield venv / "bin" / "python"
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def autograder(tmp_path_factory, python):
    """The built zip and a root set up from it by setup.sh."""
    if shutil.which("bwrap") is None and os.geteuid() != 0:
        pytest.skip("no sandbox: bubblewrap is not installed and this is not root")
    folder = tmp_path_factory.mktemp("gradescope")
    archive = folder / "autograder.zip"
    assert check.main(["--autograder", "gradescope", "--output", str(archive)]) == 0
    root = folder / "root"
    source = unpack(archive, root)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": str(python),
           "PIP_NO_INDEX": "1"}
    setup = subprocess.run(["bash", str(source / "setup.sh"), "python", "requirements",
                            "permissions"], env=env, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stderr[-3000:]
    assert "Requirement already satisfied: numpy==" in setup.stdout
    assert stat.S_IMODE(source.stat().st_mode) == 0o700
    assert (source / ".python").read_text().strip() == str(python)
    return archive, root


def run_autograder(root, files):
    """Places the submission's files, runs run_autograder -> (results, its output)."""
    submission = root / "submission"
    shutil.rmtree(submission, ignore_errors=True)
    submission.mkdir(parents=True)
    for name, text in files.items():
        (submission / name).write_text(text)
    (root / "results" / "results.json").unlink(missing_ok=True)
    done = subprocess.run([str(root / "run_autograder")], cwd=root, capture_output=True,
                          text=True, env={**os.environ, "AUTOGRADER_ROOT": str(root)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return valid(json.loads((root / "results" / "results.json").read_text())), done.stdout


def test_the_zip_holds_the_grader_and_nothing_generated(autograder, tmp_path):
    archive, _ = autograder
    with zipfile.ZipFile(archive) as z:
        names = {info.filename: info.external_attr >> 16 for info in z.infolist()}
    assert names["setup.sh"] & 0o111 and names["run_autograder"] & 0o111
    for name in ("check.py", "vae.py", "data.py", "plotting.py", "requirements.txt",
                 "requirements-autograder.txt", "grader/gradescope.py", "grader/rubric.toml",
                 "vaelib/runs.py", "datasets/mnist/train-images-idx3-ubyte.gz", "GRADER_VERSION"):
        assert name in names, name
    assert not [n for n in names if any(part in n.split("/") for part in (
        "__pycache__", ".venv", "output", "runs", ".git", "tests"))]
    assert "rubric.toml" not in names and archive.stat().st_size < 15 * 2 ** 20
    custom = tmp_path / "mine.toml"
    custom.write_text('[checks."kl.values"]\npoints = 7\n')
    assert check.main(["--autograder", "gradescope", "--output", str(tmp_path / "a.zip"),
                       "--rubric", str(custom)]) == 0
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert z.read("rubric.toml") == custom.read_bytes()


def test_a_correct_file_gets_full_marks_with_its_warning_at_the_rubric_s_share(autograder):
    body, log = run_autograder(autograder[1], {"vae.py": STUDENT})
    entries = rubric.load()
    got, most = score(body)
    assert most == sum(e.points for e in entries.values())
    for test in body["tests"]:
        entry = entries[test["extra_data"]["id"]]
        assert test["status"] == "passed", test
        share = entry.warning if test["extra_data"]["status"] == "warning" else 1.0
        assert test["score"] == pytest.approx(entry.points * share), test
    warned = [t for t in body["tests"] if t["extra_data"]["status"] == "warning"]
    assert [t["extra_data"]["id"] for t in warned] == ["loglik.extremes"]   # known: logits +-1000
    assert got == pytest.approx(most - entries["loglik.extremes"].points / 2)
    assert f"results.json: {got:g} of {most:g} points in {len(body['tests'])} tests" in log
    extra = body["extra_data"]
    assert extra["isolation"]["level"] in ("bwrap", "user") and extra["grader_version"]
    assert extra["timings"]["wall_seconds"] > 0 and extra["check_exit_code"] == 0
    assert {t["number"] for t in body["tests"]} >= {"1.1", "1.4", "2.4", "3.3"}


def test_a_file_with_a_mistake_gets_partial_credit(autograder):
    assert MISTAKE[0] in STUDENT
    body, _ = run_autograder(autograder[1], {"vae.py": STUDENT.replace(*MISTAKE)})
    got, most = score(body)
    assert 0 < got < most - 1
    failed = {t["extra_data"]["id"]: t for t in visible_failures(body)}
    assert "kl.known" in failed and "log_std was used as log-variance" in failed["kl.known"]["output"]
    assert all(t["status"] == "passed" for t in body["tests"]
               if t["extra_data"]["id"].startswith(("sampler.", "loglik.values")))


def test_a_file_that_crashes_at_import_gets_zero_and_is_told_why(autograder):
    body, _ = run_autograder(autograder[1], {"vae.py": CRASH + STUDENT})
    assert score(body)[0] == 0
    [first] = [t for t in visible_failures(body) if t["extra_data"]["id"] == "module.import"]
    assert "importing it ended the process" in first["output"]
    assert "could not be graded" in body["output"]


def test_no_vae_py_gets_a_visible_failed_entry(autograder):
    body, _ = run_autograder(autograder[1], {"notes.txt": "my answers", "plot.py": "x = 1\n",
                                             "other.py": "y = 2\n"})
    [test] = body["tests"]
    assert test["name"] == "No vae.py submitted" and test["visibility"] == "visible"
    assert test["score"] == 0 and test["max_score"] == 100 and "none is named vae.py" in test["output"]


def test_a_broken_check_py_still_leaves_results_with_the_traceback_hidden(autograder, tmp_path):
    archive, _ = autograder
    root = tmp_path / "root"
    source = unpack(archive, root)
    (source / ".python").write_text(sys.executable + "\n")
    (source / "check.py").write_text("raise RuntimeError('the grader exploded')\n")
    body, _ = run_autograder(root, {"vae.py": STUDENT})
    shown, hidden = body["tests"]
    assert shown["name"] == "Autograder error" and shown["visibility"] == "visible"
    assert "RuntimeError: the grader exploded" in shown["output"] and "Traceback" not in shown["output"]
    assert hidden["visibility"] == "hidden" and "Traceback" in hidden["output"]


# ---- results.json from check.py ---------------------------------------------------------

def test_a_file_that_does_not_parse_scores_zero_with_the_line(tmp_path):
    path = tmp_path / "vae.py"
    path.write_text("import numpy\n\ndef f(:\n    pass\n")
    out = tmp_path / "results.json"
    assert check.main([str(path), "--format", "gradescope", "--output", str(out)]) == 2
    body = valid(json.loads(out.read_text()))
    assert score(body)[0] == 0
    assert any("syntax error at line 3" in t["output"] for t in visible_failures(body))


def test_a_grader_failure_is_a_visible_error_with_hidden_details(tmp_path, monkeypatch):
    def explode(*args):
        raise RuntimeError("the grader's own bug")
    monkeypatch.setattr(grading, "grade_into", explode)
    path = tmp_path / "vae.py"
    path.write_text(STUDENT)
    out = tmp_path / "results.json"
    assert check.main([str(path), "--format", "gradescope", "--output", str(out)]) == 2
    body = valid(json.loads(out.read_text()))
    shown, hidden = body["tests"][:2]
    assert shown["name"] == "Autograder error" and shown["status"] == "failed"
    assert shown["visibility"] == "visible" and "the grader's own bug" in shown["output"]
    assert hidden["visibility"] == "hidden" and "RuntimeError" in hidden["output"]
    assert score(body)[0] == 0


def test_hostile_text_is_escaped_and_fenced(tmp_path):
    hostile = ("~~~~\n<img src=x onerror=alert(1)> [link](http://x) **bold**\x1b[2J\u202eevil"
               + "x" * 10000)
    record = Record(id="kl.values", name="compute_KL: values", task="1.3", points=0.0,
                    max_points=3.0, status="fail", message=hostile, visibility="after_due_date")
    report = {"file": "/s/\u202e\x1bvae.py", "loaded": "full", "verdict": "fail",
              "results": [], "notes": ["note ~~~~~ " + hostile]}
    body = valid(json.loads(gradescope.render([Graded(report, [record])], None)))
    [test] = body["tests"]
    output = test["output"]
    assert test["visibility"] == "after_due_date" and test["number"] == "1.3"
    assert "\x1b" not in output and "\u202e" not in output and "\\x1b[2J\\u202eevil" in output
    fence = output.splitlines()[2]
    assert set(fence) == {"~"} and len(fence) == 5 and output.endswith("\n" + fence)
    assert output.count(fence) == 2 and len(output) < 2500      # bounded
    assert "\x1b" not in body["output"] and "\u202e" not in body["output"]
    assert body["extra_data"]["isolation"] is None


def test_the_submission_is_vae_py_else_the_only_python_file(tmp_path):
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "deep" / "er" / "vae.py").write_text("")
    (tmp_path / "deep" / "vae.py").write_text("")
    (tmp_path / "helper.py").write_text("")
    assert gradescope.find_submission(tmp_path) == tmp_path / "deep" / "vae.py"
    other = tmp_path / "other"
    other.mkdir()
    (other / "my_vae.py").write_text("")
    assert gradescope.find_submission(other) == other / "my_vae.py"
    assert "empty" in gradescope.find_submission(tmp_path / "missing")


def test_a_folder_as_the_zip_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        check.main(["--autograder", "gradescope", "--output", str(tmp_path), "--overwrite"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
