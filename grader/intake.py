"""Finding and reading submissions without trusting the class folder.

A class folder is the students' work: any entry in it may be a link (to
/etc/shadow, to the reference), a FIFO, a device, a directory named vae.py,
a tree thousands of levels deep, or a name that is not UTF-8. So folders are
walked with an explicit stack, without following links, to a bounded depth
and number of entries; a file is read only if it is a regular file with one
link (no symbolic or hard link to something outside the student's folder),
opened without following links and without blocking, and no larger than a
limit. What is read is what the worker gets: the bytes are copied into the
sandbox, never the path.

A student's own folder (stage_folder) is copied beside the file, as they
would run it, and every entry of it is as hostile: it is walked the same
way, breadth-first to MAX_FOLDER_DEPTH levels and MAX_FOLDER_ENTRIES
entries, each file read by read_regular (no links, devices, FIFOs or hard
links), at most MAX_FOLDER_FILES files and MAX_FOLDER_BYTES bytes in all
(well inside the sandbox's tmpfs), and only names of FOLDER_NAME's letters
(no "..", no leading dot or dash, no separators) are copied; hidden entries,
__pycache__ and virtual environments are not. A note names what was left
out, with why, bounded too (MAX_LEFT_OUT).
"""
import ast
import importlib.machinery
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

MAX_SOURCE = 2 ** 20          # bytes of one .py file (a solution is about 10 KB)
MAX_HELPERS = 20              # modules of a student's own staged beside the file
MAX_DEPTH = 6                 # folder levels below a class folder that are searched
MAX_ENTRIES = 100000          # directory entries looked at in one class folder
STAGED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\.py")
# The course's modules the worker provides: a student's file of this name would stand in for
# them. (The grader's own package is not on the submission's path: a grader.py is the student's.)
GRADER_MODULES = {"data", "plotting"}
# The rest of a student's folder, copied beside the file as they would run it (stage_folder):
MAX_FOLDER_FILES = 100         # files in all, the submission's included
MAX_FOLDER_BYTES = 32 * 2 ** 20   # bytes of them in all (the sandbox's folder holds 64 MiB+)
MAX_FOLDER_DEPTH = 4           # folder levels below the submission's
MAX_FOLDER_ENTRIES = 5000      # directory entries looked at
FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")   # of each file and folder
MAX_LEFT_OUT = 8               # left-out entries named in the note
PROJECT = Path(__file__).resolve().parent.parent     # the grader's, with the reference


class Rejected(Exception):
    """A file that is not graded, with the one-line reason."""


KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
         (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")]


def kind_of(mode):
    return next((name for test, name in KINDS if test(mode)), "not a regular file")


def read_regular(path, limit=MAX_SOURCE):
    """The bytes of path if it is a regular file with a single link and at
    most `limit` bytes; else Rejected."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if os.path.islink(path):
            raise Rejected("not a regular file: it is a symbolic link") from None
        raise Rejected(f"cannot be read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Rejected(f"not a regular file: it is {kind_of(st.st_mode)}")
        if st.st_nlink != 1:
            raise Rejected(f"not graded: it has {st.st_nlink} hard links (a submission must "
                           "be a file of its own, not a link to another file)")
        if st.st_size > limit:
            raise Rejected(f"too large to be a submission ({st.st_size:,} bytes; at most "
                           f"{limit:,})")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise Rejected(f"too large to be a submission (more than {limit:,} bytes)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def entries(folder):
    """[(name, path, is_dir, is_file)] of a folder, links neither dirs nor files."""
    found = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = not is_dir and not entry.is_symlink()
                except OSError:
                    is_dir = is_file = False
                found.append((entry.name, Path(entry.path), is_dir, is_file))
    except OSError:
        pass
    return sorted(found, key=lambda e: os.fsencode(e[0]))


def skipped(name):
    """Folders that hold no submissions: hidden ones, caches."""
    return name.startswith(".") or name == "__pycache__"


@dataclass
class Found:
    """A file to grade (path), whether its folder is one student's (so its
    own modules beside it are the student's too), or why it is not graded."""
    path: Path
    own_folder: bool = True
    problem: str = ""


def find_submissions(paths):
    """Files as given; in a folder, its own .py files (each a student's), and
    in every folder below it one submission per student folder: vae.py if
    present, else its .py files. Links are not followed; a vae.py that is
    not a regular file is still listed, so that it gets its row."""
    found = []
    for path in map(Path, paths):
        if not path.is_dir() or path.is_symlink():
            found.append(Found(path, True))
            continue
        found += [Found(p, False) for name, p, _, _ in entries(path) if name.endswith(".py")]
        found += walk(path)
    return found


def walk(top):
    """Student folders below top, breadth-first with a stack (no recursion),
    at most MAX_DEPTH levels and MAX_ENTRIES entries; virtual environments
    (a pyvenv.cfg) and hidden folders are skipped with what is below them."""
    found, seen, queue = [], 0, [(top, 0)]
    while queue:
        folder, depth = queue.pop(0)
        listing = entries(folder)
        seen += len(listing)
        if seen > MAX_ENTRIES:
            break
        names = {name for name, *_ in listing}
        if "pyvenv.cfg" in names and folder != top:
            continue
        if folder != top:
            own = [(name, p) for name, p, is_dir, _ in listing if name.endswith(".py")]
            vae = [p for name, p in own if name == "vae.py"]
            found += [Found(p, True) for p in (vae or [p for _, p in own])]
        if depth < MAX_DEPTH:
            queue += [(p, depth + 1) for name, p, is_dir, _ in listing
                      if is_dir and not skipped(name)]
    return found


@dataclass
class Submission:
    """What the worker gets: {staged name: bytes}, the submission's own name
    first, and notes on what was left out."""
    path: Path
    name: str
    files: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    folders: list = field(default_factory=list)   # of the student's folder, parents first
    looked_at: set = field(default_factory=set)   # by stage_helpers: staged or noted
    text: str = ""
    guarded: bool = False          # it has an `if __name__ == "__main__":` block
    work: tuple = None             # (line, text) of its first top-level statement that does work


def staged_name(name, taken=()):
    return name if STAGED_NAME.fullmatch(name) and name not in taken else "submission.py"


def installed(name):
    """True if `name` is a module of the standard library or of the Python
    installation (not of this project's folder), or one of the worker's own."""
    if name in GRADER_MODULES or name in sys.stdlib_module_names:
        return True
    path = [p for p in sys.path if p and os.path.abspath(p) != str(PROJECT)]
    try:
        return importlib.machinery.PathFinder.find_spec(name, path) is not None
    except (ImportError, ValueError):
        return True


def imported_names(tree):
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    return names | {node.module.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module and not node.level}


def parse(text, name):
    """The module's AST, or Rejected with a syntax error's line."""
    try:
        return ast.parse(text, filename=name)
    except SyntaxError as e:
        raise Rejected(f"syntax error at line {e.lineno} of {name}: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError) as e:
        raise Rejected(f"{name} could not be parsed ({type(e).__name__}: it is nested too "
                       "deeply or too large for Python)") from None


SEEDS = {"seed", "manual_seed", "set_printoptions", "filterwarnings", "simplefilter"}
# Calls that only compute a setting or print (the skeleton's hyper-parameters at
# the top level, `[latent_dim] + [n_units for i in range(n_layers)]`): not the
# work a missing guard runs at import, which is named from the first other call.
QUIET = SEEDS | {"range", "len", "list", "tuple", "dict", "set", "int", "float", "str", "bool",
                 "zip", "enumerate", "min", "max", "sum", "abs", "round", "sorted", "reversed",
                 "print", "format", "isinstance", "array", "asarray", "zeros", "ones", "full",
                 "linspace", "arange", "exp", "log", "sqrt", "join"}


def is_main_guard(node):
    """`if __name__ == "__main__":` (either way round)."""
    if not (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)):
        return False
    sides = [node.test.left, *node.test.comparators]
    return ({type(side) for side in sides} == {ast.Name, ast.Constant}
            and {getattr(side, "id", getattr(side, "value", None)) for side in sides}
            == {"__name__", "__main__"})


def calls(node):
    """True if evaluating node calls something other than a seed or a QUIET
    function (a lambda's body is not evaluated)."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(
                node.func, "id", "")
            if callee not in QUIET:
                return True
        stack.extend(ast.iter_child_nodes(node))
    return False


def first_work(tree, text):
    """(line, text) of the first statement that does work when the module is
    imported: a call (other than a seed or QUIET), a loop, a `with`, a raise, outside
    functions, classes and the `__main__` block; None if there is none."""
    lines = text.splitlines()
    stack = list(reversed(tree.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef, ast.Pass, ast.Global)) or is_main_guard(node):
            continue
        if isinstance(node, (ast.If, ast.Try)) and not (isinstance(node, ast.If)
                                                        and calls(node.test)):
            parts = [node.body, node.orelse] + ([getattr(node, "finalbody", [])] + [
                h.body for h in getattr(node, "handlers", [])] if isinstance(node, ast.Try)
                else [])
            stack.extend(reversed([statement for part in parts for statement in part]))
            continue
        if isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith,
                             ast.Raise)) or calls(node):
            line = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
            return node.lineno, line[:200]
    return None


def take(found):
    """Reads a Found into a Submission: the file itself, and (where its folder
    is the student's) the modules beside it that it imports. Rejected if the
    file cannot be graded."""
    path = found.path
    display = os.fsdecode(path.name)
    content = read_regular(path)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(f"{display} is not a Python text file (it is not UTF-8 text)") from None
    if "\0" in text:
        raise Rejected(f"{display} is not a Python text file (it holds NUL bytes)")
    tree = parse(text, display)
    name = staged_name(display)
    submission = Submission(path, name, {name: content}, text=text,
                            guarded=any(map(is_main_guard, tree.body)), work=first_work(tree, text))
    if found.own_folder:
        stage_helpers(submission, tree)
        stage_folder(submission)
    return submission


def holds_the_grader(folder):
    """True if folder is the grader's project folder or one above it: a file given
    from there gets only its own modules, never the reference beside or below it."""
    try:
        folder = folder.resolve()
    except (OSError, RuntimeError):
        return True
    return folder == PROJECT or folder in PROJECT.parents


def stage_folder(submission):
    """Adds the rest of the student's folder, as they would run the file in
    it: its folders and regular files, breadth-first to MAX_FOLDER_DEPTH
    levels, within MAX_FOLDER_FILES files and MAX_FOLDER_BYTES bytes in all,
    each read as read_regular does (no links, no devices, one hard link).
    Hidden entries and __pycache__ are skipped; virtual environments, folders
    holding a vae.py (another student's, in a class laid out in folders), names
    other than FOLDER_NAME, .py files named like an installed module, and
    whatever is over a limit are left out, and a note says which. Not at all
    from the grader's project folder or one above it (holds_the_grader)."""
    left_out, seen = [], 0
    size = sum(map(len, submission.files.values()))
    top = submission.path.parent
    if holds_the_grader(top):
        submission.notes.append("your folder was not copied (it holds the grader, with the "
                                "reference): your file ran with only its own modules")
        return
    queue = [(top, "", 0)]
    while queue:
        folder, prefix, depth = queue.pop(0)
        listing = entries(folder)
        seen += len(listing)
        if seen > MAX_FOLDER_ENTRIES:
            left_out.append((prefix or "the rest", f"more than {MAX_FOLDER_ENTRIES:,} entries"))
            break
        for name, path, is_dir, is_file in listing:
            relative = prefix + os.fsdecode(name)
            if skipped(name) or path == submission.path:
                continue
            shown = relative + ("/" if is_dir else "")
            if shown in submission.looked_at and (is_dir or relative not in submission.files):
                continue
            if not FOLDER_NAME.fullmatch(name):
                left_out.append((shown, "a name of other characters than letters, digits and "
                                        "_ . + -"))
            elif is_dir and depth >= MAX_FOLDER_DEPTH:
                left_out.append((shown, f"more than {MAX_FOLDER_DEPTH} folders deep"))
            elif is_dir and (os.path.lexists(path / "pyvenv.cfg")
                             or os.path.lexists(path / "conda-meta")):
                left_out.append((shown, "a virtual environment"))
            elif is_dir and os.path.lexists(path / "vae.py"):
                left_out.append((shown, "another submission (it holds a vae.py)"))
            elif is_dir:
                submission.folders.append(relative)
                queue.append((path, relative + "/", depth + 1))
            elif relative in submission.files:
                continue
            elif depth == 0 and name.endswith(".py") and installed(name[:-3]):
                left_out.append((shown, "the name of an installed module, which it would hide"))
            elif len(submission.files) >= MAX_FOLDER_FILES:
                left_out.append((shown, f"more than {MAX_FOLDER_FILES} files"))
            else:
                try:
                    content = read_regular(path, min(MAX_SOURCE * 8, MAX_FOLDER_BYTES - size))
                except Rejected as e:
                    reason = str(e).replace("too large to be a submission", "too large")
                    left_out.append((shown, reason + (f" ({MAX_FOLDER_BYTES // 2 ** 20} MiB "
                                                      "are copied in all)"
                                                      if "too large" in reason else "")))
                    continue
                submission.files[relative] = content
                size += len(content)
    if left_out:
        named = "; ".join(f"{name}: {why}" for name, why in left_out[:MAX_LEFT_OUT])
        more = len(left_out) - MAX_LEFT_OUT
        submission.notes.append("not copied from your folder (your file ran without them): "
                                + named + (f"; and {more} more" if more > 0 else ""))


def stage_helpers(submission, tree):
    """Adds the student's own modules that the file imports: regular .py files
    of its folder, or of a package folder beside it (one level, its .py files),
    not links, not named like an installed module."""
    folder = submission.path.parent
    for module in sorted(imported_names(tree)):
        if len(submission.files) > MAX_HELPERS:
            submission.notes.append(f"more than {MAX_HELPERS} modules of your own: the rest "
                                    "were not copied")
            break
        path, package = folder / f"{module}.py", folder / module
        is_package = (not os.path.lexists(path) and not package.is_symlink()
                      and package.is_dir() and os.path.lexists(package / "__init__.py"))
        if module == Path(submission.name).stem or not (os.path.lexists(path) or is_package):
            continue
        submission.looked_at.add(f"{module}.py")
        if installed(module):
            submission.looked_at.add(f"{module}/")
            submission.notes.append(f"{module}{'/' if is_package else '.py'} beside the file was "
                                    "not copied: it has the name of an installed module, which "
                                    "it would hide")
            continue
        if is_package:
            stage_package(submission, package)
            continue
        try:
            submission.files[staged_name(path.name, submission.files)] = read_regular(path)
        except Rejected as e:
            submission.notes.append(f"{module}.py beside the file was not copied: {e}")


def stage_package(submission, package):
    """The .py files of a package folder beside the file (not its subfolders),
    staged as package/name.py, within MAX_HELPERS files in all."""
    name = package.name
    if not STAGED_NAME.fullmatch(f"{name}.py"):
        return
    names = []
    try:
        with os.scandir(package) as listing:
            for seen, entry in enumerate(listing):
                if seen >= MAX_ENTRIES:
                    break
                if STAGED_NAME.fullmatch(entry.name):
                    names.append(entry.name)
    except OSError:
        return
    for entry in sorted(names)[:MAX_HELPERS + 1]:
        if len(submission.files) > MAX_HELPERS:
            submission.notes.append(f"more than {MAX_HELPERS} modules of your own: the rest "
                                    "were not copied")
            return
        submission.looked_at.add(f"{name}/{entry}")
        try:
            submission.files[f"{name}/{entry}"] = read_regular(package / entry)
        except Rejected as e:
            submission.notes.append(f"{name}/{entry} beside the file was not copied: {e}")