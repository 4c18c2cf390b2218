"""What check.py writes besides its table and JSON: a platform's results
(--format), the files a course installs on a platform (--autograder), and a
class at once (--csv, --json-dir, --html). All are views of the scored
records of grader/rubric.py; every file is written atomically, after the
table has been printed, and none replaces a finished one unless --overwrite.

Each platform is a module of its own with
    render(graded, isolation) -> str        the results file for one submission
    build(output, rubric_path) -> [paths]   the files a course installs
where graded is a list of Graded (one per file).
"""
import csv
import importlib
import io
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

from vaelib.runs import atomic_write

PLATFORMS = {"gradescope": "grader.gradescope", "prairielearn": "grader.prairielearn",
             "github-classroom": "grader.classroom"}
FORMATS = ("table", "json", *PLATFORMS)


class Graded(NamedTuple):
    """One file's report (grading.grade_file's) and its scored records."""
    report: dict
    records: list


def platform(name):
    return importlib.import_module(PLATFORMS[name])


def render(name, graded, isolation):
    """The --format NAME output for the graded files."""
    return platform(name).render(graded, isolation)


def build(name, output, rubric_path=None):
    """--autograder NAME --output OUTPUT: the files a course installs."""
    return platform(name).build(Path(output), rubric_path)


def write_text(path, content):
    atomic_write(path, lambda f: f.write(content.encode("utf-8")))


# ---- A class at once ------------------------------------------------------------------

def status_of(report):
    """grading_status of a CSV row: graded, or why not."""
    if report.get("grader_problem"):
        return "grader error"
    return "graded" if report["loaded"] is not None else "not graded"


def csv_text(graded):
    """One row per file: file, one column per rubric entry (points), total,
    percent, grading_status."""
    if not graded:
        return ""
    ids = [r.id for r in graded[0].records]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file", *ids, "total", "max", "percent", "grading_status"])
    for g in graded:
        points = {r.id: r.points for r in g.records}
        got, most = sum(points.values()), sum(r.max_points for r in g.records)
        writer.writerow([safe_cell(g.report["file"]), *(f"{points[i]:g}" for i in ids),
                         f"{got:g}", f"{most:g}", f"{100 * got / most:.1f}" if most else "",
                         status_of(g.report)])
    return out.getvalue()


def safe_cell(text):
    """A file name as a CSV cell that no spreadsheet runs as a formula."""
    text = str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def json_name(report, taken):
    """A file name for a report in --json-dir: its path's parts, made safe, unique."""
    parts = Path(report["file"]).with_suffix("").parts[-3:]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", "__".join(parts)).strip("._") or "submission"
    name = name[:120]
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}-{k}"
    taken.add(candidate)
    return candidate + ".json"


def record_dict(record):
    """A Record as JSON: its fields, the images by label only (the PNGs: --html)."""
    return {**{f.name: getattr(record, f.name) for f in fields(record)},
            "images": [image["label"] for image in record.images]}


def write_json_dir(folder, graded):
    """One JSON per file in folder: the report and its records."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    taken, written = set(), []
    for g in graded:
        path = folder / json_name(g.report, taken)
        body = {**{key: value for key, value in g.report.items() if key != "figures"},
                "records": [record_dict(r) for r in g.records]}   # figures: arrays, --html
        write_text(path, json.dumps(body, indent=2) + "\n")
        written.append(path)
    return written
