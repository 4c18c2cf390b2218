"""grader/intake.py and grader/report.py: class folders are walked and files
read without trusting them, and nothing a submission names reaches the
terminal raw. Fast: no worker is started."""
import os
import subprocess
from pathlib import Path

import pytest

from grader import intake, report
from grader.intake import Found, Rejected

HONEST = "import autograd.numpy as np\n\ndef relu(x):\n    return np.maximum(0, x)\n"


def test_a_regular_file_is_read(tmp_path):
    path = tmp_path / "vae.py"
    path.write_text(HONEST)
    assert intake.read_regular(path) == HONEST.encode()


@pytest.mark.parametrize("make, words", [
    (lambda p, t: p.symlink_to(t / "real.py"), "it is a symbolic link"),
    (lambda p, t: p.symlink_to(t / "missing.py"), "it is a symbolic link"),
    (lambda p, t: p.symlink_to("/dev/zero"), "it is a symbolic link"),
    (lambda p, t: os.link(t / "real.py", p), "2 hard links"),
    (lambda p, t: os.mkfifo(p), "a FIFO"),
    (lambda p, t: p.mkdir(), "a directory"),
    (lambda p, t: p.write_bytes(b"#" * (intake.MAX_SOURCE + 1)), "too large"),
])
def test_anything_but_a_single_regular_file_is_rejected_in_one_line(tmp_path, make, words):
    (tmp_path / "real.py").write_text(HONEST)
    path = tmp_path / "vae.py"
    make(path, tmp_path)
    with pytest.raises(Rejected, match=words):
        intake.read_regular(path)


def test_a_device_is_not_read(tmp_path):
    with pytest.raises(Rejected, match="a character device"):
        intake.read_regular(Path("/dev/zero"))


def test_a_class_is_walked_per_student_without_following_links(tmp_path):
    class_ = tmp_path / "class"
    (class_ / "alice").mkdir(parents=True)
    (class_ / "alice" / "vae.py").write_text(HONEST)
    (class_ / "alice" / "helpers.py").write_text("X = 1\n")       # hers, not a submission
    (class_ / "bob" / "work").mkdir(parents=True)
    (class_ / "bob" / "work" / "solution.py").write_text(HONEST)
    (class_ / "loose.py").write_text(HONEST)
    (class_ / ".git").mkdir()
    (class_ / ".git" / "x.py").write_text(HONEST)
    (class_ / "venv").mkdir()
    (class_ / "venv" / "pyvenv.cfg").write_text("")
    (class_ / "venv" / "lib.py").write_text(HONEST)
    (class_ / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "vae.py").write_text(HONEST)
    found = {f.path.relative_to(class_).as_posix(): f.own_folder
             for f in intake.find_submissions([class_])}
    assert found == {"loose.py": False, "alice/vae.py": True, "bob/work/solution.py": True}


def test_a_deep_tree_is_walked_to_a_bounded_depth_without_recursion(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(3000):                       # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    with open(os.open("vae.py", os.O_CREAT | os.O_WRONLY, dir_fd=fd), "w") as f:
        f.write(HONEST)
    os.close(fd)
    assert intake.find_submissions([folder]) == []             # below MAX_DEPTH: not looked at
    subprocess.run(["rm", "-rf", str(folder)], check=True)   # shutil.rmtree would recurse


def test_a_directory_named_vae_py_is_listed_so_that_it_gets_its_row(tmp_path):
    (tmp_path / "class" / "carol" / "vae.py").mkdir(parents=True)
    (found,) = [f for f in intake.find_submissions([tmp_path / "class"])
                if f.path.name == "vae.py"]
    with pytest.raises(Rejected, match="a directory"):
        intake.take(found)


@pytest.mark.parametrize("text, words", [
    ("def f(:\n", "syntax error at line 1"),
    ("x = " + " + ".join(["1"] * 200000) + "\n", "could not be parsed"),
    ("(" * 100000 + ")" * 100000, "syntax error|could not be parsed"),
])
def test_a_file_python_cannot_parse_is_rejected_not_raised(tmp_path, text, words):
    path = tmp_path / "vae.py"
    path.write_text(text)
    with pytest.raises(Rejected, match=words):
        intake.take(Found(path))


def test_only_the_students_own_regular_modules_are_staged(tmp_path):
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "vae.py").write_text("import helpers\nimport autograd\nimport numpy\nimport data\n"
                                   "import shadow\nimport missing\n" + HONEST)
    (folder / "helpers.py").write_text("X = 1\n")
    (folder / "autograd.py").write_text("raise SystemExit\n")      # would hide autograd
    (folder / "data.py").write_text("raise SystemExit\n")          # would hide the grader's
    (folder / "shadow.py").symlink_to("/etc/shadow")
    submission = intake.take(Found(folder / "vae.py"))
    assert set(submission.files) == {"vae.py", "helpers.py"}
    notes = " ".join(submission.notes)
    assert "autograd.py" in notes and "data.py" in notes and "shadow.py" in notes
    loose = intake.take(Found(folder / "vae.py", own_folder=False))   # a classmate's file
    assert set(loose.files) == {"vae.py"}


def test_a_package_beside_the_file_is_staged_with_the_folder_without_links(tmp_path):
    folder = tmp_path / "alice"
    (folder / "mylib" / "deeper").mkdir(parents=True)
    (folder / "vae.py").write_text("from mylib import helpers\n" + HONEST)
    (folder / "mylib" / "__init__.py").write_text("")
    (folder / "mylib" / "helpers.py").write_text("X = 1\n")
    (folder / "mylib" / "deeper" / "more.py").write_text("Y = 2\n")   # staged with the folder
    (folder / "mylib" / "notes.txt").write_text("not Python\n")
    (folder / "mylib" / "shadow.py").symlink_to("/etc/shadow")
    submission = intake.take(Found(folder / "vae.py"))
    assert set(submission.files) == {"vae.py", "mylib/__init__.py", "mylib/helpers.py",
                                     "mylib/deeper/more.py", "mylib/notes.txt"}
    assert submission.files["mylib/helpers.py"] == b"X = 1\n"
    assert " ".join(submission.notes).count("mylib/shadow.py") == 1


def test_a_linked_package_folder_is_not_staged(tmp_path):
    folder, elsewhere = tmp_path / "alice", tmp_path / "elsewhere"
    (elsewhere / "mylib").mkdir(parents=True)
    (elsewhere / "mylib" / "__init__.py").write_text("SECRET = 1\n")
    folder.mkdir()
    (folder / "mylib").symlink_to(elsewhere / "mylib")
    (folder / "vae.py").write_text("import mylib\n" + HONEST)
    assert set(intake.take(Found(folder / "vae.py")).files) == {"vae.py"}


def test_an_odd_name_is_staged_under_a_safe_one(tmp_path):
    path = tmp_path / os.fsdecode(b"\xe9l\xe8ve; rm -rf.py")
    path.write_text(HONEST)
    assert intake.take(Found(path)).name == "submission.py"


@pytest.mark.parametrize("text, shown", [
    ("plain words, 2 - log 2", "plain words, 2 - log 2"),
    ("\x1b[2K\r\x1b[32mPASS", "\\x1b[2K\\x0d\\x1b[32mPASS"),
    ("bell\x07 del\x7f csi\x9b", "bell\\x07 del\\x7f csi\\x9b"),
    ("\u202eevil\u2066", "\\u202eevil\\u2066"),
    (os.fsdecode(b"\xe9tudiant.py"), "\\xe9tudiant.py"),
    ("tab\tnew\nline", "tab\\x09new\\x0aline"),
    ("π ≤ 4", "π ≤ 4"),
])
def test_what_a_submission_says_is_shown_escaped(text, shown):
    assert report.shown(text) == shown


# ---------------------------------------------------------------- the student's folder, staged

def test_the_student_s_folder_is_staged_as_they_would_run_the_file(tmp_path):
    folder = tmp_path / "alice"
    (folder / "trained_params").mkdir(parents=True)
    (folder / "empty").mkdir()
    (folder / "vae.py").write_text(HONEST)
    (folder / "trained_params" / "data.npy").write_bytes(b"\x93NUMPY")
    (folder / "samples.png").write_bytes(b"\x89PNG")
    for skipped in (".git", "__pycache__", ".ipynb_checkpoints"):
        (folder / skipped).mkdir()
        (folder / skipped / "x.py").write_text("secret = 1\n")
    (folder / ".env").write_text("TOKEN=1\n")
    (folder / "venv").mkdir()
    (folder / "venv" / "pyvenv.cfg").write_text("")
    (folder / "venv" / "site.py").write_text("")
    submission = intake.take(Found(folder / "vae.py"))
    assert set(submission.files) == {"vae.py", "trained_params/data.npy", "samples.png"}
    assert submission.files["trained_params/data.npy"] == b"\x93NUMPY"
    assert set(submission.folders) == {"trained_params", "empty"}
    assert submission.notes == ["not copied from your folder (your file ran without them): "
                                "venv/: a virtual environment"]
    assert set(intake.take(Found(folder / "vae.py", own_folder=False)).files) == {"vae.py"}


def test_links_devices_and_odd_names_in_the_folder_are_left_out_with_a_note(tmp_path):
    folder, outside = tmp_path / "alice", tmp_path / "outside"
    (outside / "secrets").mkdir(parents=True)
    (outside / "secrets" / "grades.csv").write_text("alice,A\n")
    folder.mkdir()
    (folder / "vae.py").write_text(HONEST)
    (folder / "grades.csv").symlink_to(outside / "secrets" / "grades.csv")
    (folder / "secrets").symlink_to(outside / "secrets", target_is_directory=True)
    os.link(outside / "secrets" / "grades.csv", folder / "hard.csv")
    os.mkfifo(folder / "pipe")
    (folder / "-rf; rm").write_text("x")
    (folder / "numpy.py").write_text("raise SystemExit\n")      # would hide NumPy
    submission = intake.take(Found(folder / "vae.py"))
    assert set(submission.files) == {"vae.py"} and submission.folders == []
    note = " ".join(submission.notes)
    for words in ("grades.csv: not a regular file", "secrets: not a regular file",
                  "hard.csv: not graded: it has 2 hard links", "pipe: not a regular file: it is "
                  "a FIFO", "-rf; rm: a name of other characters",
                  "numpy.py: the name of an installed module"):
        assert words in note, (words, note)
    assert b"alice,A" not in b"".join(submission.files.values())


def test_the_folder_is_staged_within_its_limits_of_files_bytes_and_depth(tmp_path, monkeypatch):
    monkeypatch.setattr(intake, "MAX_FOLDER_FILES", 5)
    monkeypatch.setattr(intake, "MAX_FOLDER_BYTES", 3000)
    monkeypatch.setattr(intake, "MAX_FOLDER_DEPTH", 2)
    folder = tmp_path / "alice"
    deep = folder / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (folder / "vae.py").write_text(HONEST)
    (folder / "a" / "b" / "kept.txt").write_text("two levels down\n")
    (deep / "lost.txt").write_text("three levels down\n")
    (folder / "big.npy").write_bytes(b"0" * 4000)
    for i in range(3):
        (folder / f"figure_{i}.png").write_bytes(b"x" * 10)
    for i in range(10):
        (folder / "a" / "b" / f"later_{i}.txt").write_text("over the count\n")
    submission = intake.take(Found(folder / "vae.py"))
    assert len(submission.files) == 5 and "a/b/kept.txt" in submission.files   # breadth-first
    assert sum(map(len, submission.files.values())) <= 3000
    assert submission.folders == ["a", "a/b"] and "a/b/c/lost.txt" not in submission.files
    note = submission.notes[-1]
    assert "big.npy: too large" in note and "a/b/c/: more than 2 folders deep" in note
    assert "a/b/later_5.txt: more than 5 files; and 4 more" in note    # 8 named at most


def test_the_entries_of_a_folder_looked_at_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(intake, "MAX_FOLDER_ENTRIES", 50)
    folder = tmp_path / "alice"
    (folder / "many").mkdir(parents=True)
    (folder / "vae.py").write_text(HONEST)
    for i in range(60):
        (folder / "many" / f"{i}.txt").write_text("")
    submission = intake.take(Found(folder / "vae.py"))
    assert "more than 50 entries" in submission.notes[-1]


def test_a_folder_with_the_grader_or_another_student_s_submission_is_not_copied(tmp_path):
    # A file given from the project's folder (or one above it) gets its own modules
    # only: the reference beside or below it is never staged.
    project_file = intake.PROJECT / "tests" / "student_vae.py"
    assert intake.holds_the_grader(intake.PROJECT) and intake.holds_the_grader(Path("/"))
    assert not intake.holds_the_grader(tmp_path)
    beside = intake.PROJECT / "student_given_here.py"
    try:
        beside.write_text(HONEST)
        submission = intake.take(Found(beside))
        assert set(submission.files) == {"student_given_here.py"}
        assert "it holds the grader" in " ".join(submission.notes)
    finally:
        beside.unlink()
    assert project_file.exists()
    # A class laid out in folders with loose files beside them: Bob's file does not
    # carry Alice's folder, which holds her vae.py.
    section = tmp_path / "section"
    (section / "alice" / "trained_params").mkdir(parents=True)
    (section / "alice" / "vae.py").write_text(HONEST)
    (section / "bob.py").write_text(HONEST)
    (section / "notes.txt").write_text("bob's\n")
    submission = intake.take(Found(section / "bob.py"))
    assert set(submission.files) == {"bob.py", "notes.txt"}
    assert "alice/: another submission (it holds a vae.py)" in " ".join(submission.notes)
