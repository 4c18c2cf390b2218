"""PrairieLearn: results.json validated against the published format, and the
course's files run end to end in a /grade layout laid out in a temporary root.

The schema is written from PrairieLearn's "External Grading" page,
https://prairielearn.readthedocs.io/en/latest/externalGrading/ ("Grading
results"): `score` a number in [0.0, 1.0], required unless `gradable` is false;
`format_errors` a string or an array of strings; `message`, `output`; `tests`
with name, description, points, max_points, message, output, images; `images`
objects with `url` ("data:[mimetype];base64,[contents]") and an optional
`label`, or, for older graders, the url as a string; the file "limited to 1 MB".
What this grader promises beyond that (every test has name, points, max_points,
message and output; points within [0, max_points]) is checked too.
"""
import base64
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import pytest

from grader import isolation, outputs, prairielearn, rubric
from grader.rubric import Record

PROJECT = Path(__file__).resolve().parents[2]
STUDENT = (PROJECT / "tests" / "student_vae.py").read_text()
KL_MISTAKE = ("np.exp(2 * log_std) + mean ** 2 - 1 - 2 * log_std",
              "np.exp(log_std) + mean ** 2 - 1 - log_std")


def changed(old, new):
    """student_vae.py with one replacement (that must happen)."""
    assert old in STUDENT
    return STUDENT.replace(old, new)


can_grade = pytest.mark.skipif(shutil.which("bwrap") is None and os.geteuid() != 0,
                               reason="grading needs bubblewrap or root (a sandbox)")

IMAGE = {"anyOf": [
    {"type": "object", "required": ["url"], "properties": {
        "url": {"type": "string", "pattern": r"^data:image/[a-z+]+;base64,[A-Za-z0-9+/]+=*$"},
        "label": {"type": "string"}}},
    {"type": "string", "pattern": r"^data:image/"}]}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "gradable": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "format_errors": {"anyOf": [{"type": "string"},
                                    {"type": "array", "items": {"type": "string"}}]},
        "message": {"type": "string"},
        "output": {"type": "string"},
        "images": {"type": "array", "items": IMAGE},
        "tests": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "points", "max_points", "message", "output"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "description": {"type": "string"},
                "points": {"type": "number", "minimum": 0},
                "max_points": {"type": "number", "minimum": 0},
                "message": {"type": "string"},
                "output": {"type": "string"},
                "images": {"type": "array", "items": IMAGE}}}},
    },
    "if": {"required": ["gradable"], "properties": {"gradable": {"const": False}}},
    "then": {"required": ["format_errors"]},
    "else": {"required": ["score"]},
}


def valid(text):
    """The results file's text, validated -> its dict."""
    assert len(text.encode("utf-8")) < 1_000_000
    result = json.loads(text)
    jsonschema.validate(result, SCHEMA)
    for test in result.get("tests", []):
        assert test["points"] <= test["max_points"], test
    return result


# ---- End to end: the built folder, run as PrairieLearn runs its entrypoint ---------------

def built(folder, rubric_path=None):
    """--autograder prairielearn's folder, with the datasets link the Dockerfile makes."""
    paths = prairielearn.build(folder, rubric_path)
    (folder / "vae-grader" / "datasets").symlink_to(folder / "datasets")
    return paths


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pl") / "course"
    built(folder)
    return folder


def run_job(course, root, files, **env):
    """Lays out root as /grade with files in student/, runs run_grader with this
    machine's Python -> (exit code, results.json text)."""
    (root / "student").mkdir(parents=True)
    for name, text in files.items():
        (root / "student" / name).write_text(text)
    done = subprocess.run([str(course / "run_grader")], capture_output=True, timeout=600, env={
        **os.environ, "VAE_GRADE_ROOT": str(root), "VAE_GRADER_PYTHON": sys.executable,
        "VAE_GRADER_HOME": str(course / "vae-grader"), **env})
    path = root / "results" / "results.json"
    assert path.exists(), done.stderr.decode(errors="replace")[-2000:]
    return done.returncode, path.read_text()


@can_grade
def test_the_reference_style_file_scores_full_marks_but_its_warning(course, tmp_path):
    code, text = run_job(course, tmp_path / "grade", {"vae.py": STUDENT})
    result = valid(text)
    assert code == 0 and result["gradable"] is True
    assert result["score"] == pytest.approx(0.99)     # loglik.extremes: 1 of 2 points
    tests = {t["description"]: t for t in result["tests"]}
    warned = tests["task 1.2 (loglik.extremes)"]
    assert (warned["points"], warned["max_points"]) == (1, 2)
    assert warned["message"].startswith("WARNING: ")
    assert all(t["points"] == t["max_points"] for t in result["tests"] if t is not warned)
    assert len(result["tests"]) == len(rubric.load())
    assert "99 of 100 points" in result["message"]
    for image in result["images"]:                   # the figures, where records carry them
        assert image["label"] and image["url"].startswith("data:image/png;base64,")


@pytest.mark.skipif(os.geteuid() != 0, reason="the user level needs root, as in the image")
def test_the_image_layout_grades_at_the_user_level_where_bwrap_cannot_start(tmp_path):
    """As the Dockerfile lays it out: the grader in a folder private to root, the
    MNIST subset readable outside it; --sandbox user, the level a container whose
    seccomp profile forbids namespaces falls back to."""
    opt = Path(tempfile.mkdtemp(prefix="pl-image-"))       # not under pytest's private folder
    opened = []       # the folders on the way to this Python, as the image has them: o+x
    for folder in isolation.closed_folders():
        mode = stat.S_IMODE(os.stat(folder).st_mode)
        os.chmod(folder, mode | 0o001)
        opened.append((folder, mode))
    try:
        os.chmod(opt, 0o755)
        prairielearn.build(opt / "build")
        shutil.move(opt / "build" / "datasets", opt / "vae-data")
        home = opt / "build" / "vae-grader"
        (home / "datasets").symlink_to(opt / "vae-data")
        os.chmod(home, 0o700)
        code, text = run_job(opt / "build", tmp_path / "grade", {"vae.py": STUDENT},
                             VAE_CHECK_ARGS="--sandbox user")
    finally:
        shutil.rmtree(opt)
        for folder, mode in opened:
            os.chmod(folder, mode)
    result = valid(text)
    assert code == 0 and result.get("score") == pytest.approx(0.99), result["message"]
    assert "graded in the sandbox: user" in result["output"]


@can_grade
def test_a_mistake_costs_its_checks_and_a_course_rubric_is_used(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('[checks."kl.values"]\npoints = 7\n\n'
                    '[checks."bound.gradient"]\nvisibility = "after_due_date"\n')
    course = tmp_path / "course"
    built(course, mine)
    assert (course / "vae-grader" / prairielearn.COURSE_RUBRIC).read_text() == mine.read_text()
    code, text = run_job(course, tmp_path / "grade", {"vae.py": changed(*KL_MISTAKE)},
                         VAE_CHECK_ARGS="--functions-only")
    result = valid(text)
    tests = {t["description"]: t for t in result["tests"]}
    assert code == 0 and result["gradable"] is True and 0 < result["score"] < 0.5
    known = tests["task 1.3 (kl.known)"]
    assert known["points"] == 0 and "log_std was used as log-variance" in known["message"]
    assert tests["task 1.3 (kl.values)"]["max_points"] == 7          # the course's points
    assert "task 1.4 (bound.gradient)" not in tests                  # shown after the due date
    assert any(t["name"] == "1 more checks" and t["max_points"] == 4 for t in result["tests"])
    assert sum(t["max_points"] for t in result["tests"]) == 104
    assert tests["task 3.1 (figures.prior)"]["message"].startswith("SKIPPED: not run")


@can_grade
def test_a_file_python_cannot_parse_is_not_gradable(course, tmp_path):
    code, text = run_job(course, tmp_path / "grade",
                         {"vae.py": changed("def compute_KL(q_means_and_log_stds):",
                                            "def compute_KL(q_means_and_log_stds:")})
    result = valid(text)
    assert code == 0 and result["gradable"] is False and "score" not in result
    assert result["format_errors"][0].startswith("syntax error at line")
    assert "does not count" in result["message"]


@can_grade
def test_a_file_that_crashes_at_import_is_graded_with_the_reason(course, tmp_path):
    code, text = run_job(course, tmp_path / "grade",
                         {"vae.py": 'raise RuntimeError("boom at import")\n' + STUDENT},
                         VAE_CHECK_ARGS="--functions-only")
    result = valid(text)
    assert code == 0 and result["gradable"] is True and result["score"] < 0.6
    module = next(t for t in result["tests"] if t["description"] == "task 1.0 (module.import)")
    assert module["points"] == 0 and "boom at import" in module["message"]


def test_no_vae_py_is_not_gradable_and_names_what_was_sent(course, tmp_path):
    code, text = run_job(course, tmp_path / "grade", {"VAE.PY": STUDENT, "notes\x1b[31m.txt": ""})
    result = valid(text)
    assert code == 0 and result["gradable"] is False
    assert "no vae.py" in result["format_errors"][0] and "'VAE.PY'" in result["format_errors"][0]
    assert "\x1b" not in text and "\\u001b" not in text


def test_a_grader_that_stops_still_writes_results(course, tmp_path):
    code, text = run_job(course, tmp_path / "grade", {"vae.py": STUDENT},
                         VAE_CHECK_ARGS="--memory 0")          # check.py refuses its options
    result = valid(text)
    assert code == 0 and result["gradable"] is False
    assert result["format_errors"] == [prairielearn.NOT_YOUR_FAULT]
    assert "--memory" in result["message"]


def test_a_grader_that_cannot_start_still_writes_results(course, tmp_path):
    empty = tmp_path / "no-grader"
    empty.mkdir()
    code, text = run_job(course, tmp_path / "grade", {"vae.py": STUDENT},
                         VAE_GRADER_HOME=str(empty))        # python -m grader... fails
    result = valid(text)
    assert code == 0 and result["gradable"] is False and "exited with status 1" in result["message"]


# ---- render: figures, hidden checks, hostile text, grader problems -----------------------

def png(width, height, noise=False):
    from PIL import Image
    import numpy as np
    pixels = (np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
              if noise else np.full((height, width, 3), 200, np.uint8))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def record(id, images=(), visibility="visible", status="pass", message="", points=8.0):
    return Record(id=id, name=f"check {id}", task="3.1", points=points if status == "pass" else 0.0,
                  max_points=points, status=status, message=message, visibility=visibility,
                  images=list(images))


REPORT = {"file": "vae.py", "loaded": "full", "results": [], "notes": [], "verdict": "pass"}


def test_figures_are_labelled_data_urls_within_1_MB():
    small = png(64, 64)
    big = [png(700, 700, noise=True) for _ in range(3)]            # about 1.5 MB each
    records = [record("figures.prior", [{"label": "samples.png", "png": small}]),
               record("figures.reconstructions", [{"label": f"big {i}", "png": b}
                                                  for i, b in enumerate(big)]),
               record("figures.interpolations", [{"label": "forged", "png": b"GIF89a..."}]),
               record("figures.none")]
    text = prairielearn.render([outputs.Graded(REPORT, records)], None)
    result = valid(text)
    labels = [image["label"] for image in result["images"]]
    assert labels[0] == "3.1 check figures.prior: samples.png"
    assert base64.b64decode(result["images"][0]["url"].split(",", 1)[1]) == small
    assert len(text) > 500_000                                        # the budget was used
    assert "shrunk" in result["message"] and "left out" in result["message"]
    assert "forged (not a PNG)" in result["message"]
    assert all(image["url"].startswith("data:image/png;base64,") for image in result["images"])


def test_checks_not_visible_count_but_are_not_named():
    records = [record("a"), record("b", visibility="hidden", status="fail", message="secret"),
               record("c", visibility="after_published")]
    result = valid(prairielearn.render([outputs.Graded(REPORT, records)], None))
    assert result["score"] == pytest.approx(16 / 24)
    assert [t["name"] for t in result["tests"]] == ["3.1 check a", "2 more checks"]
    assert (result["tests"][1]["points"], result["tests"][1]["max_points"]) == (8, 16)
    assert "secret" not in json.dumps(result) and "check b" not in json.dumps(result)
    assert result["output"].splitlines() == ["task 3.1    8 / 8",
                                             "checks not shown 8 / 16"]


def test_text_a_submission_controls_is_cleaned_and_bounded():
    records = [record("a", status="fail", message="\x1b[2J\x00" + "x" * 100_000)]
    result = valid(prairielearn.render([outputs.Graded(REPORT, records)], None))
    said = result["tests"][0]["message"]
    assert len(said) <= prairielearn.LIMITS["message"] and said.endswith("(shortened)")
    assert "\x1b" not in said and "\x00" not in said


def test_a_grader_problem_is_not_charged():
    report = {**REPORT, "grader_problem": True, "results": [
        {"function": "(grader)", "check": "start", "status": "error",
         "message": "the worker could not be started"}]}
    result = valid(prairielearn.render([outputs.Graded(report, [record("a")])], None))
    assert result["gradable"] is False and "the worker could not be started" in result["message"]


def test_several_files_give_one_result_each():
    graded = [outputs.Graded(REPORT, [record("a")]), outputs.Graded(REPORT, [record("b")])]
    results = json.loads(prairielearn.render(graded, None))
    assert len(results) == 2 and all(valid(json.dumps(r))["score"] == 1 for r in results)


# ---- The course's files --------------------------------------------------------------------

def test_the_course_files_hold_what_prairielearn_and_the_sandbox_need(course):
    dockerfile = (course / "Dockerfile").read_text()
    for needed in ("FROM python:", "apt-get install -y --no-install-recommends bubblewrap",
                   "pip install -r /opt/vae-grader-requirements.txt", "chmod 700 /opt/vae-grader",
                   f"COPY run_grader {prairielearn.ENTRYPOINT}", "COPY datasets /opt/vae-data"):
        assert needed in dockerfile
    assert "@@" not in dockerfile + (course / "README.md").read_text()
    pins = [line for line in (course / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert {p.split("==")[0] for p in pins} >= {"numpy", "autograd", "scipy", "matplotlib"}
    assert all("==" in p for p in pins)
    fragment = json.loads((course / "info.json").read_text())
    assert fragment["gradingMethod"] == "External"
    options = fragment["externalGradingOptions"]
    jsonschema.validate(options, {     # externalGrading/: "Configuring and enabling ..."
        "type": "object", "required": ["enabled", "image", "entrypoint", "timeout"],
        "properties": {"enabled": {"const": True}, "image": {"type": "string", "minLength": 1},
                       "entrypoint": {"type": "string", "pattern": "^/"},
                       "timeout": {"type": "integer", "minimum": 1, "maximum": 600}}})
    assert options["entrypoint"] == prairielearn.ENTRYPOINT
    assert os.stat(course / "run_grader").st_mode & stat.S_IXUSR
    assert subprocess.run(["sh", "-n", str(course / "run_grader")]).returncode == 0
    assert (course / "vae-grader" / "grader" / "rubric.toml").is_file()
    assert not list((course / "vae-grader").rglob("__pycache__"))
    assert not (course / "vae-grader" / "tests").exists()


def test_check_py_writes_the_folder_and_prints_results(tmp_path):
    out = tmp_path / "pl"
    done = subprocess.run([sys.executable, "check.py", "--autograder", "prairielearn",
                           "--output", str(out)], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0 and (out / "Dockerfile").is_file(), done.stderr
    again = subprocess.run([sys.executable, "check.py", "--autograder", "prairielearn",
                            "--output", str(out)], cwd=PROJECT, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    broken = tmp_path / "vae.py"
    broken.write_text("def f(:\n")
    printed = subprocess.run([sys.executable, "check.py", str(broken), "--format", "prairielearn"],
                             cwd=PROJECT, capture_output=True, text=True)
    assert valid(printed.stdout)["gradable"] is False
