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
Then the file runs as a script on the first 300 training and 100 test images
of MNIST: its trained parameters (training_check.py) and the figures it saves
(figures_check.py) are judged too, unless --functions-only.

Where bubblewrap is installed (`apt-get install bubblewrap`), the worker runs
in a sandbox (sandbox.py): a read-only view of the Python installation and of
data.py and plotting.py (not the reference), a private writable folder, no
network, its own process namespace (every child dies with it). Everywhere:
time limits enforced from outside, a memory limit, and output capped to its tail.
Exit code: 0 when every file passes (warnings allowed), 1 when one fails,
2 for a usage error or a file that cannot be graded at all.
"""
import ast
import json
import os
import secrets
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import check_worker
import checks
import runs
import training_check
from sandbox import PROJECT, GraderProblem, WorkerLost, start_worker  # noqa: F401  PROJECT: tests

STATUSES = ("pass", "fail", "warning", "error", "skipped")
FUNCTION_NAMES = tuple(checks.CHECKS)


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


# The functions the bound calls, in the order a student should fix them.
COMPONENTS = ("compute_KL", "bernoulli_log_prob", "sample_latent_variables_from_posterior",
              "neural_net_predict")
CALLS_THE_BOUND = {name for name, check in checks.CHECKS["vae_lower_bound"]
                   if check is not checks.check_bound_signature}


def knock_on(results):
    """results: one file's [{"function", "check", "status", "message"}]. -> the same,
    with each failing check that calls the bound naming the failing functions it calls."""
    failing = [name for name in COMPONENTS if any(
        r["function"] == name and r["status"] in ("fail", "error") for r in results)]
    if not failing:
        return results
    names = " and ".join(failing)
    note = f" (this follows from {names} failing: fix {names} first)"
    return [dict(r, message=r["message"] + note)
            if r["function"] == "vae_lower_bound" and r["check"] in CALLS_THE_BOUND
            and r["status"] in ("fail", "error") else r for r in results]


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
    return knock_on(results), notes


_shared, _shared_lock = {}, threading.Lock()


def shared(name, compute):
    """A value every file's grading uses, computed once (the data subset, the replays)."""
    with _shared_lock:
        if name not in _shared:
            _shared[name] = compute()
        return _shared[name]


def subset():
    import data
    _, train, train_labels, test, test_labels = data.load_mnist()
    n, k = training_check.TRAIN_IMAGES, training_check.TEST_IMAGES
    return {"train_images": train[:n], "train_labels": train_labels[:n],
            "test_images": test[:k], "test_labels": test_labels[:k]}


def grade_script(path, options):
    """The training loop and the figures: the file runs as __main__ on a subset
    of MNIST, and its trained parameters and saved figures are judged."""
    import figures_check
    import vae as reference
    arrays = shared("subset", subset)
    size = reference.count_params(training_check.assignment_config(reference))
    worker = start_worker(path, options.sandboxed, options.memory, options.import_timeout)
    try:
        answer, out = worker.request({"op": "run_script", "size": size}, arrays,
                                     options.script_timeout)
    except WorkerLost as e:
        why = (f"did not finish within {options.script_timeout:g} s on "
               f"{training_check.TRAIN_IMAGES} training images" if str(e) == "timeout"
               else worker.what_happened(e))
        return [result("(script)", "runs as a script", "error", why)]
    finally:
        worker.close()
    ran = result("(script)", "runs as a script", "pass",
                 f"on the first {training_check.TRAIN_IMAGES} training and "
                 f"{training_check.TEST_IMAGES} test images, given by data.load_mnist()")
    if not answer.get("ok"):
        ran.update(status="error", message=f"the script stopped: {describe(answer['error'])}; "
                   "it must run with no arguments on the images data.load_mnist() returns, "
                   "without downloading or reading other files")
    try:
        candidates = {str(name): np.asarray(check_worker.decode(tree, out), dtype=float)
                      for name, tree in answer.get("candidates", {}).items()}
        calls = [(check_worker.decode(call["images"], out), str(call["filename"]),
                  dict(call.get("kwargs", {}))) for call in answer.get("calls", [])]
    except (KeyError, TypeError, ValueError, RecursionError, check_worker.FrameError) as e:
        return [ran, result("(script)", "what it sent back", "error", f"unreadable: {e}")]
    replays = shared("replays", lambda: training_check.replays(reference, arrays["train_images"]))
    training, params = training_check.judge_training(candidates, arrays["train_images"],
                                                     reference, replays)
    gen_params, rec_params = params if params is not None else (None, None)
    figures = figures_check.judge_figures(calls, gen_params, rec_params,
                                          arrays["test_images"], reference)
    return [ran] + training + figures


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
    if not options.functions_only:
        try:
            report["results"] += grade_script(path, options)
        except GraderProblem as e:
            report["results"].append(result("(grader)", "start", "error", str(e)))
    return finish(report)


def counts(report):
    return {status: sum(r["status"] == status for r in report["results"]) for status in STATUSES}


PARTS = {"functions": None, "script": "(script)", "training": "(training)",
         "figures": "(figures)"}


def finish(report):
    """The overall verdict, and one per part (functions, script, training, figures)."""
    c = counts(report)
    report["verdict"] = ("error" if report["loaded"] is None else
                         "fail" if c["fail"] or c["error"] else "pass")
    report["parts"] = {}
    for part in PARTS:
        statuses = {r["status"] for r in report["results"] if part_of(r) == part}
        if statuses:
            report["parts"][part] = "fail" if statuses & {"fail", "error"} else "pass"
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
    add("--script-timeout", type=runs.positive_float, default=60.0,
        help="seconds for running the file as a script on the data subset")
    add("--functions-only", action="store_true",
        help="grade the functions only, not the training loop and the figures")
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


def part_of(r):
    return next((part for part, tag in PARTS.items() if tag == r["function"]), "functions")


def print_table(report):
    print(f"{report['file']} (loaded: {report['loaded'] or 'no'})")
    width = max(len(r["function"]) for r in report["results"])
    part = None
    for r in report["results"]:
        if part_of(r) != part:
            part = part_of(r)
            print(f"  {part}: {report['parts'].get(part, '').upper()}")
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
