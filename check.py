"""Grade students' vae.py files against the reference, function by function.

    python check.py path/to/vae.py            # one submission: a table per function
    python check.py class/ --json             # a class: every student folder, in parallel
    python check.py a.py b.py --timeout 60

A submission is untrusted code, so the grader judges and the submission only
computes. Each file runs in a worker process (check_worker.py) that loads it
and answers the grader's requests, "call compute_KL on these arrays", with
raw results over a private channel; this process draws fresh inputs for
every file, computes the reference's answers itself and compares
(checks.py). Nothing a submission prints, patches or forges becomes a PASS.

Where bubblewrap is installed (`apt-get install bubblewrap`), the worker runs
in a sandbox: a read-only view of the Python installation and of data.py and
plotting.py (not the reference), a private writable folder, no network, its
own process namespace (every child dies with it). Everywhere: time limits
enforced from outside, a memory limit, and output capped to its tail.
Exit code: 0 when every file passes (warnings allowed), 1 when one fails,
2 for a usage error or a file that cannot be graded at all.
"""
import ast
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import check_worker
import checks
import runs

PROJECT = Path(__file__).resolve().parent
STAGED = ("check_worker.py", "data.py", "plotting.py")    # what the worker may import
TAIL_BYTES = 4000               # of the worker's output, kept for messages
ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
       "MPLCONFIGDIR": "/tmp", "HOME": "/tmp"}
STATUSES = ("pass", "fail", "warning", "error", "skipped")
FUNCTION_NAMES = tuple(checks.CHECKS)


class WorkerLost(BaseException):
    """The worker timed out, died or broke the protocol: no answer to judge."""


class GraderProblem(Exception):
    """The grader itself cannot run a worker (its memory limit is too low)."""


# ----------------------------------------------------------------------------
# The worker process, in a sandbox where bubblewrap exists
# ----------------------------------------------------------------------------

def sandbox_prefix(private, stage):
    """bwrap's arguments: an empty /tmp first (Python may live below /tmp, and
    later mounts go over earlier ones), read-only system and Python, the staged
    files at /grader, the private folder at /submission, no network, its own
    PID namespace."""
    bind = []
    for path in sorted({"/usr", "/etc/alternatives", sys.prefix, sys.base_prefix,
                        str(Path(sys.executable).resolve().parent.parent)}):
        if Path(path).exists():
            bind += ["--ro-bind", path, path]
    for name in ("bin", "lib", "lib64", "sbin"):       # merged /usr: symlinks
        link = Path("/") / name
        if link.is_symlink():
            bind += ["--symlink", os.readlink(link), str(link)]
        elif link.is_dir():
            bind += ["--ro-bind", str(link), str(link)]
    return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--tmpfs", "/tmp", *bind, "--ro-bind", str(stage), "/grader",
            "--ro-bind", str(PROJECT / "datasets"), "/grader/datasets",
            "--bind", str(private), "/submission", "--chdir", "/submission",
            "--proc", "/proc", "--dev", "/dev", "--clearenv",
            *[arg for key, value in ENV.items() for arg in ("--setenv", key, value)]]


def own_modules(submission):
    """The modules beside the submission that it imports (its own helpers)."""
    try:
        tree = ast.parse(submission.read_text())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return [submission.parent / f"{name}.py" for name in sorted(names - {Path(n).stem for n in STAGED})
            if (submission.parent / f"{name}.py").is_file() and name != submission.stem]


class Worker:
    """One worker process for one submission, talked to over two pipes."""

    def __init__(self, submission, sandboxed, memory_mb):
        self.submission, self.next_id = submission, 0
        self.folder = Path(tempfile.mkdtemp(prefix="vae-check-"))
        self.private, stage = self.folder / "work", self.folder / "grader"
        self.private.mkdir()
        stage.mkdir()
        for name in STAGED:
            shutil.copyfile(PROJECT / name, stage / name)
        if sandboxed:
            (stage / "datasets").mkdir()     # where the sandbox mounts the shipped MNIST
        else:
            (stage / "datasets").symlink_to(PROJECT / "datasets")
        self.copied = {submission.name} | {p.name for p in own_modules(submission)}
        for path in [submission, *own_modules(submission)]:
            shutil.copyfile(path, self.private / path.name)
        request_read, self.request_write = os.pipe()
        self.answer_read, answer_write = os.pipe()
        if sandboxed:
            prefix, inside = sandbox_prefix(self.private, stage), Path("/submission")
            worker, env, cwd = "/grader/check_worker.py", None, None
        else:
            prefix, inside = [], self.private
            worker, cwd = str(stage / "check_worker.py"), self.private
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}, **ENV}
        command = prefix + [sys.executable, "-I", worker, str(request_read), str(answer_write),
                            str(inside / submission.name), str(memory_mb)]
        self.process = subprocess.Popen(
            command, pass_fds=(request_read, answer_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env,
            start_new_session=True)
        os.close(request_read)
        os.close(answer_write)
        self.tail = b""
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        """Keeps only the last TAIL_BYTES of whatever the worker prints."""
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):
            self.tail = (self.tail + chunk)[-TAIL_BYTES:]

    def output_tail(self):
        text = self.tail.decode(errors="replace").strip().splitlines()
        return " / ".join(text[-3:])

    def what_happened(self, lost):
        """A sentence on a worker that stopped answering."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        why = (f"the process died (exit code {code})" if code is not None and str(lost) == "died"
               else f"the worker {lost}")
        return f"{why} during this check; output: {self.output_tail() or 'none'}"

    def files_written(self):
        return sorted(p.name for p in self.private.iterdir()
                      if p.name not in self.copied | {"__pycache__"})

    def _read(self, n, deadline):
        ready, _, _ = select.select([self.answer_read], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise WorkerLost("timeout")
        return os.read(self.answer_read, min(n, 2 ** 20))

    def _write(self, data, deadline):
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [self.request_write], [],
                                        max(0.0, deadline - time.monotonic()))
            if not ready:
                raise WorkerLost("timeout")
            try:
                view = view[os.write(self.request_write, view[:65536]):]
            except BrokenPipeError:
                raise WorkerLost("died") from None

    def receive(self, seconds):
        deadline = time.monotonic() + seconds
        try:
            return check_worker.read_frame(lambda n: self._read(n, deadline))
        except EOFError:
            raise WorkerLost("died") from None
        except check_worker.FrameError as e:
            raise WorkerLost(f"broke the protocol: {e}") from None

    def request(self, header, arrays, seconds):
        """Sends a request and waits up to `seconds` for its answer."""
        self.next_id += 1
        deadline = time.monotonic() + seconds
        self._write(check_worker.frame({**header, "id": self.next_id}, arrays), deadline)
        answer, out = self.receive(max(0.0, deadline - time.monotonic()))
        if answer.get("id") != self.next_id:
            raise WorkerLost("broke the protocol: an answer to another request")
        return answer, out

    def close(self):
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.reader.join(timeout=5)
        self.process.stdout.close()
        for fd in (self.request_write, self.answer_read):
            os.close(fd)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_worker(submission, sandboxed, memory_mb, seconds):
    """A worker that has loaded NumPy and autograd, or GraderProblem."""
    worker = Worker(submission, sandboxed, memory_mb)
    try:
        answer, _ = worker.receive(seconds)
        if answer.get("ready"):
            return worker
    except WorkerLost:
        pass
    tail = worker.output_tail()
    worker.close()
    if tail.startswith("bwrap:"):
        raise GraderProblem(f"the sandbox did not start ({tail}); try --sandbox none")
    raise GraderProblem(f"the grader's worker did not start before the submission was loaded "
                        f"({tail or 'no output'}): --memory {memory_mb} MiB is probably too "
                        "little for Python, NumPy and autograd; raise --memory")


class Remote:
    """The student's function as the checks see it (the interface of checks.py)."""

    def __init__(self, worker, name, description, seconds):
        """seconds: the time all calls of one check may take together."""
        self.worker, self.name, self.seconds = worker, name, seconds
        self.deadline = time.monotonic() + seconds
        self.parameters = description["parameters"]
        self.plain_numpy = description["plain_numpy"]

    def call(self, *args, seed=None, errstate=None, gradient=False):
        arrays = {}
        tree = check_worker.encode(list(args), arrays)
        answer, out = self.worker.request(
            {"op": "call", "function": self.name, "args": tree, "seed": seed,
             "errstate": errstate, "gradient": gradient}, arrays,
            max(0.0, self.deadline - time.monotonic()))
        if not answer.get("ok"):
            error = answer.get("error") or {}
            raise checks.SubmissionError(str(error.get("type")), str(error.get("message")),
                                         error.get("line"), str(error.get("text") or ""))
        try:
            value = check_worker.decode(answer["value"], out)
        except (KeyError, RecursionError, check_worker.FrameError) as e:
            raise WorkerLost(f"broke the protocol: {e}") from None
        return checks.Result(value, int(answer.get("warnings", 0)))

    def __call__(self, *args):
        return self.call(*args).value

    def seeded(self, seed, *args):
        return self.call(*args, seed=seed).value

    def bound_gradient(self, seed, gen_params, rec_params, data):
        return self.call(gen_params, rec_params, data, seed=seed, gradient=True).value


# ----------------------------------------------------------------------------
# Grading one file
# ----------------------------------------------------------------------------

def result(function, check, status, message=""):
    return {"function": function, "check": check, "status": status, "message": message}


def read_source(path):
    """The file's text, or the one-line reason it cannot be graded."""
    content = path.read_bytes()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None, f"{path.name} is not a Python text file (it is not UTF-8 text)"
    if "\0" in text:
        return None, f"{path.name} is not a Python text file (it holds NUL bytes)"
    try:
        ast.parse(text, filename=path.name)
    except SyntaxError as e:
        return None, f"syntax error at line {e.lineno} of {path.name}: {e.msg}"
    return text, None


def describe(error):
    return (f"{error['type']}: {error['message']}"
            + (f" at line {error['line']}: `{error['text']}`" if error.get("line") else ""))


def probe(path, options):
    """What importing the whole file does. -> (problems, grader note or None)."""
    worker = start_worker(path, options.sandboxed, options.memory, options.import_timeout)
    seconds = min(options.import_timeout, options.timeout)
    problems = []
    try:
        answer, _ = worker.request({"op": "import"}, {}, seconds)
        if not answer.get("ok"):
            problems.append(f"importing it failed: {describe(answer['error'])}")
    except WorkerLost as e:
        problems.append(f"importing it did not finish within {seconds:g} s (it trains or loops "
                        "at import time)" if str(e) == "timeout" else
                        "importing it ended the process: " + worker.what_happened(e))
    written = worker.files_written()
    worker.close()
    if written:
        problems.append(f"importing it wrote files: {', '.join(written[:5])}")
    return problems


def load(path, mode, options):
    """A worker holding the submission, and what it says of its functions."""
    worker = start_worker(path, options.sandboxed, options.memory, options.import_timeout)
    try:
        answer, _ = worker.request({"op": "load", "mode": mode, "names": FUNCTION_NAMES}, {},
                                   options.import_timeout)
    except WorkerLost:
        worker.close()
        return None, None, ["loading it did not finish"]
    if not answer.get("ok"):
        worker.close()
        return None, None, [describe(answer["error"])]
    return worker, answer.get("functions", {}), answer.get("notes", [])


def grade_functions(path, mode, options, rng):
    """Runs every check; a lost worker fails the check, skips the rest of that
    function and is replaced for the next one."""
    import vae as reference
    worker, functions, notes = load(path, mode, options)
    if worker is None:
        return None, notes
    results, deadline = [], time.monotonic() + options.timeout
    try:
        for name, function_checks in checks.CHECKS.items():
            if name not in functions:
                if name in checks.GRADED:
                    results.append(result(name, "defined", "fail",
                                          f"{path.name} defines no function {name}"))
                continue
            failed = lost = False
            for check_name, check in function_checks:
                if lost or time.monotonic() > deadline:
                    why = "the file's time is up" if not lost else "an earlier check of this function did not finish"
                    results.append(result(name, check_name, "skipped", f"not run: {why}"))
                    continue
                if failed and check in checks.AFTER_SUCCESS_ONLY:
                    results.append(result(name, check_name, "skipped",
                                          "not run: an earlier check of this function failed"))
                    continue
                remote = Remote(worker, name, functions[name],
                                min(options.check_timeout, max(0.1, deadline - time.monotonic())))
                try:
                    status, message = checks.run_check(check, remote, reference, rng)
                except Exception as e:   # the grader's own failure: report it, go on
                    status, message = "error", (f"the grader could not judge this check "
                                                f"({type(e).__name__}: {e})")
                except WorkerLost as e:
                    status, lost = "error", True
                    message = (f"did not finish within {remote.seconds:g} s (an endless loop?)"
                               if str(e) == "timeout" else worker.what_happened(e))
                failed = failed or status in ("fail", "error")
                results.append(result(name, check_name, status, message))
                if lost:
                    worker.close()
                    worker, functions, _ = load(path, mode, options)
                    if worker is None:
                        break
    finally:
        if worker is not None:
            worker.close()
    return checks.knock_on(results), notes


def grade_file(path, options):
    """-> report: file, verdict ("pass", "fail" or "error"), loaded, results, notes."""
    report = {"file": str(path), "loaded": None, "results": [], "notes": []}
    text, problem = read_source(path)
    if problem:
        report["results"].append(result("(module)", "load", "error", problem))
        return finish(report)
    try:
        problems = probe(path, options)
        module_result = result("(module)", "import has no side effects", "pass")
        if problems:
            module_result.update(status="fail", message="; ".join(problems) + ". Put the training "
                                 "and plotting code under `if __name__ == \"__main__\":`. The "
                                 "functions below were graded from the file's imports and "
                                 "definitions only.")
        report["results"].append(module_result)
        mode = "definitions" if problems else "full"
        rng = np.random.default_rng(secrets.randbits(64))    # fresh inputs for every file
        results, notes = grade_functions(path, mode, options, rng)
    except GraderProblem as e:
        report["results"].append(result("(grader)", "start", "error", str(e)))
        report["grader_problem"] = True
        return finish(report)
    if results is None:
        report["results"].append(result("(module)", "load", "error",
                                        "the file could not be loaded: " + "; ".join(notes)))
        return finish(report)
    report.update(loaded="full" if mode == "full" else "definitions only", notes=notes)
    report["results"] += results
    return finish(report)


def counts(report):
    return {status: sum(r["status"] == status for r in report["results"]) for status in STATUSES}


def finish(report):
    c = counts(report)
    report["verdict"] = ("error" if report["loaded"] is None else
                         "fail" if c["fail"] or c["error"] else "pass")
    return report


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

def skipped(folder, top):
    """Folders that hold no submissions: hidden ones, caches, virtual environments."""
    parts = folder.relative_to(top).parts
    return any(part.startswith(".") or part == "__pycache__" for part in parts) or any(
        (top.joinpath(*parts[:i + 1]) / "pyvenv.cfg").exists() for i in range(len(parts)))


def submissions_in(paths):
    """Files as given; in a folder, its own .py files, and in every folder below
    it one submission per student folder: vae.py if present, else its .py files."""
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        files += sorted(path.glob("*.py"))
        for folder in sorted(p for p in path.rglob("*") if p.is_dir() and not skipped(p, path)):
            own = sorted(folder.glob("*.py"))
            files += [folder / "vae.py"] if folder / "vae.py" in own else own
    return files


def parse_args(argv=None):
    parser = runs.OneLineErrorParser(description="Grade vae.py submissions against the reference.")
    add = parser.add_argument
    add("paths", nargs="+", metavar="SUBMISSION",
        help="a student's vae.py, several files, or folders of them (searched recursively)")
    add("--json", action="store_true", help="print JSON instead of tables")
    add("--timeout", type=runs.positive_float, default=120.0, help="seconds for one file's checks")
    add("--import-timeout", type=runs.positive_float, default=20.0,
        help="seconds that importing a file may take")
    add("--check-timeout", type=runs.positive_float, default=30.0,
        help="seconds for one check of one function")
    add("--memory", type=runs.positive_int, default=4096, help="memory limit in MiB per file")
    add("--jobs", type=runs.positive_int, default=os.cpu_count() or 1,
        help="files graded at once")
    add("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
        help="auto: bubblewrap where installed; bwrap: refuse to grade without it; none: "
             "processes only (the submission can read and write your files)")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    have_bwrap = shutil.which("bwrap") is not None
    if args.sandbox == "bwrap" and not have_bwrap:
        parser.error("--sandbox bwrap but bubblewrap is not installed (apt-get install bubblewrap)")
    args.sandboxed = have_bwrap and args.sandbox != "none"
    return args


def print_table(report):
    print(f"{report['file']} (loaded: {report['loaded'] or 'no'})")
    width = max(len(r["function"]) for r in report["results"])
    for r in report["results"]:
        print(f"  {r['function']:<{width}}  {r['check']:<44} {r['status'].upper():<7} {r['message']}")
    for note in report.get("notes", []):
        print(f"  note: {note}")
    c = counts(report)
    print(f"summary: {c['pass']} passed, {c['fail']} failed, {c['warning']} warnings, "
          f"{c['error']} errors, {c['skipped']} skipped")


def print_row(report):
    c = counts(report)
    print(f"{report['file']:<50} {report['verdict'].upper():<6} "
          f"{'loaded' if report['loaded'] else 'NOT LOADED':<10} {c['pass']:3d} passed "
          f"{c['fail']:3d} failed {c['warning']:3d} warnings {c['error']:3d} errors", flush=True)


def main(argv=None):
    args = parse_args(argv)
    files = submissions_in(args.paths)
    if not files:
        print("check.py: error: no .py files found", file=sys.stderr)
        return 2
    if not args.sandboxed:
        print("check.py: note: no sandbox (bubblewrap not installed or --sandbox none): each "
              "submission runs in its own process with time and memory limits, but can read "
              "and write your files, use the network and leave processes behind",
              file=sys.stderr)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(grade_file, path, args) for path in files]
        reports = []
        for future in futures:
            reports.append(future.result())
            if not args.json:
                (print_table if len(files) == 1 else print_row)(reports[-1])
    if args.json:
        verdicts = [r["verdict"] for r in reports]
        print(json.dumps(reports[0] if len(files) == 1 else {
            "files": reports, "summary": {"files": len(reports), **{
                v: verdicts.count(v) for v in ("pass", "fail", "error")}}}, indent=2))
    if any(r.get("grader_problem") for r in reports) or any(r["loaded"] is None for r in reports):
        return 2
    return 1 if any(r["verdict"] != "pass" for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
