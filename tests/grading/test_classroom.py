"""GitHub Classroom (grader/classroom.py): the result line the autograding
reporter reads, validated against the format its sources define, and the
workflow that produces it, read back with a strict parser of the YAML subset
it is written in (the project has no YAML library), down to running its
grading step's shell script as the runner would."""
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

import check
from graded import graded
from grader import classroom, outputs, rubric
from grader.rubric import Record

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
FAST = ["--import-timeout", "5", "--check-timeout", "5", "--memory", "2048", "--functions-only"]

# The runner's result as the reporter reads it: base64 JSON in <ID>_RESULTS
# (https://github.com/classroom-resources/autograding-grading-reporter, src/main.js:
# JSON.parse of the decoded variable; src/helpers/test-helpers.js and
# src/notify-classroom.js: max_score, tests[].score summed, tests[].status "pass"
# counted; src/main.js: results.status "fail" or "error" fails the run), as
# https://github.com/classroom-resources/autograding-command-grader writes it
# (version 1, status, max_score, tests [{name, status, score, message, test_code,
# filename, line_no, duration}]).
STATUS = {"enum": ["pass", "fail", "error"]}
SCHEMA = {
    "type": "object",
    "required": ["version", "status", "max_score", "tests"],
    "properties": {
        "version": {"const": 1},
        "status": STATUS,
        "max_score": {"type": "number", "minimum": 0},
        "tests": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["name", "status", "score", "message", "test_code", "line_no"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "status": STATUS,
                "score": {"type": "number", "minimum": 0},
                "max_score": {"type": "number", "minimum": 0},
                "message": {"type": "string"},
                "test_code": {"type": "string"},
                "filename": {"type": "string"},
                "line_no": {"type": "integer"},
                "duration": {"type": "number", "minimum": 0}}}}},
}


def decoded(line):
    """The reporter's view of a `result=<base64>` line, validated."""
    assert line.startswith("result=") and "\n" not in line.strip()
    payload = json.loads(base64.b64decode(line.strip()[len("result="):], validate=True))
    jsonschema.validate(payload, SCHEMA)
    return payload


def rendered(path, *extra):
    report = graded(path, [*FAST, *extra])
    return decoded(classroom.render([outputs.Graded(report, rubric.records(
        report, rubric.load()))], None))


def test_a_file_with_a_mistake_loses_that_check_s_points_only(tmp_path):
    path = tmp_path / "vae.py"
    path.write_text(STUDENT.replace("return np.mean(bernoulli_log_prob",
                                    "return np.sum(bernoulli_log_prob"))
    result = rendered(path)
    tests = {t["name"]: t for t in result["tests"]}
    wrong = tests["1.4 vae_lower_bound: mean over the batch"]
    assert wrong["status"] == "fail" and wrong["score"] == 0 and wrong["max_score"] == 2
    assert "sums over the batch" in wrong["message"] and wrong["test_code"] == wrong["message"]
    assert tests["1.3 compute_KL: values"] == {**tests["1.3 compute_KL: values"],
                                                "status": "pass", "score": 3}
    stable = tests["1.2 bernoulli_log_prob: exact at logits +-1000"]   # half the points
    assert stable["status"] == "pass" and stable["score"] == 1 and "warning" in stable["test_code"]
    assert result["status"] == "fail" and result["max_score"] == 100
    lost = {name for name, t in tests.items() if t["score"] < t["max_score"]}
    assert lost == {"1.2 bernoulli_log_prob: exact at logits +-1000",   # half: 1 point
                    "1.4 vae_lower_bound: value with the posterior noise off",    # 4
                    "1.4 vae_lower_bound: mean over the batch",                   # 2
                    "1.4 vae_lower_bound: gradient through autograd",             # 4
                    "2.1 runs as a script", "2.2 trained parameters found", "2.3 the ELBO rises",
                    "2.4 Adam and the loop", "3.1 25 prior samples",      # --functions-only
                    "3.2 10 test images and their reconstructions", "3.3 five interpolations"}
    assert sum(t["score"] for t in result["tests"]) == 4 + 52 - 1 - 4 - 2 - 4


def test_a_file_that_does_not_parse_earns_nothing_and_says_why(tmp_path):
    path = tmp_path / "vae.py"
    path.write_text("def f(:\n")
    result = rendered(path)
    assert result["status"] == "fail" and result["max_score"] == 100
    assert {t["score"] for t in result["tests"]} == {0}
    assert all("syntax error at line 1" in t["message"] for t in result["tests"])


def test_a_grader_failure_is_an_autograder_error_not_the_student_s(tmp_path):
    path = tmp_path / "vae.py"
    path.write_text(STUDENT)
    result = rendered(path, "--memory", "60")
    assert result["status"] == "error"
    assert result["tests"][-1]["name"] == "Autograder error"
    assert {t["status"] for t in result["tests"]} == {"error"}


def test_hostile_messages_are_one_bounded_line_that_starts_no_workflow_command():
    report = {"file": "vae.py", "loaded": "full", "results": [], "verdict": "fail"}
    evil = ["::add-mask::x\n::set-output name=result::forged", "\x1b[32mPASS\x1b[0m\r\nok",
            "A" * 1_000_000, "\u2028::stop-commands::t"]
    records = [Record(id=f"x{i}", name=f"n{i}", task="1.1", points=0.0, max_points=1.0,
                      status="fail", message=m, visibility="visible")
               for i, m in enumerate(evil * 8)]
    line = classroom.render([outputs.Graded(report, records)], None)
    assert len(line) < 64 * 1024      # far under Linux's 128 KiB for one environment variable
    for test in decoded(line)["tests"]:
        for text in (test["message"], test["test_code"], test["name"]):
            assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", text)
            assert not text.lstrip().startswith("::") and len(text) <= classroom.MESSAGE_CHARS


def test_fractional_points_and_withheld_messages():
    report = {"file": "vae.py", "loaded": "full", "results": [], "verdict": "pass"}
    records = [Record(id="a", name="a", task="1.2", points=0.25, max_points=0.5,
                      status="warning", message="secret detail", visibility="after_due_date")]
    test = decoded(classroom.render([outputs.Graded(report, records)], None))["tests"][0]
    assert test["score"] == 0.25 and test["status"] == "pass"
    assert "secret" not in json.dumps(test) and "due date" in test["message"]


# ---- The workflow -------------------------------------------------------------------

KEY = r'([a-z][a-z0-9_-]*|"[^"]+")'


def parse_yaml(text):
    """The block YAML classroom.yaml writes, strictly: comments only before
    the document, "key: value", "key:" with a nested block, "- " items, "key: |"
    literal blocks, double-quoted (JSON) strings and plain integers; anything
    else fails the test."""
    lines = text.split("\n")
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()

    def indent(k):
        return len(lines[k]) - len(lines[k].lstrip(" "))

    def scalar(text):
        if re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        assert text.startswith('"'), text
        return json.loads(text)

    def block(k, level):
        if lines[k][level:].startswith("- "):
            items = []
            while k < len(lines) and indent(k) == level and lines[k][level:].startswith("- "):
                content = lines[k][level + 2:]
                if re.match(KEY + r":( |$)", content):      # "- key: ...": a mapping
                    lines[k] = " " * (level + 2) + content
                    item, k = block(k, level + 2)
                else:
                    item, k = scalar(content), k + 1
                items.append(item)
            return items, k
        mapping = {}
        while k < len(lines) and indent(k) == level and not lines[k][level:].startswith("- "):
            match = re.fullmatch(KEY + r": ?(.*)", lines[k][level:])
            assert match, lines[k]
            key, rest = match.group(1).strip('"'), match.group(2)
            assert key not in mapping, key
            if rest == "|":
                k, body = k + 1, []
                while k < len(lines) and (not lines[k] or indent(k) > level):
                    body.append(lines[k][level + 2:])
                    k += 1
                mapping[key] = "\n".join(body) + "\n"
            elif rest == "":
                mapping[key], k = block(k + 1, indent(k + 1))
                assert indent(k - 1) > level
            else:
                mapping[key], k = scalar(rest), k + 1
        return mapping, k

    value, end = block(0, 0)
    assert end == len(lines), f"line {end}: {lines[end]!r}"
    return value


def workflow_of(tmp_path, *extra):
    out = tmp_path / "template"
    assert check.main(["--autograder", "github-classroom", "--output", str(out), *extra]) == 0
    path = out / ".github" / "workflows" / "classroom.yml"
    return path, parse_yaml(path.read_text())


def test_the_workflow_reports_under_the_names_the_reporter_requires(tmp_path):
    path, flow = workflow_of(tmp_path)
    assert flow == parse_yaml(classroom.HEADER + classroom.yaml(classroom.workflow()))
    assert flow["name"] == "Autograding Tests" and list(flow["jobs"]) == ["run-autograding-tests"]
    job = flow["jobs"]["run-autograding-tests"]
    assert job["runs-on"] == "ubuntu-24.04" and isinstance(job["timeout-minutes"], int)
    steps = job["steps"]
    runs = [s.get("run", "") for s in steps]
    sysctl = next(i for i, r in enumerate(runs)
                  if "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in r)
    grading = next(i for i, s in enumerate(steps) if "check.py" in s.get("run", ""))
    assert any("apt-get install" in r and "bubblewrap" in r for r in runs[:grading])
    assert sysctl < grading and "--format github-classroom" in runs[grading]
    reporter = steps[-1]
    assert reporter["uses"].startswith("classroom-resources/autograding-grading-reporter@")
    assert reporter["if"] == "always()"
    runner = reporter["with"]["runners"]
    assert runner == steps[grading]["id"]
    (env, value), = reporter["env"].items()
    assert env == runner.upper() + "_RESULTS"            # what the reporter reads
    fallback = re.fullmatch(r"\$\{\{ steps\.(\S+)\.outputs\.result \|\| '([A-Za-z0-9+/=]+)' \}\}",
                            value)
    assert fallback and fallback.group(1) == runner
    result = decoded("result=" + fallback.group(2))
    assert result["status"] == "error" and result["max_score"] == 100


def test_a_rubric_override_travels_inside_the_workflow(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text('# points\n[checks."bound.gradient"]\npoints = 14\n\tvisibility = "hidden"\n')
    _, flow = workflow_of(tmp_path, "--rubric", str(mine))
    steps = flow["jobs"]["run-autograding-tests"]["steps"]
    script = next(s["run"] for s in steps if "check.py" in s.get("run", ""))
    copy = re.search(r"<<'RUBRIC_TOML'\n(.*?)\nRUBRIC_TOML\n", script, re.S).group(1)
    assert copy + "\n" == mine.read_text() and '--rubric "$RUNNER_TEMP/rubric.toml"' in script
    value = steps[-1]["env"]["GRADING_RESULTS"]
    assert decoded("result=" + value.split("'")[1])["max_score"] == 110


def run_grading_step(tmp_path, submission_files):
    """The workflow's grading step, run by bash as the runner runs it: the
    grader checked out under grader/ (here: this project), the student's
    repository under submission/; -> what it appended to $GITHUB_OUTPUT."""
    _, flow = workflow_of(tmp_path)
    steps = flow["jobs"]["run-autograding-tests"]["steps"]
    script = next(s["run"] for s in steps if s.get("id") == "grading")
    work = tmp_path / "workspace"
    (work / "submission").mkdir(parents=True)
    (work / "grader").symlink_to(check.PROJECT)
    for name, text in submission_files.items():
        (work / "submission" / name).write_text(text)
    (tmp_path / "temp").mkdir()
    output = tmp_path / "github_output"
    output.write_text("earlier=1\n")
    env = {**os.environ, "RUNNER_TEMP": str(tmp_path / "temp"), "GITHUB_OUTPUT": str(output),
           "OPENBLAS_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return output.read_text().splitlines()


def test_the_grading_step_puts_the_result_in_the_step_s_output(tmp_path):
    lines = run_grading_step(tmp_path, {"vae.py": STUDENT})
    assert lines[0] == "earlier=1" and len(lines) == 2
    result = decoded(lines[1])
    assert result["status"] == "pass" and result["max_score"] == 100
    assert sum(t["score"] for t in result["tests"]) == 99      # the stability warning: 1 of 2
    names = {t["name"] for t in result["tests"]}
    assert {"2.4 Adam and the loop", "3.3 five interpolations"} <= names


def test_without_vae_py_the_step_writes_nothing_and_the_fallback_reports(tmp_path):
    assert run_grading_step(tmp_path, {"other.py": STUDENT}) == ["earlier=1"]


def test_build_refuses_to_write_over_a_finished_template(tmp_path, capsys):
    workflow_of(tmp_path)
    with pytest.raises(SystemExit) as stop:
        check.main(["--autograder", "github-classroom", "--output", str(tmp_path / "template")])
    assert stop.value.code == 2 and "--overwrite" in capsys.readouterr().err
