"""Points: the rubric that turns check.py's report into scored records.

The default rubric ships as grader/rubric.toml (its header explains the
fields); an instructor overrides it with a TOML file of the same form that
names only what changes (`--rubric FILE`). Every mistake in that file is one
line that says what was wrong and where ("mine.toml: checks.\"kl.value\": no
such check; the checks are bound.batch-mean, ..."), never a traceback.

records(report, rubric) is the one internal record per check that every
output format is a view of: Gradescope's results.json, PrairieLearn's, GitHub
Classroom's, the class CSV and the HTML pages (grader/platforms.py and
grader/pages.py).
"""
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "rubric.toml"
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")
FIELDS = {"function": str, "check": str, "task": str, "points": (int, float),
          "warning": (int, float), "visibility": str}
CHANGEABLE = ("task", "points", "warning", "visibility")   # what an override may set
MAX_POINTS = 10000


class RubricError(Exception):
    """A rubric file that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Entry:
    id: str
    function: str
    check: str
    task: str
    points: float
    warning: float = 1.0
    visibility: str = "visible"


@dataclass
class Record:
    """One check of one submission, scored: what every output format shows."""
    id: str                 # the rubric's id, e.g. "kl.values"
    name: str               # "compute_KL: values"
    task: str               # "1.3"
    points: float           # earned
    max_points: float
    status: str             # pass, fail, warning, error, skipped
    message: str
    visibility: str
    images: list = field(default_factory=list)   # [{"label", "png" (bytes)}], figures only
    seconds: float = 0.0
    grader_error: bool = False


def read(path):
    """The TOML file at path as a dict; RubricError in one line if it is not."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise RubricError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RubricError(f"{path}: cannot be read ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise RubricError(f"{path}: not valid TOML ({e})") from None


def checked_value(where, key, value):
    """value of a rubric field, validated; RubricError naming where otherwise."""
    kinds = FIELDS[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        wanted = "a number" if key in ("points", "warning") else "a string"
        raise RubricError(f"{where}: {key} must be {wanted}, not {value!r}")
    if key == "points" and not (math.isfinite(value) and 0 <= value <= MAX_POINTS):
        raise RubricError(f"{where}: points must be between 0 and {MAX_POINTS}, not {value!r}")
    if key == "warning" and not (math.isfinite(value) and 0 <= value <= 1):
        raise RubricError(f"{where}: warning is the share of the points a warning earns, "
                          f"between 0 and 1, not {value!r}")
    if key == "visibility" and value not in VISIBILITIES:
        raise RubricError(f"{where}: visibility must be one of {', '.join(VISIBILITIES)}, "
                          f"not {value!r}")
    if key == "task" and not (0 < len(value) <= 20 and value.replace(".", "").isalnum()):
        raise RubricError(f"{where}: task must be a task number such as \"1.3\", not {value!r}")
    return float(value) if key in ("points", "warning") else value


def entries_of(data, name, base=None):
    """The entries of a parsed rubric file; with base (the default's entries),
    an override: only known ids and CHANGEABLE fields."""
    unknown = set(data) - {"checks"}
    if unknown:
        raise RubricError(f"{name}: unknown section {sorted(unknown)[0]!r}; a rubric has only "
                          "[checks.\"ID\"] tables")
    checks = data.get("checks", {})
    if not isinstance(checks, dict):
        raise RubricError(f"{name}: checks must be tables, [checks.\"ID\"]")
    entries = dict(base or {})
    for id, fields in checks.items():
        where = f"{name}: checks.\"{id}\""
        if not isinstance(fields, dict):
            raise RubricError(f"{where} must be a table of fields")
        if base is not None and id not in base:
            raise RubricError(f"{where}: no such check; the checks are {', '.join(sorted(base))}")
        allowed = CHANGEABLE if base is not None else tuple(FIELDS)
        for key in fields:
            if key not in allowed:
                raise RubricError(f"{where}: {key!r} cannot be set here; the fields are "
                                  f"{', '.join(allowed)}")
        values = {key: checked_value(where, key, value) for key, value in fields.items()}
        if base is not None:
            entries[id] = replace(base[id], **values)
            continue
        missing = [key for key in ("function", "check", "task", "points") if key not in values]
        if missing:
            raise RubricError(f"{where}: missing {missing[0]}")
        entries[id] = Entry(id=id, **values)
    return entries


def load(path=None):
    """The default rubric, overridden by the file at path if given: {id: Entry}."""
    rubric = entries_of(read(DEFAULT), DEFAULT.name)
    if path is None:
        return rubric
    return entries_of(read(path), str(path), rubric)


# ---- Scoring a report --------------------------------------------------------------

def earned(entry, status):
    if status == "pass":
        return entry.points
    return entry.points * entry.warning if status == "warning" else 0.0


GRADER_WORDS = "the grader could not"


def images_of(report, entry):
    """A figure check's images as PNGs, the student's and the reference's
    (grader/thumbnails.py), if grading kept them; else []."""
    figure = (report.get("figures") or {}).get(entry.check) if entry.function == "(figures)" \
        else None
    if not figure:
        return []
    from grader import thumbnails
    return thumbnails.pngs(figure)


def records(report, rubric, images=True):
    """report: grading.grade_file's. -> one Record per rubric entry, in the
    rubric's order, with the figures' PNGs if images (only pages show them). A check that did not run is "skipped" and earns nothing,
    with the reason: the file could not be loaded, the function is missing, or
    what stopped the grading (a grader's failure is flagged grader_error)."""
    rows = {(r["function"], r["check"]): r for r in report["results"]}
    grader_rows = [r for r in report["results"] if r["function"] == "(grader)"]
    load_error = next((r for r in report["results"]
                       if (r["function"], r["check"]) == ("(module)", "load")), None)
    # the script ran but its training and figures were not judged (timed out, unreadable)
    script_stop = next((r for r in report["results"]
                        if r["function"] == "(script)" and r["status"] != "pass"), None)
    out = []
    for entry in rubric.values():
        row = rows.get((entry.function, entry.check))
        missing = rows.get((entry.function, "defined"))
        grader_error = bool(grader_rows) and row is None
        if row is not None:
            status, message = row["status"], row["message"]
            grader_error = message.startswith(GRADER_WORDS)
        elif missing is not None:
            status, message = "fail", missing["message"]
        elif grader_rows:
            status, message = "error", grader_rows[0]["message"]
        elif load_error is not None:
            status, message = "error", load_error["message"]
        elif entry.function in ("(training)", "(figures)") and script_stop is not None:
            status, message = "skipped", (f"not judged: the script's run ended early "
                                          f"({script_stop['check']}: {script_stop['message']})")
        else:
            status, message = "skipped", ("not run: " + (
                "--functions-only" if entry.function in ("(script)", "(training)", "(figures)")
                else f"the file defines no {entry.function}"))
        name = entry.check if entry.function.startswith("(") else \
            f"{entry.function}: {entry.check}"
        out.append(Record(id=entry.id, name=name, task=entry.task,
                          points=earned(entry, status), max_points=entry.points, status=status,
                          message=message, visibility=entry.visibility,
                          images=images_of(report, entry) if images else [],
                          seconds=float((row or {}).get("seconds", 0.0)),
                          grader_error=grader_error))
    return out


def total(records_):
    """(points earned, points possible)."""
    return sum(r.points for r in records_), sum(r.max_points for r in records_)
