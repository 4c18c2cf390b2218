"""PrairieLearn: the results of an externally graded question, and the files
a course installs to grade this practical there.

    python check.py vae.py --format prairielearn [--output results.json]
    python check.py --autograder prairielearn --output DIR
    python -m grader.prairielearn --root /grade     (the image's entrypoint runs this)

The format is PrairieLearn's "Grading results" (external grading), from
https://prairielearn.readthedocs.io/en/latest/externalGrading/ :
- results go to /grade/results/results.json (the folder is not created for
  the grader); the student's files are in /grade/student;
- `score` in [0.0, 1.0] is the only field a gradable result needs;
  `gradable: false` marks the submission "invalid, not gradable": no points
  are awarded or lost and no attempt is used; `format_errors` (a string or a
  list of strings) says why;
- `message`, `output`, `tests` (name, description, points, max_points,
  message, output, images) and `images` ([{"label", "url"}], the url "typically
  formatted as standard HTML base64 image", data:[mimetype];base64,...) are
  shown by <pl-external-grader-results>;
- "this file should be limited to 1 MB".
PrairieLearn shows every result at once: it has no visibility per test, so
the checks a rubric hides (visibility other than "visible") count in the
score but are listed as one line of points, without their names or messages.
"""
import argparse
import base64
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from grader import rubric

MAX_BYTES = 1_000_000              # "this file should be limited to 1 MB" (decimal: the safe side)
SPARE_BYTES = 4_000                # room for the note that figures were shrunk or left out
PNG = b"\x89PNG\r\n\x1a\n"
LIMITS = {"label": 120, "name": 200, "message": 2_000, "output": 1_000, "summary": 8_000,
          "format_error": 600}
STATUS_WORDS = {"pass": "PASS", "fail": "FAIL", "warning": "WARNING", "error": "ERROR",
                "skipped": "SKIPPED"}
NOT_LOADED = "the file could not be loaded"   # a file that crashes at import: graded, 0 points
NOT_YOUR_FAULT = ("The grader failed on this submission: this is not a problem in your code, "
                  "and this attempt does not count. Submit again; if it happens again, tell "
                  "your instructor.")


# ---- Text a submission controls ---------------------------------------------------------

def clean(text, limit):
    """text without control characters (newlines and tabs kept), at most limit characters."""
    text = "".join(c if c in "\n\t" or (c.isprintable() and c not in "\u2028\u2029") else "?"
                   for c in str(text))
    end = " ... (shortened)"
    return text if len(text) <= limit else text[:limit - len(end)] + end


# ---- One submission's results --------------------------------------------------------------

def not_gradable(errors, message):
    """A submission PrairieLearn does not charge: "invalid, not gradable"."""
    return {"gradable": False, "format_errors": [clean(e, LIMITS["format_error"]) for e in errors],
            "message": clean(message, LIMITS["message"]), "output": "", "tests": []}


def no_submission(found=()):
    """No vae.py in the student's files (found: the names that are there)."""
    names = sorted(found)
    there = (f" It holds: {', '.join(clean(repr(n), 60) for n in names[:10])}"
             + (f" and {len(names) - 10} more." if len(names) > 10 else ".")) if names else \
        " No file was submitted."
    return not_gradable([f"There is no vae.py in your submission.{there} Submit your "
                         "solution as a file named vae.py."],
                        "Not graded: vae.py is missing. This attempt does not count.")


def grader_failure(reason):
    """The grader itself failed: not charged, and the reason for the staff."""
    return not_gradable([NOT_YOUR_FAULT], f"Grader error: {reason}")


def load_error(report):
    return next((r for r in report["results"]
                 if (r["function"], r["check"]) == ("(module)", "load")), None)


def result_of(graded, isolation=None):
    """PrairieLearn's results for one Graded (outputs.Graded) as a dict."""
    report, records = graded.report, graded.records
    if report.get("grader_problem"):
        row = next((r for r in report["results"] if r["function"] == "(grader)"), None)
        return grader_failure(row["message"] if row else "the grading did not finish")
    load = load_error(report)
    if load is not None and not load["message"].startswith(NOT_LOADED):
        # grader/intake.py refused the file itself: a syntax error, not Python text,
        # too large, not a regular file: not gradable, so the attempt is not charged
        return not_gradable([load["message"]], "Not graded: Python cannot read your vae.py. "
                            "Fix it and submit again; this attempt does not count.")
    got, most = rubric.total(records)
    score = min(1.0, max(0.0, got / most)) if most > 0 else 0.0
    shown = [r for r in records if r.visibility == "visible"]
    tests = [test_of(r) for r in shown]
    later = [r for r in records if r.visibility != "visible"]
    if later:
        tests.append({
            "name": f"{len(later)} more checks", "description": "not shown on PrairieLearn",
            "points": sum(r.points for r in later), "max_points": sum(r.max_points for r in later),
            "message": "Your instructor has chosen not to show these checks' names and results "
                       "here; their points are in your score.", "output": ""})
    result = {"gradable": True, "score": round(score, 6), "message": summary(records, got, most),
              "output": clean(details(report, records, isolation), LIMITS["summary"]),
              "tests": tests, "images": []}
    add_images(result, [(f"{r.task} {r.name}: {image.get('label') or 'figure'}", image.get("png"))
                        for r in shown for image in r.images])
    return result


def test_of(record):
    word = STATUS_WORDS.get(record.status, record.status.upper())
    said = f"{word}: {record.message}" if record.message else word
    if record.grader_error:
        said = f"GRADER ERROR (not a problem in your code): {record.message}"
    return {"name": clean(f"{record.task} {record.name}", LIMITS["name"]),
            "description": f"task {record.task} ({record.id})",
            "points": record.points, "max_points": record.max_points,
            "message": clean(said, LIMITS["message"]),
            "output": clean(f"{word}, {record.points:g} of {record.max_points:g} points, "
                            f"{record.seconds:.1f} s", LIMITS["output"])}


def summary(records, got, most):
    """The top line: points, and what did not pass."""
    line = f"{got:g} of {most:g} points."
    for status, what in (("fail", "failed"), ("error", "could not run"),
                         ("warning", "passed with a warning"), ("skipped", "were not run")):
        names = [r.name for r in records if r.status == status and r.visibility == "visible"]
        if names:
            line += f" {len(names)} {'check' if len(names) == 1 else 'checks'} {what}: " \
                    f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''}."
    if any(r.grader_error for r in records):
        line += " Some checks could not be run by the grader (not a problem in your code)."
    return clean(line, LIMITS["message"])


def details(report, records, isolation):
    """The output panel: points per task, the grader's notes, the sandbox."""
    tasks = {}
    for r in records:                    # the checks not shown are not told apart by task
        task = f"task {r.task:<6}" if r.visibility == "visible" else "checks not shown"
        got, most = tasks.get(task, (0.0, 0.0))
        tasks[task] = (got + r.points, most + r.max_points)
    lines = [f"{task} {got:g} / {most:g}" for task, (got, most) in tasks.items()]
    lines += [f"note: {note}" for note in report.get("notes", [])[:20]]
    if isolation is not None:
        lines.append(f"graded in the sandbox: {isolation.describe().get('level', '?')}")
    return "\n".join(lines)


# ---- Figures within 1 MB ----------------------------------------------------------------

def data_url(png):
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def size_of(result):
    return len(json.dumps(result).encode("utf-8"))


def smaller(png):
    """png at half its width and height (None if it cannot be read)."""
    try:
        from PIL import Image
        with Image.open(io.BytesIO(png)) as image:
            if image.width < 32 or image.height < 32:
                return None
            image = image.resize((image.width // 2, image.height // 2))
            out = io.BytesIO()
            image.save(out, format="PNG", optimize=True)
            return out.getvalue()
    except Exception:   # noqa: BLE001  a picture that cannot be shrunk is left out
        return None


def add_images(result, images):
    """Adds (label, png bytes) to result["images"] in order while the file stays
    under MAX_BYTES: a figure too large is shrunk (half its size, up to three
    times), else left out; the message says which."""
    budget = MAX_BYTES - SPARE_BYTES - size_of(result)
    shrunk, left = [], []
    for label, png in images:
        label = clean(label, LIMITS["label"])
        if not isinstance(png, (bytes, bytearray)) or not png.startswith(PNG):
            left.append(f"{label} (not a PNG)")
            continue
        for attempt in range(4):
            entry = {"label": label, "url": data_url(bytes(png))}
            cost = len(json.dumps(entry).encode("utf-8")) + 2
            if cost <= budget:
                result["images"].append(entry)
                budget -= cost
                if attempt:
                    shrunk.append(label)
                break
            png = smaller(png) if attempt < 3 else None
            if png is None:
                left.append(label)
                break
    if shrunk or left:
        note = " To keep these results under PrairieLearn's 1 MB limit, "
        note += "; ".join(part for part in (
            f"{len(shrunk)} figure(s) were shrunk ({', '.join(shrunk)})" if shrunk else "",
            f"{len(left)} figure(s) were left out ({', '.join(left)})" if left else "") if part)
        result["message"] += clean(note + ".", SPARE_BYTES // 2)


def render(graded, isolation):
    """--format prairielearn: one submission's results.json. PrairieLearn grades one
    submission per job; given several files, a JSON list of their results, in order."""
    results = [result_of(g, isolation) for g in graded] or [no_submission()]
    return json.dumps(results[0] if len(results) == 1 else results, indent=1)


def write_results(path, result):
    from grader.outputs import write_text
    write_text(path, json.dumps(result, indent=1) + "\n")


# ---- The entrypoint's Python: grading /grade/student ------------------------------------

COURSE_RUBRIC = "course-rubric.toml"      # beside check.py in the image, if the course has one


def grade(root, home=None, extra=()):
    """Grades root/student/vae.py into root/results/results.json, whatever happens."""
    root = Path(root)
    home = Path(home) if home else Path(__file__).resolve().parent.parent
    results = root / "results" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    student = root / "student"
    target = student / "vae.py"
    if not os.path.lexists(target):
        names = [p.name for p in student.iterdir()] if student.is_dir() else []
        write_results(results, no_submission(names))
        return 0
    argv = [str(target), "--format", "prairielearn", "--output", str(results), "--overwrite",
            "--jobs", "1"]
    if (home / COURSE_RUBRIC).is_file():
        argv += ["--rubric", str(home / COURSE_RUBRIC)]
    said, reason = io.StringIO(), None
    try:        # a process of its own: whatever check.py does, this one writes the results
        done = subprocess.run([sys.executable, str(home / "check.py"), *argv, *extra],
                              cwd=home, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        said.write(done.stderr.decode("utf-8", "backslashreplace")[-20000:])
        if not results.exists():
            reason = f"check.py ended with exit code {done.returncode} and wrote no results"
    except BaseException as e:       # noqa: BLE001  results are never lost
        said.write(traceback.format_exc())
        reason = f"{type(e).__name__}: {e}"
    finally:
        sys.stderr.write(said.getvalue())
    if reason is not None and not results.exists():
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        write_results(results, grader_failure(f"{reason}; {lines[-1]}" if lines else reason))
    return 0


# ---- The files a course installs: --autograder prairielearn --output DIR ---------------------

TEMPLATES = Path(__file__).resolve().parent / "platform_files" / "prairielearn"
PROJECT_FILES = ("check.py", "data.py", "plotting.py", "vae.py")   # the reference: kept private
PACKAGES = ("grader", "vaelib")
RUNTIME = ("numpy", "autograd", "scipy", "matplotlib", "pillow", "tqdm")   # what grading imports
IMAGE = "your-dockerhub-account/vae-grader:v1"
ENTRYPOINT = "/usr/local/bin/vae-grade-prairielearn"
TIMEOUT = 300     # seconds; PrairieLearn's default is 30 and its most 600 (externalGrading/)


def pinned_requirements():
    """requirements.txt for the image: each package grading imports, at the version
    this grader runs with here (the versions its tests passed with)."""
    from importlib import metadata
    lines = ["# The versions `check.py --autograder prairielearn` was run with.\n"]
    for name in RUNTIME:
        try:
            lines.append(f"{name}=={metadata.version(name)}\n")
        except metadata.PackageNotFoundError:
            lines.append(f"{name}\n")
    return "".join(lines)


def filled(name, values):
    text = (TEMPLATES / name).read_text()
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", str(value))
    return text


def build(output, rubric_path=None):
    """Writes the folder a course builds its grading image from, and its
    question's info.json fragment -> the paths written. The folder appears
    whole or not at all (built beside it, then renamed into place)."""
    from grader.isolation import PROJECT
    output = Path(output)
    if rubric_path is not None:
        rubric.load(rubric_path)            # check.py has said what is wrong with it, if anything
    if output.exists() and not output.is_dir():
        print(f"check.py: error: {output} is a file; --autograder prairielearn writes a "
              "folder", file=sys.stderr)
        raise SystemExit(2)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        project = work / "vae-grader"
        project.mkdir()
        for name in PROJECT_FILES:
            shutil.copyfile(PROJECT / name, project / name)
        for package in PACKAGES:
            shutil.copytree(PROJECT / package, project / package,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if rubric_path is not None:
            shutil.copyfile(rubric_path, project / COURSE_RUBRIC)
        shutil.copytree(PROJECT / "datasets", work / "datasets", symlinks=False)
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        values = {"PYTHON": version, "IMAGE": IMAGE, "ENTRYPOINT": ENTRYPOINT,
                  "TIMEOUT": TIMEOUT, "RUBRIC": "yes: " + COURSE_RUBRIC if rubric_path else
                  "no: the default grader/rubric.toml"}
        (work / "Dockerfile").write_text(filled("Dockerfile", values))
        (work / "requirements.txt").write_text(pinned_requirements())
        (work / "run_grader").write_text(filled("run_grader", values))
        os.chmod(work / "run_grader", 0o755)
        (work / "README.md").write_text(filled("README.md", values))
        # "gradingMethod": "External": PrairieLearn's Python grader page, "Setting up"
        # (https://prairielearn.readthedocs.io/en/latest/python-grader/)
        fragment = {"gradingMethod": "External",
                    "externalGradingOptions": {"enabled": True, "image": IMAGE,
                                               "entrypoint": ENTRYPOINT, "timeout": TIMEOUT}}
        (work / "info.json").write_text(json.dumps(fragment, indent=2) + "\n")
        os.chmod(work, 0o755)
        if output.exists():                 # --overwrite: the old folder goes only now
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            os.replace(output, old / "old")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(work, output)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return [output / name for name in ("Dockerfile", "run_grader", "info.json", "README.md",
                                       "requirements.txt", "vae-grader", "datasets")]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Grade a PrairieLearn job's vae.py.")
    parser.add_argument("--root", default=os.environ.get("VAE_GRADE_ROOT", "/grade"),
                        help="the job's folder, holding student/ (default: /grade)")
    args = parser.parse_args(argv)
    extra = shlex.split(os.environ.get("VAE_CHECK_ARGS", ""))
    return grade(args.root, extra=extra)

if __name__ == "__main__":
    sys.exit(main())
