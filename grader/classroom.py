"""GitHub Classroom: the result its autograding reporter reads, and the
workflow that produces it (docs: "GitHub Classroom").

The reporter, classroom-resources/autograding-grading-reporter@v1, reads each
runner's result from the environment variable <RUNNER ID>_RESULTS: base64 of
a JSON object {version: 1, status, max_score, tests: [{name, status, score,
message, test_code, filename, line_no, duration}]}, the object the
classroom-resources/autograding-command-grader sets as its `result` output.
It adds up the tests' scores over max_score (fractional scores are summed as
they are), prints each test's name, its message for an error and its
test_code when there is one, and fails the run when status is "fail" or
"error". Sources:
  https://github.com/classroom-resources/autograding-grading-reporter (README.md,
    src/main.js, src/notify-classroom.js, src/helpers/test-helpers.js)
  https://github.com/classroom-resources/autograding-command-grader (the result:
    generateResult, `result` output)
The reporter's README also requires the workflow's name "Autograding Tests"
and its single job "run-autograding-tests", else no score reaches Classroom.

render() returns one line, `result=<base64>`, to append to $GITHUB_OUTPUT
(the step's `result` output). Messages are a submission's: each is one line,
without control characters, bounded, and never starts a GitHub Actions
workflow command ("::..."), since the reporter prints it at a line's start.
"""
import base64
import json
import re
from pathlib import Path

from grader import outputs, rubric

REPORTER = "classroom-resources/autograding-grading-reporter@v1"
STEP = "grading"                 # the grading step's id: the reporter's runner id
ENV = STEP.upper() + "_RESULTS"  # where the reporter looks for it (src/main.js)
MESSAGE_CHARS = 600              # per test: 32 tests stay far under the 128 KiB that
                                 # Linux allows one environment variable (MAX_ARG_STRLEN)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
WITHHELD = {"after_due_date": "details after the due date",
            "after_published": "details once grades are published",
            "hidden": "details withheld"}


def one_line(text, limit=MESSAGE_CHARS):
    """text as one printable line of at most limit characters that starts no
    workflow command."""
    text = CONTROL.sub(" ", ANSI.sub("", str(text))).strip()
    if len(text) > limit:
        text = text[:limit - 1] + "\u2026"
    return "> " + text if text.startswith("::") else text


def status_of(record):
    """The reporter knows pass, fail and error; a warning passes, as in check.py's
    verdict (its points may be partial, and its test_code says why)."""
    if record.status == "error" or record.grader_error:
        return "error"
    return "pass" if record.status in ("pass", "warning") else "fail"


def test_of(record, prefix=""):
    message = record.message if record.visibility == "visible" else \
        WITHHELD.get(record.visibility, "details withheld")
    status = status_of(record)
    message = one_line(message)
    if record.status == "warning" and record.visibility == "visible":
        message = one_line("warning: " + message)
    return {"name": one_line(f"{prefix}{record.task} {record.name}", 200),
            "status": status, "score": round(record.points, 4),
            "max_score": round(record.max_points, 4), "message": message,
            # the newest reporter prints a failed test's test_code, not its message
            "test_code": message if status != "pass" or record.status == "warning" else "",
            "filename": "", "line_no": 0, "duration": round(record.seconds * 1000)}


def error_test(message):
    return {"name": "Autograder error", "status": "error", "score": 0, "max_score": 0,
            "message": one_line(message), "test_code": one_line(message), "filename": "",
            "line_no": 0, "duration": 0}


def result(tests, max_score):
    """The runner's result; its status fails the reporter's run unless "pass"."""
    status = ("error" if any(t["name"] == "Autograder error" for t in tests) else
              "pass" if all(t["status"] == "pass" for t in tests) else "fail")
    return {"version": 1, "status": status, "max_score": round(max_score, 4), "tests": tests}


def line(payload):
    encoded = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()
    return f"result={encoded}"


def render(graded, isolation):
    """The `result=<base64>` line for $GITHUB_OUTPUT: one test per rubric
    check (per file and check, the file's name first, if several files)."""
    tests, max_score = [], 0.0
    for g in graded:
        prefix = f"{Path(g.report['file']).name}: " if len(graded) > 1 else ""
        tests += [test_of(r, one_line(prefix, 80)) for r in g.records]
        max_score += rubric.total(g.records)[1]
        if g.report.get("grader_problem"):
            tests.append(error_test("the grader could not grade this file: see the workflow's "
                                    "log (the points above are not the student's)"))
    if not tests:
        why = "no file was graded" if isolation is not None else "the sandbox did not start"
        tests = [error_test(why)]
    return line(result(tests, max_score))


def fallback(rubric_path):
    """The line the workflow reports when check.py wrote nothing (an install
    step failed, vae.py is missing): 0 of the rubric's points, and why."""
    most = sum(entry.points for entry in rubric.load(rubric_path).values())
    return line(result([error_test(
        "vae.py was not graded: is it at the top of the repository? Otherwise the grader "
        "could not run; the workflow's log says why")], most))


# ---- The workflow -------------------------------------------------------------------

PLAIN_KEY = re.compile(r"[a-z][a-z0-9_-]*")
YAML11_WORDS = {"on", "off", "yes", "no", "y", "n", "true", "false", "null"}


def key_of(key):
    """A key plain where no YAML reader could take it for anything else."""
    return key if PLAIN_KEY.fullmatch(key) and key not in YAML11_WORDS else json.dumps(key)


def yaml(value, indent=0):
    """value (dicts, lists, strings, numbers) as block-style YAML: every key and string
    double-quoted (a JSON string is a YAML double-quoted scalar), keys plain if
    they are plain words ("on" quoted: YAML 1.1 reads it as true), strings with
    newlines as literal blocks."""
    pad = " " * indent
    lines = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        head = pad + ("- " if isinstance(value, list) else key_of(key) + ": ")
        if isinstance(item, dict) and isinstance(value, list):   # "- key: ..." first
            lines.append(head + yaml(item, indent + 2)[indent + 2:])
        elif isinstance(item, (dict, list)):
            lines.append(head.rstrip())
            lines.append(yaml(item, indent + 2))
        elif isinstance(item, (bool, int)):
            lines.append(head + json.dumps(item))
        elif "\n" in item:
            lines.append(head + "|")
            lines += [(pad + "  " + text) if text else "" for text in item.rstrip("\n").split("\n")]
        else:
            lines.append(head + json.dumps(item))
    return "\n".join(lines)


def rubric_step(rubric_path):
    """A shell line writing the instructor's rubric where check.py reads it."""
    text = Path(rubric_path).read_text(encoding="utf-8")
    if any(row.strip() == "RUBRIC_TOML" for row in text.splitlines()):
        raise ValueError("the rubric has a line RUBRIC_TOML, the end marker of its copy")
    return f"cat > \"$RUNNER_TEMP/rubric.toml\" <<'RUBRIC_TOML'\n{text.rstrip()}\nRUBRIC_TOML\n"


def workflow(rubric_path=None):
    """The workflow as a dict, in the order written."""
    grade = ((rubric_step(rubric_path) if rubric_path else "")
             + "set +e\n"
             "python grader/check.py submission/vae.py --format github-classroom --jobs 1 "
             "--output \"$RUNNER_TEMP/result.txt\""
             + (" --rubric \"$RUNNER_TEMP/rubric.toml\"" if rubric_path else "") + "\n"
             "echo \"check.py exited with $?\"\n"
             "if [ -s \"$RUNNER_TEMP/result.txt\" ]; then\n"
             "  cat \"$RUNNER_TEMP/result.txt\" >> \"$GITHUB_OUTPUT\"\n"
             "fi\n")
    return {
        "name": "Autograding Tests",    # the reporter's README: no other name reports scores
        "on": ["push", "workflow_dispatch", "repository_dispatch"],
        "permissions": {"checks": "write", "actions": "read", "contents": "read"},
        "jobs": {"run-autograding-tests": {
            "runs-on": "ubuntu-24.04",
            "if": "github.actor != 'github-classroom[bot]'",
            "timeout-minutes": 20,
            "steps": [
                {"name": "Check out the submission", "uses": "actions/checkout@v4",
                 "with": {"path": "submission", "persist-credentials": "false"}},
                {"name": "Check out the grader (organisation variables VAE_GRADER_REPOSITORY, "
                         "VAE_GRADER_REF)",
                 "uses": "actions/checkout@v4",
                 "with": {"repository": "${{ vars.VAE_GRADER_REPOSITORY }}",
                          "ref": "${{ vars.VAE_GRADER_REF }}",
                          "token": "${{ secrets.VAE_GRADER_TOKEN || github.token }}",
                          "path": "grader", "persist-credentials": "false"}},
                {"uses": "actions/setup-python@v5", "with": {"python-version": "3.12"}},
                {"name": "Install the grader's requirements and bubblewrap",
                 "run": "sudo apt-get update -q\nsudo apt-get install -y -q bubblewrap\n"
                        "python -m pip install -q -r grader/requirements.txt\n"},
                {"name": "Let the sandbox start: ubuntu-24.04 blocks unprivileged user "
                         "namespaces",
                 "run": "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"},
                {"name": "Grade vae.py", "id": STEP, "run": grade},
                {"name": "Autograding Reporter", "if": "always()", "uses": REPORTER,
                 "env": {ENV: "${{ steps.%s.outputs.result || '%s' }}" % (
                     STEP, fallback(rubric_path)[len("result="):])},
                 "with": {"runners": STEP}},
            ]}},
    }


HEADER = ("# GitHub Classroom autograding for the VAE practical, written by\n"
          "#   python check.py --autograder github-classroom --output DIR\n"
          "# Commit it to the assignment's template repository as\n"
          "# .github/workflows/classroom.yml; set the organisation's Actions variables\n"
          "# VAE_GRADER_REPOSITORY (owner/name of the course's copy of the grader) and\n"
          "# VAE_GRADER_REF (a commit), and the secret VAE_GRADER_TOKEN if that\n"
          "# repository is private. The student owns the repository this runs in: they\n"
          "# can read and change everything here, so no check is hidden from them.\n")


def build(output, rubric_path=None):
    """Writes output/.github/workflows/classroom.yml; returns [its path]."""
    path = Path(output) / ".github" / "workflows" / "classroom.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_text(path, HEADER + yaml(workflow(rubric_path)) + "\n")
    return [path]
