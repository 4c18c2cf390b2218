"""The rubric (grader/rubric.toml, grader/rubric.py) and the class outputs
(grader/outputs.py): the default weighting covers every check check.py
reports, an override's mistakes are one line each, every kind of report
becomes one scored record per check, and the CSV and --json-dir say what
was earned."""
import csv
import io
import json
from pathlib import Path

import pytest

import check
from graded import graded
from grader import checks, outputs, rubric

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
FAST = ["--import-timeout", "5", "--check-timeout", "5", "--memory", "2048"]
SCRIPT_PARTS = ("(script)", "(training)", "(figures)")
ONLY_ON_FAILURE = {("(module)", "load"), ("(script)", "what it sent back")}


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def honest(tmp_path_factory):
    """The plain correct student file, graded whole: functions, script, figures."""
    return graded(write(tmp_path_factory.mktemp("honest"), "vae.py", STUDENT), FAST)


def by_id(records):
    return {r.id: r for r in records}


# ---- The default rubric ---------------------------------------------------------------

def test_the_default_rubric_sums_to_100_and_covers_every_check_reported(honest):
    default = rubric.load()
    assert sum(e.points for e in default.values()) == 100
    scored = {(e.function, e.check) for e in default.values()}
    assert len(scored) == len(default)                      # no check scored twice
    function_checks = {(f, name) for f, pairs in checks.CHECKS.items() for name, _ in pairs}
    reported = {(r["function"], r["check"]) for r in honest["results"]}
    script_checks = {pair for pair in reported if pair[0] in SCRIPT_PARTS}
    assert len(script_checks) == 7
    # a renamed or added check would earn nothing: every check is in the rubric, and back
    assert scored == function_checks | script_checks | {("(module)", "import has no side effects")}
    assert reported == scored
    assert {e.task.split(".")[0] for e in default.values() if e.function in SCRIPT_PARTS} \
        == {"2", "3"}


OVERRIDES = {   # name: (file's text or None for no file, words of the one-line error)
    "unknown_id": ('[checks."kl.value"]\npoints = 3\n', 'checks."kl.value": no such check'),
    "unknown_field": ('[checks."kl.values"]\nweight = 3\n', "'weight' cannot be set here"),
    "wrong_type": ('[checks."kl.values"]\npoints = "3"\n', "points must be a number"),
    "negative_points": ('[checks."kl.values"]\npoints = -1\n', "points must be between 0"),
    "warning_above_1": ('[checks."kl.values"]\nwarning = 1.5\n', "between 0 and 1, not 1.5"),
    "bad_visibility": ('[checks."kl.values"]\nvisibility = "later"\n',
                       "visibility must be one of visible, after_due_date"),
    "not_toml": ('[checks."kl.values"\npoints = 3\n', "not valid TOML"),
    "unknown_section": ('[points]\nkl = 3\n', "unknown section 'points'"),
    "missing_file": (None, "no such file"),
}


@pytest.mark.parametrize("name", OVERRIDES)
def test_each_mistake_in_an_override_is_one_line_and_exit_2(tmp_path, capsys, name):
    text, words = OVERRIDES[name]
    mine = tmp_path / "mine.toml"
    if text is not None:
        mine.write_text(text)
    with pytest.raises(SystemExit) as stop:
        check.main([str(write(tmp_path, "vae.py", STUDENT)), "--rubric", str(mine)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and ": error: argument --rubric: " in err
    assert words in err and str(mine) in err


def test_an_override_changes_only_what_it_names(tmp_path):
    mine = write(tmp_path, "mine.toml", '[checks."bound.gradient"]\npoints = 8\ntask = "1.6"\n'
                                        'visibility = "after_due_date"\n')
    default, changed = rubric.load(), rubric.load(mine)
    assert list(changed) == list(default)
    assert changed["bound.gradient"] == rubric.Entry(
        "bound.gradient", "vae_lower_bound", "gradient through autograd", "1.6", 8.0,
        1.0, "after_due_date")
    assert {k: v for k, v in changed.items() if k != "bound.gradient"} == \
        {k: v for k, v in default.items() if k != "bound.gradient"}


# ---- Records ----------------------------------------------------------------------------

def test_an_honest_report_earns_everything_but_half_the_stability_check(honest):
    records = by_id(rubric.records(honest, rubric.load()))
    assert list(records) == list(rubric.load())
    extremes = records.pop("loglik.extremes")
    assert (extremes.status, extremes.points, extremes.max_points) == ("warning", 1.0, 2.0)
    assert all(r.status == "pass" and r.points == r.max_points for r in records.values())
    assert rubric.total(rubric.records(honest, rubric.load())) == (99.0, 100.0)
    seconds = {(r["function"], r["check"]): r["seconds"] for r in honest["results"]
               if "seconds" in r}
    default = rubric.load()
    assert len(seconds) >= 24 and all(
        records[id].seconds == seconds.get((e.function, e.check), 0.0)
        for id, e in default.items() if id != "loglik.extremes")
    assert not any(r.grader_error for r in records.values())


def test_a_missing_function_fails_its_checks_and_functions_only_skips_the_script(tmp_path):
    path = write(tmp_path, "vae.py", STUDENT.replace("def compute_KL(", "def compute_kl("))
    records = by_id(rubric.records(graded(path, [*FAST, "--functions-only"]), rubric.load()))
    for id in ("kl.shape", "kl.zero", "kl.known", "kl.values"):
        assert records[id].status == "fail" and records[id].points == 0
        assert records[id].message == "vae.py defines no function compute_KL"
    assert records["sampler.moments"].status == "pass"
    script = [r for r in records.values() if r.id.split(".")[0] in ("script", "training",
                                                                      "figures")]
    assert len(script) == 7
    assert all(r.status == "skipped" and r.points == 0 and "--functions-only" in r.message
               for r in script)


def test_an_unloadable_file_makes_every_record_an_error(tmp_path):
    report = graded(write(tmp_path, "vae.py", "import numpy\ndef f(:\n"), FAST)
    records = rubric.records(report, rubric.load())
    assert {r.status for r in records} == {"error"} and rubric.total(records)[0] == 0
    assert all(r.message.startswith("syntax error at line 2") for r in records)
    assert not any(r.grader_error for r in records)


def test_a_grader_failure_is_flagged_on_every_record(tmp_path):
    report = graded(write(tmp_path, "vae.py", STUDENT), [*FAST, "--memory", "60"])
    records = rubric.records(report, rubric.load())
    assert all(r.grader_error and r.status == "error" and r.points == 0 for r in records)
    assert all("raise --memory" in r.message for r in records)


def synthetic(results, file="vae.py", loaded="full"):
    return {"file": file, "loaded": loaded, "verdict": "fail", "results": [
        {"function": f, "check": c, "status": s, "message": m} for f, c, s, m in results]}


def test_a_script_stopped_early_leaves_training_and_figures_not_judged_and_says_why():
    report = synthetic([("(script)", "runs as a script", "error", "did not finish within 60 s")])
    records = by_id(rubric.records(report, rubric.load()))
    assert records["script.runs"].status == "error"
    for id in ("training.adam", "figures.prior"):
        assert records[id].status == "skipped" and "did not finish within 60 s" in \
            records[id].message and "--functions-only" not in records[id].message


@pytest.mark.parametrize("warning, earned", [(None, 1.0), (0, 0.0), (1, 2.0), (0.25, 0.5)])
def test_a_warning_earns_its_share_of_the_points(tmp_path, warning, earned):
    mine = None
    if warning is not None:
        mine = write(tmp_path, "mine.toml", f'[checks."loglik.extremes"]\nwarning = {warning}\n')
    report = synthetic([("bernoulli_log_prob", "exact at logits +-1000", "warning", "nan")])
    record = by_id(rubric.records(report, rubric.load(mine)))["loglik.extremes"]
    assert (record.points, record.max_points, record.status) == (earned, 2.0, "warning")


# ---- The class CSV and --json-dir ----------------------------------------------------------

def test_the_csv_has_a_column_per_check_totals_percent_and_status(honest):
    default = rubric.load()
    reports = [honest, {**honest, "file": "=HYPERLINK(\"x\").py"},
               synthetic([("(module)", "load", "error", "syntax error")], "b.py", None),
               {**synthetic([("(grader)", "start", "error", "raise --memory")], "c.py", None),
                "grader_problem": True}]
    text = outputs.csv_text([outputs.Graded(r, rubric.records(r, default)) for r in reports])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["file", *default, "total", "max", "percent", "grading_status"]
    assert len(rows) == 5 and all(len(row) == len(rows[0]) for row in rows)
    cells = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert [c["total"] for c in cells] == ["99", "99", "0", "0"]
    assert {c["max"] for c in cells} == {"100"} and cells[0]["percent"] == "99.0"
    assert [c["grading_status"] for c in cells] == ["graded", "graded", "not graded",
                                                    "grader error"]
    assert cells[0]["loglik.extremes"] == "1" and cells[0]["kl.values"] == "3"
    assert cells[1]["file"].startswith("'=")                 # never run as a formula
    assert sum(float(cells[0][id]) for id in default) == 99


def test_json_dir_one_unique_file_per_submission(tmp_path):
    reports = [synthetic([], f) for f in ("a/alice/vae.py", "b/alice/vae.py", "a/alice/vae.py",
                                          "../../etc/x y.py", "=cmd.py")]
    written = outputs.write_json_dir(tmp_path / "out",
                                     [outputs.Graded(r, rubric.records(r, rubric.load()))
                                      for r in reports])
    assert len({p.name for p in written}) == 5 and {p.parent for p in written} == {tmp_path / "out"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in written)
    for path, report in zip(written, reports):
        body = json.loads(path.read_text())
        assert body["file"] == report["file"] and len(body["records"]) == len(rubric.load())
        assert body["records"][0]["id"] == "module.import" and body["records"][0]["images"] == []


def test_json_dir_never_writes_over_a_finished_run_without_overwrite(tmp_path, capsys):
    vae = str(write(tmp_path, "vae.py", STUDENT))
    folder = tmp_path / "json"
    folder.mkdir()
    assert check.parse_args([vae, "--json-dir", str(folder)]).json_dir == folder   # empty: fine
    (folder / "vae.json").write_text("{}")
    with pytest.raises(SystemExit) as stop:
        check.parse_args([vae, "--json-dir", str(folder)])
    assert stop.value.code == 2 and "--overwrite" in capsys.readouterr().err
    assert check.parse_args([vae, "--json-dir", str(folder), "--overwrite"]).overwrite


def test_the_documented_default_weighting_is_the_shipped_rubric():
    """docs/platforms.md's table (task, id, points, warning share) is grader/rubric.toml."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "platforms.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1].startswith("`") and cells[1].endswith("`"):
            task, id, _, points, share = cells
            rows[id.strip("`")] = (task, float(points), float(share) if share else 1.0)
    assert rows == {e.id: (e.task, e.points, e.warning) for e in rubric.load().values()}
