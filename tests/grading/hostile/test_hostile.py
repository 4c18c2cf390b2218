"""check.py against a hostile student, run as CI runs it: `python check.py`
as root with bubblewrap installed, where privileges leak.

Each attack is a small file in fixtures/, written for this project. The
privilege, exhaustion and link attacks run at the default level (bwrap) and
at the fallback level forced with --sandbox user (a uid of its own per
worker, no namespaces), which needs root, a Python that other users can run
and a project folder they cannot read: the fixture `user_project` makes a
private copy of the project and, for the session, lets other users enter
the folders on the way to Python (chmod o+x, restored at the end).
"""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from grader import isolation, sandbox

PROJECT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
STUDENT = (PROJECT / "tests" / "student_vae.py").read_text()
root_with_bwrap = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None,
    reason="the hostile suite needs root and bubblewrap, as CI has")
pytestmark = root_with_bwrap
FAST = ["--functions-only", "--import-timeout", "10", "--check-timeout", "10"]
SMALL = ["--memory", "1024", "--disk", "64", "--processes", "16"]


def run_check(*argv, project=PROJECT, env=None, timeout=900):
    """check.py as a process: (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, str(project / "check.py"), *map(str, argv)],
                          capture_output=True, timeout=timeout, cwd=project,
                          env={**os.environ, **(env or {})})
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def graded_json(*argv, **kwargs):
    code, out, err = run_check(*argv, "--json", **kwargs)
    assert out, err
    return code, json.loads(out)


def results(report, function=None):
    return {(r["function"], r["check"]): r for r in report["results"]
            if function is None or r["function"] == function}


def probe(report, function="relu"):
    """The dict an attack fixture raised from `function`."""
    message = results(report)[(function, "values")]["message"]
    found = re.search(r"PROBE(\{.*?\})(?: at line|$)", message)
    assert found, message
    return json.loads(found.group(1))


@pytest.fixture
def private_tmp():
    """A TMPDIR of the test's own for check.py (workers may pass through it),
    so that what a run leaves there is the run's."""
    folder = Path(tempfile.mkdtemp(prefix="check-tmp-"))
    os.chmod(folder, 0o711)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def user_project(tmp_path_factory):
    """A private copy of the project from which --sandbox user can grade."""
    opened = []
    for folder in isolation.closed_folders():
        mode = os.stat(folder).st_mode
        os.chmod(folder, stat.S_IMODE(mode) | 0o001)
        opened.append((folder, stat.S_IMODE(mode)))
    base = tmp_path_factory.mktemp("private")
    os.chmod(base, 0o700)
    copy = base / "project"
    copy.mkdir()
    for path in PROJECT.glob("*.py"):
        shutil.copyfile(path, copy / path.name)
    for package in ("grader", "vaelib"):
        shutil.copytree(PROJECT / package, copy / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "datasets").symlink_to(PROJECT / "datasets")
    yield copy
    for folder, mode in opened:
        os.chmod(folder, mode)


@pytest.fixture(params=["bwrap", "user"])
def level(request):
    """(--sandbox value, project folder to run check.py from)."""
    if request.param == "user":
        return "user", request.getfixturevalue("user_project")
    return "bwrap", PROJECT


def student_folder(parent, name, source, **helpers):
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "vae.py").write_text(source)
    for helper, text in helpers.items():
        (folder / f"{helper}.py").write_text(text)
    return folder / "vae.py"


# ---------------------------------------------------------------- privileges

def test_the_worker_holds_no_privilege_and_writes_nothing_outside_its_folder(tmp_path, level):
    name, project = level
    outside = Path(tempfile.mkdtemp(prefix="probe-outside-"))    # a host folder anyone may write
    os.chmod(outside, 0o777)
    attack = tmp_path / "privileges.py"
    attack.write_text((FIXTURES / "privileges.py").read_text().replace(
        "OUTSIDE += []", f"OUTSIDE += [{str(outside)!r}]"))
    try:
        code, report = graded_json(attack, *FAST, "--sandbox", name, project=project)
        left = (outside / "probe-written").exists()
    finally:
        shutil.rmtree(outside)
    found = probe(report)
    assert found["uid"] != 0 and found["euid"] != 0 and found["gid"] != 0
    assert found["groups"] in ([], [found["gid"]])
    assert found["capeff"] == 0 and found["capprm"] == 0 and found["nnp"] == "1"
    assert found["sysctl"] != "written" and found["remount"] != 0
    assert found["userns"] != 0 or name == "user"      # bwrap: no nested user namespace
    # bwrap shows it nothing of this machine to write; as a plain user it may write
    # where anyone may, and what it leaves there in /tmp is removed with it.
    assert found["written"] == ([] if name == "bwrap" else [str(outside)])
    assert report["isolation"]["level"] == name
    assert not left and sandbox.processes_of(found["uid"]) == []


IMPORTS_AND_FOLDER = '''def relu(x):
    import importlib, json, os
    found = {"cwd": sorted(os.listdir("trained_params"))}
    for name in ("grader", "grader.protocol", "grader.worker", "vae", "vaelib", "check"):
        try:
            importlib.import_module(name)
            found[name] = "imported"
        except ImportError as e:
            found[name] = type(e).__name__
    open("trained_params/new.npy", "wb").write(b"x")       # the student's folder is theirs
    found["written"] = sorted(os.listdir("trained_params"))
    raise RuntimeError("PROBE" + json.dumps(found))
'''


def test_nothing_of_the_grader_can_be_imported_and_the_student_s_folder_is_theirs(tmp_path,
                                                                                  level):
    name, project = level
    path = tmp_path / "alice" / "student.py"               # a vae.py would import itself
    (path.parent / "trained_params").mkdir(parents=True)
    path.write_text(STUDENT.replace("def relu(x):\n", IMPORTS_AND_FOLDER))
    (path.parent / "trained_params" / "old.npy").write_bytes(b"y")
    code, report = graded_json(path, *FAST, "--sandbox", name, project=project)
    found = probe(report)
    for module in ("grader", "grader.protocol", "grader.worker", "vae", "vaelib", "check"):
        assert found[module] == "ModuleNotFoundError", (module, found)
    assert "old.npy" in found["cwd"] and found["written"] == ["new.npy", "old.npy"]
    assert report["isolation"]["level"] == name


def test_two_workers_at_once_run_as_two_users(tmp_path):
    """Per-user limits separate classmates only if each worker has its own uid."""
    for student in ("a", "b"):
        student_folder(tmp_path, student, (FIXTURES / "privileges.py").read_text())
    code, output = graded_json(tmp_path, *FAST, "--jobs", "2")
    uids = {probe(report)["uid"] for report in output["files"]}
    assert len(uids) == 2 and 0 not in uids


# ---------------------------------------------------------------- the machine

def test_limits_hold_for_the_worker_and_its_children(level):
    name, project = level
    code, report = graded_json(FIXTURES / "exhaustion.py", *FAST, *SMALL, "--sandbox", name,
                               project=project)
    found = probe(report)
    assert found["processes"] < 16                      # --processes 16, threads included
    assert found["here"] <= 64 and found["fallocate"] == 0       # --disk 64: its folder
    if name == "bwrap":                                 # private, size-capped tmpfs mounts
        assert found["tmp"] <= 64 and found["shm"] <= 64
    else:   # the machine's own /tmp and /dev/shm: not capped (the report says so), but
        assert "shared" in report["isolation"]["disk"]  # emptied of its files afterwards
    assert sandbox.processes_of(found["uid"]) == []        # its children died with it
    assert not [p for p in [*Path("/tmp").glob("fill-*"), *Path("/dev/shm").glob("fill-*")]
                if p.stat().st_uid >= isolation.UID_BASE]


def test_ram_that_no_rlimit_counts_is_held_by_the_cgroup(tmp_path):
    """memfd files are RAM outside the address space: only a cgroup holds them."""
    code, report = graded_json(FIXTURES / "memfd.py", *FAST, *SMALL)
    assert report["isolation"]["memory"].endswith("(cgroup v1)") or "cgroup v2" in report[
        "isolation"]["memory"]
    message = results(report)[("sigmoid", "values")]["message"]
    assert "more than the memory limit, 1024 MiB" in message or probe(report, "sigmoid")[
        "memfd"] <= 1024, message


def test_without_a_cgroup_the_report_says_which_limits_held():
    code, report = graded_json(FIXTURES / "exhaustion.py", *FAST, *SMALL,
                               env={isolation.NO_CGROUPS: "1"})
    held = report["isolation"]
    assert "no cgroup" in held["cgroup"] and "rlimit" in held["memory"]
    found = probe(report)
    assert found["processes"] < 16 and found["tmp"] <= 64 and found["here"] <= 64


def test_a_submission_that_starves_its_classmates_costs_them_nothing(tmp_path):
    """48 spinning processes in their own sessions (each its own autogroup)
    beside three correct classmates graded at the same time."""
    student_folder(tmp_path, "attacker", (FIXTURES / "busy_children.py").read_text(),
                   student_vae=STUDENT)
    for name in ("alice", "bob", "carol"):
        student_folder(tmp_path, name, STUDENT)
    code, output = graded_json(tmp_path, "--functions-only", "--jobs", "2")
    verdicts = {Path(r["file"]).parent.name: r["verdict"] for r in output["files"]}
    assert verdicts["alice"] == verdicts["bob"] == verdicts["carol"] == "pass", output


# ---------------------------------------------------------------- the class run survives

CRASHERS = ["zip", "no_error", "bomb", "members", "nested", "not_json", "candidates"]


def test_forged_answers_fail_their_own_checks_and_the_class_run_goes_on(tmp_path, private_tmp):
    source = (FIXTURES / "forged_frames.py").read_text()
    for kind in CRASHERS:
        student_folder(tmp_path, f"forged_{kind}", f"KIND = {kind!r}\n" + source
                       + "\nfrom student_vae import *  # noqa\n", student_vae=STUDENT)
    student_folder(tmp_path, "honest", STUDENT)
    code, output = graded_json(tmp_path, "--jobs", "2", "--import-timeout", "10",
                               "--check-timeout", "10", env={"TMPDIR": str(private_tmp)})
    reports = {Path(r["file"]).parent.name: r for r in output["files"]}
    assert set(reports) == {f"forged_{kind}" for kind in CRASHERS} | {"honest"}
    assert reports["honest"]["verdict"] == "pass"
    for kind in CRASHERS:
        assert reports[f"forged_{kind}"]["verdict"] in ("fail", "error"), kind
    unreadable = [r for report in reports.values() for r in report["results"]
                  if "answer could not be read" in r["message"]]
    assert unreadable                                   # named as what it is
    assert list(private_tmp.iterdir()) == []


def test_files_that_are_not_files_each_get_one_row(tmp_path):
    """Links (to the reference, to /etc/shadow, to /dev/zero, dangling), hard
    links, a FIFO and a directory named vae.py, and a helper that is a link."""
    class_ = tmp_path / "class"
    class_.mkdir()
    reference = tmp_path / "reference_vae.py"
    shutil.copyfile(PROJECT / "vae.py", reference)
    cases = {"symlink": lambda p: p.symlink_to(PROJECT / "vae.py"),
             "hardlink": lambda p: os.link(reference, p),
             "dangling": lambda p: p.symlink_to(tmp_path / "nowhere.py"),
             "fifo": lambda p: os.mkfifo(p),
             "directory": lambda p: p.mkdir(),
             "zero": lambda p: p.symlink_to("/dev/zero"),
             "shadow": lambda p: p.symlink_to("/etc/shadow")}
    for name, make in cases.items():
        (class_ / name).mkdir()
        make(class_ / name / "vae.py")
    linked = student_folder(class_, "linked_helper", STUDENT.replace(
        "import autograd.numpy as np\n", "import autograd.numpy as np\nimport helpers  # noqa\n"))
    (linked.parent / "helpers.py").symlink_to("/etc/shadow")
    student_folder(class_, "honest", STUDENT)
    code, output = graded_json(class_, *FAST, timeout=300)
    reports = {Path(r["file"]).parent.name: r for r in output["files"]}
    assert set(reports) == {*cases, "linked_helper", "honest"}
    for name in cases:
        report = reports[name]
        assert report["verdict"] == "error" and len(report["results"]) == 1, report
        message = report["results"][0]["message"]
        assert "not a regular file" in message or "hard links" in message, message
    assert reports["honest"]["verdict"] == "pass"
    helper = reports["linked_helper"]
    assert any("helpers.py beside the file was not copied: not a regular file" in note
               for note in helper["notes"]), helper["notes"]
    assert code == 2


def test_a_deep_folder_left_in_the_sandbox_is_removed(tmp_path, level, private_tmp):
    name, project = level
    student_folder(tmp_path, "deep", (FIXTURES / "deep_folder.py").read_text(),
                   student_vae=STUDENT)
    code, report = graded_json(tmp_path, *FAST, "--sandbox", name, project=project,
                               env={"TMPDIR": str(private_tmp)})
    assert report["results"][0]["status"] == "fail"           # it wrote at import
    assert "wrote files: d" in report["results"][0]["message"]
    assert list(private_tmp.iterdir()) == []


def test_an_expression_too_deep_for_python_is_a_row(tmp_path):
    path = tmp_path / "deep_expression.py"
    path.write_text("x = " + " + ".join(["1"] * 200000) + "\n")
    code, report = graded_json(path, *FAST)
    assert report["verdict"] == "error" and "could not be parsed" in report["results"][0][
        "message"]


def test_a_file_name_that_is_not_utf8_under_a_strict_locale(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / os.fsdecode(b"\xe9tudiant.py")).write_text(STUDENT)
    code, out, err = run_check(folder, *FAST, env={"LC_ALL": "C", "LANG": "C",
                                                   "PYTHONIOENCODING": "ascii:strict"})
    assert "Traceback" not in err and "\\xe9tudiant.py" in out and code == 0, (out, err)


# ---------------------------------------------------------------- what the instructor sees

def test_no_escape_sequence_reaches_the_terminal(tmp_path):
    folder = tmp_path / "class"
    student_folder(folder, "painter", (FIXTURES / "escapes.py").read_text())
    (folder / "evil\x1b[2J.py").write_text(STUDENT)
    code, out, err = run_check(folder / "painter" / "vae.py", *FAST)
    assert "\x1b" not in out and "\x9b" not in out and "\u202e" not in out
    assert "\\x1b[2K" in out                        # shown, escaped
    code, out, err = run_check(folder, *FAST)
    assert "\x1b" not in out and "\\x1b[2J" in out and code == 1
    code, report = graded_json(folder / "painter" / "vae.py", *FAST)
    assert "\x1b[2K" in results(report)[("sigmoid", "values")]["message"]   # JSON stays exact


def test_a_module_that_imitates_bubblewrap_does_not_talk_the_grader_out_of_the_sandbox(tmp_path):
    path = student_folder(tmp_path, "student", STUDENT,
                          autograd=(FIXTURES / "shadow_autograd.py").read_text())
    code, out, err = run_check(path, *FAST)
    assert "--sandbox none" not in out + err and "did not start" not in out + err
    assert code == 0, out                        # graded with the installed autograd
    assert "autograd.py beside the file was not copied" in out


# ---------------------------------------------------------------- one verdict, any --jobs

def test_jobs_never_change_a_verdict(tmp_path):
    t_from_2 = STUDENT.replace(
        "    m, v, t = np.zeros(len(flat_params)), np.zeros(len(flat_params)), 1\n",
        "    m, v, t = np.zeros(len(flat_params)), np.zeros(len(flat_params)), 2\n")
    negated = STUDENT.replace("np.mean(bernoulli_log_prob(data, logits) - compute_KL(q))",
                              "np.mean(compute_KL(q) - bernoulli_log_prob(data, logits))")
    for name, source in [("honest", STUDENT), ("t_from_2", t_from_2), ("negated", negated),
                         ("honest_2", STUDENT)]:
        student_folder(tmp_path, name, source)
    verdicts = []
    for jobs in ("1", "2"):
        code, output = graded_json(tmp_path, "--jobs", jobs, "--import-timeout", "20")
        verdicts.append({(Path(report["file"]).parent.name, r["function"], r["check"]):
                         r["status"] for report in output["files"] for r in report["results"]})
    assert verdicts[0] == verdicts[1]
    assert verdicts[0][("t_from_2", "(training)", "Adam and the loop")] == "fail"
    assert verdicts[0][("honest", "(training)", "Adam and the loop")] == "pass"


# ---------------------------------------------------------------- an instructor without root

INSTRUCTOR = 4243


def test_an_instructor_without_root_gets_bwrap_in_a_user_namespace(tmp_path, user_project):
    """The unprivileged path: bwrap's user namespace, no cgroup, the rlimits."""
    home = Path(tempfile.mkdtemp(prefix="instructor-"))
    try:
        shutil.copytree(user_project, home / "project", symlinks=True)
        for name in ("privileges.py", "exhaustion.py"):
            shutil.copyfile(FIXTURES / name, home / name)
        for path in [home, *home.rglob("*")]:
            os.lchown(path, INSTRUCTOR, INSTRUCTOR)
        os.chmod(home, 0o700)
        done = subprocess.run(
            ["setpriv", "--reuid", str(INSTRUCTOR), "--regid", str(INSTRUCTOR), "--clear-groups",
             sys.executable, str(home / "project" / "check.py"), home / "privileges.py",
             home / "exhaustion.py", *FAST, *SMALL, "--json"],
            capture_output=True, timeout=600, cwd=home, env={**os.environ, "HOME": str(home)})
        output = json.loads(done.stdout)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert output["isolation"]["level"] == "bwrap"
    assert "user namespace" in output["isolation"]["user"] and "cgroup" in output["isolation"]
    privileges, exhaustion = (probe(report) for report in output["files"])
    assert privileges["capeff"] == 0 and privileges["nnp"] == "1" and privileges["userns"] != 0
    assert privileges["sysctl"] != "written" and privileges["written"] == []
    assert exhaustion["processes"] < 16 and exhaustion["tmp"] <= 64 and exhaustion["here"] <= 64
