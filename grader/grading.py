"""Grading one file: its import, its functions, its run as a script.

The grader judges and the submission only computes: a worker (grader/worker.py,
in the sandbox of grader/sandbox.py) loads the file and answers requests
("call compute_KL on these arrays") with raw results; this process draws
fresh inputs for every file, computes the reference's answers itself
(grader/checks.py) and compares. Every answer is validated before it is
used (grader/protocol.py). Whatever goes wrong while grading a file, the
student's doing or the grader's, becomes that file's row.

Time: one budget per file (--timeout) covers every start, request and
reload of its workers; a check has --check-timeout of worker time of its own.
Time the grader spends on its own computations is not counted, so a busy
grading process (--jobs) never costs a student a check.
"""
import secrets
import threading
import time

import numpy as np

from grader import checks, figures, intake, protocol, thumbnails, training, verdicts
from grader.sandbox import Budget, GraderProblem, WorkerLost, start_worker
from vaelib import networks

STATUSES = ("pass", "fail", "warning", "error", "skipped")
FUNCTION_NAMES = tuple(checks.CHECKS)
PARTS = {"functions": None, "script": "(script)", "training": "(training)",
         "figures": "(figures)"}


class Remote:
    """The student's function as the checks see it (the interface of checks.py)."""

    def __init__(self, worker, name, description, seconds, functions=None, clock=None):
        """seconds: the worker time all calls of one check may take together, its
        siblings' included (they share `clock`); functions: what the worker said
        of the file's functions, name -> description, for sibling()."""
        self.worker, self.name, self.seconds = worker, name, seconds
        self.clock = clock if clock is not None else [seconds]
        self.functions = functions or {}
        self.parameters = description["parameters"]
        self.plain_numpy = description["plain_numpy"]

    @property
    def left(self):
        return self.clock[0]

    @left.setter
    def left(self, value):
        self.clock[0] = value

    def sibling(self, name):
        """The file's function `name` (one of checks.CHECKS) on the same worker and
        within the same time, or None if the file does not define it."""
        if name not in self.functions or name not in checks.CHECKS:
            return None
        return Remote(self.worker, name, self.functions[name], self.seconds, self.functions,
                      self.clock)

    def call(self, *args, seed=None, errstate=None, gradient=False):
        arrays = []
        tree = protocol.encode(list(args), arrays)
        start = time.monotonic()
        try:
            answer, out = self.worker.request(
                {"op": "call", "function": self.name, "args": tree, "seed": seed,
                 "errstate": errstate, "gradient": gradient}, arrays, max(0.0, self.left))
        finally:
            self.left -= time.monotonic() - start
        if not answer["ok"]:
            error = answer["error"]
            raise verdicts.SubmissionError(error["type"], error["message"], error.get("line"),
                                         error.get("text") or "", protocol.where(error))
        try:
            value = protocol.decode(answer["value"], out)
        except Exception as e:   # noqa: BLE001  whatever is wrong with it: the worker's
            raise WorkerLost(f"the worker's answer could not be read ({e})") from None
        return verdicts.Result(value, answer["warnings"])

    def __call__(self, *args):
        return self.call(*args).value

    def seeded(self, seed, *args):
        return self.call(*args, seed=seed).value

    def bound_gradient(self, seed, gen_params, rec_params, data):
        return self.call(gen_params, rec_params, data, seed=seed, gradient=True).value


def result(function, check, status, message=""):
    return {"function": function, "check": check, "status": status, "message": message}


def describe(error):
    """'TypeError: ... at line 17 in f: `...`, called from line 40: `...`'."""
    return f"{error['type']}: {error['message']}{protocol.where(error)}"


# ---- The import, and loading the functions ---------------------------------------------

STOPPED_EARLY = "(before it got to the work at its top level)"
GUARD = '`if __name__ == "__main__":`'


def import_cause(submission, problems):
    """What to do about a file whose import misbehaved: the first top-level
    statement that does work, when it ran (intake.first_work), named."""
    if not submission.work or STOPPED_EARLY in problems:
        return (f"Put the training and plotting code under {GUARD}.")
    line, source = submission.work
    if not submission.guarded:
        return (f"The file has no {GUARD} guard, so importing it runs all the code at its "
                f"top level (its training and figures), from line {line}: `{source}`. Put that "
                f"code under {GUARD}.")
    return (f"Line {line}, `{source}`, is outside {GUARD}, so it runs whenever the file is "
            "imported: move it under the guard.")


def probe(submission, options, isolation, budget):
    """What importing the whole file does. -> (problems (sentences), the
    worker that imported it when there were none, for grading, else None)."""
    worker = start_worker(submission, isolation, budget, options.import_timeout)
    problems = []
    try:
        answer, _ = worker.request({"op": "import"}, [], options.import_timeout)
        if not answer["ok"]:
            problems.append(f"importing it failed: {describe(answer['error'])}")
            frames = answer["error"].get("frames") or []     # its top-level line: the outermost
            top = frames[-1]["line"] if frames and "file" not in frames[-1] else None
            if top is not None and submission.work and top < submission.work[0]:
                problems.append(STOPPED_EARLY)      # before any of its top-level work ran
        written = [name for name in answer.get("files", [])   # made or changed by the import
                   if name.split("/")[0] != "__pycache__"]
        if written:
            problems.append(f"importing it wrote files: {', '.join(written[:5])}")
    except WorkerLost as e:
        problems.append(f"importing it did not finish within {options.import_timeout:g} s (it "
                        "trains or loops at import time)" if str(e) == "timeout" else
                        "importing it ended the process: " + worker.what_happened(e))
    if problems:
        worker.close()
        return problems, None
    return problems, worker


def load(submission, mode, options, isolation, budget, worker=None):
    """A worker holding the submission, and what it says of its functions;
    worker: one that has imported it already (mode "full" then reuses that)."""
    if worker is None:
        worker = start_worker(submission, isolation, budget, options.import_timeout)
    elif mode == "full":
        mode = "imported"
    try:
        answer, _ = worker.request({"op": "load", "mode": mode, "names": FUNCTION_NAMES}, [],
                                   options.import_timeout)
    except WorkerLost as e:
        worker.close()
        return None, None, [f"loading it did not finish ({e})"]
    if not answer["ok"]:
        worker.close()
        return None, None, [describe(answer["error"])]
    return worker, answer["functions"], answer["notes"]


# The functions the bound calls, in the order a student should fix them.
COMPONENTS = ("compute_KL", "bernoulli_log_prob", "sample_latent_variables_from_posterior",
              "neural_net_predict")
CALLS_THE_BOUND = {name for name, check in checks.CHECKS["vae_lower_bound"]
                   if check is not checks.check_bound_signature}


def knock_on(results):
    """results: one file's [{"function", "check", "status", "message"}, and
    "explained" where the check measured that the difference follows from the
    functions the bound calls: True, or the names of those that make it]. -> the
    same without "explained", each such failing check of the bound naming those
    of them that fail. A bound that fails by itself (a stub, its signature, its
    own mistake) gets no note."""
    failing = [name for name in COMPONENTS if any(
        r["function"] == name and r["status"] in ("fail", "error") for r in results)]
    out = []
    for r in results:
        explained = r.get("explained")
        r = {key: value for key, value in r.items() if key != "explained"}
        names = " and ".join(name for name in failing if explained is True
                             or name in (explained or ()))
        if names and r["function"] == "vae_lower_bound" and r["check"] in CALLS_THE_BOUND \
                and r["status"] in ("fail", "error"):
            r["message"] += f" (this follows from {names} failing: fix {names} first)"
        out.append(r)
    return out


def grade_functions(submission, mode, options, isolation, budget, rng, worker=None):
    """Runs every check; a lost worker fails the check, skips the rest of that
    function and is replaced for the next one (within the file's budget)."""
    import vae as reference
    worker, functions, notes = load(submission, mode, options, isolation, budget, worker)
    if worker is None:
        return None, notes
    results = []
    try:
        for name, function_checks in checks.CHECKS.items():
            if name not in functions:
                if name in checks.GRADED:
                    results.append(result(name, "defined", "fail",
                                          f"{submission.name} defines no function {name}"))
                continue
            failed = lost = False
            for check_name, check in function_checks:
                if lost or worker is None or budget.left <= 0:
                    why = ("the file's time is up" if budget.left <= 0 else
                           "an earlier check of this function did not finish")
                    results.append(result(name, check_name, "skipped", f"not run: {why}"))
                    continue
                if failed and check in checks.AFTER_SUCCESS_ONLY:
                    results.append(result(name, check_name, "skipped",
                                          "not run: an earlier check of this function failed"))
                    continue
                remote = Remote(worker, name, functions[name], options.check_timeout, functions)
                explained = False
                try:
                    status, message, explained = verdicts.judge(check, remote, reference, rng)
                except WorkerLost as e:
                    status, lost = "error", True
                    message = (f"did not finish within {remote.seconds:g} s (an endless loop?)"
                               if str(e) == "timeout" and remote.left <= 0.05 else
                               "not finished: the file's time is up" if str(e) == "timeout"
                               else worker.what_happened(e))
                except Exception as e:   # noqa: BLE001  the grader's own failure: say so, go on
                    status, message = "error", (f"the grader could not judge this check "
                                                f"({type(e).__name__}: {e})")
                failed = failed or status in ("fail", "error")
                results.append(result(name, check_name, status, message))
                results[-1]["seconds"] = round(max(0.0, remote.seconds - remote.left), 3)
                if explained:
                    results[-1]["explained"] = explained
                if lost:
                    worker.close()
                    worker = None
                    if budget.left > 0:
                        worker, functions, _ = load(submission, mode, options, isolation, budget)
    finally:
        if worker is not None:
            worker.close()
    return knock_on(results), notes


# ---- The script -------------------------------------------------------------------------

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
    n, k = training.TRAIN_IMAGES, training.TEST_IMAGES
    # Copies, not views: the full arrays (about 440 MB as float64) are freed once this returns.
    return {"train_images": train[:n].copy(), "train_labels": train_labels[:n].copy(),
            "test_images": test[:k].copy(), "test_labels": test_labels[:k].copy()}


# Errors of a script that looks for what the sandbox does not give (files, network, arguments).
OUTSIDE_ERRORS = {"FileNotFoundError", "PermissionError", "OSError", "IOError", "URLError",
                  "HTTPError", "ConnectionError", "gaierror", "ModuleNotFoundError", "ImportError",
                  "SystemExit", "DataError"}


def script_stopped(error):
    """The message of a script that raised `error` (validated): where, and what to do."""
    folder = error.get("missing_folder")
    if folder:
        return (f"the script stopped{protocol.where(error)}: your script writes into {folder}, "
                "which a fresh copy of your folder does not have: create it with "
                f"os.makedirs({folder.rstrip('/')!r}, exist_ok=True) before writing into it. "
                "What it saved before this line is graded below")
    said = f"the script stopped: {describe(error)}"
    if error["type"] in OUTSIDE_ERRORS or "argv" in (error.get("text") or ""):
        said += ("; it must run with no arguments on the images data.load_mnist() returns, "
                 "without downloading or reading other files than those of its folder")
    return said


def reference_figures(reference, reference_run, test_images):
    """The reference's figures from the skeleton's run (thumbnails.py), or None
    if they cannot be made (the pages then show the student's alone)."""
    try:
        _, unflatten = training.flatten(training.initial_params(reference))
        return thumbnails.reference_figures(*unflatten(reference_run), test_images, reference)
    except Exception:   # noqa: BLE001  a picture for the pages, never a verdict
        return None


def grade_script(submission, options, isolation, budget, shown=None):
    """The training loop and the figures: the file runs as __main__ on a subset
    of MNIST, and its trained parameters and saved figures are judged. shown
    (a dict), if given, gets the figures the pages show (thumbnails.kept)."""
    import vae as reference
    data = shared("subset", subset)
    size = networks.count_params(training.assignment_config(reference))
    if budget.left <= 0:
        return [result("(script)", "runs as a script", "skipped", "not run: the file's time is up")]
    worker = start_worker(submission, isolation, budget, options.import_timeout)
    arrays = []
    tree = protocol.encode([data["train_images"], data["train_labels"], data["test_images"],
                            data["test_labels"]], arrays)
    # The coordinates whose Adam steps are replayed, new for every file (read_trace uses this copy).
    followed = np.random.default_rng(secrets.randbits(64)).choice(size, training.TRACED,
                                                                   replace=False)
    try:
        answer, out = worker.request({"op": "run_script", "size": size, "data": tree,
                                      "trace": protocol.encode(followed, arrays)}, arrays,
                                     options.script_timeout)
    except WorkerLost as e:
        why = (f"did not finish within {options.script_timeout:g} s on "
               f"{training.TRAIN_IMAGES} training images" if str(e) == "timeout"
               else worker.what_happened(e))
        return [result("(script)", "runs as a script", "error", why)]
    finally:
        worker.close()
    ran = result("(script)", "runs as a script", "pass",
                 f"on the first {training.TRAIN_IMAGES} training and "
                 f"{training.TEST_IMAGES} test images, given by data.load_mnist()")
    if not answer["ok"]:
        ran.update(status="error", message=script_stopped(answer["error"]))
    try:
        candidates = {name: np.asarray(protocol.decode(tree, out), dtype=float)
                      for name, tree in answer["candidates"].items()}
        calls = [(protocol.decode(call["images"], out), call["filename"], call["kwargs"])
                 for call in answer["calls"]]
        trace = training.read_trace(answer.get("gradients"), out, followed, size)
    except Exception as e:   # noqa: BLE001  the worker's answer, not the grader's failure
        return [ran, result("(script)", "what it sent back", "error",
                            f"the worker's answer could not be read ({type(e).__name__}: {e})")]
    reference_run = shared("reference run", lambda: training.skeleton_run(
        reference, data["train_images"]))
    trained, params = training.judge_training(
        candidates, trace, data["train_images"], reference, reference_run,
        stopped=None if answer["ok"] else describe(answer["error"]))
    gen_params, rec_params = params if params is not None else (None, None)
    found = any(r["check"] == "trained parameters found" and r["status"] == "pass"
                for r in trained)
    seen = {}
    judged = figures.judge_figures(
        calls, gen_params, rec_params, data["test_images"], reference,
        "the training was not verified (see training)" if found
        else "the trained parameters were not found", seen)
    if shown is not None:
        try:
            shown.update(thumbnails.kept(seen, shared("reference figures", lambda: (
                reference_figures(reference, reference_run, data["test_images"])))))
        except Exception:   # noqa: BLE001  pictures for the pages, never a student's grade
            pass
    return [ran] + trained + judged


# ---- A whole file -----------------------------------------------------------------------

def grade_file(found, options, isolation):
    """found: an intake.Found. -> report: file, verdict ("pass", "fail" or
    "error"), loaded, results, notes; never raises for anything a submission does."""
    report = {"file": str(found.path), "loaded": None, "results": [], "notes": []}
    try:
        grade_into(report, found, options, isolation)
    except intake.Rejected as e:
        report["results"].append(result("(module)", "load", "error", str(e)))
    except GraderProblem as e:
        report["results"].append(result("(grader)", "start", "error", str(e)))
        report["grader_problem"] = True
    except (Exception, WorkerLost) as e:   # noqa: BLE001  one student, one row, whatever happens
        report["results"].append(result("(grader)", "grading", "error",
                                        f"the grader could not grade this file "
                                        f"({type(e).__name__}: {str(e)[:300]})"))
        report["grader_problem"] = True
    return finish(report)


def grade_into(report, found, options, isolation):
    submission = intake.take(found)
    report["notes"] += submission.notes
    budget = Budget(options.timeout)
    problems, imported = probe(submission, options, isolation, budget)
    module_result = result("(module)", "import has no side effects", "pass")
    if problems:
        said = [p for p in problems if p != STOPPED_EARLY]
        module_result.update(status="fail", message="; ".join(said) + ". "
                             + import_cause(submission, problems) + " The functions below were "
                             "graded from the file's imports and definitions only.")
    report["results"].append(module_result)
    mode = "definitions" if problems else "full"
    rng = np.random.default_rng(secrets.randbits(64))    # fresh inputs for every file
    results, notes = grade_functions(submission, mode, options, isolation, budget, rng, imported)
    if results is None:
        report["results"].append(result("(module)", "load", "error",
                                        "the file could not be loaded: " + "; ".join(notes)))
        return
    report.update(loaded="full" if mode == "full" else "definitions only")
    report["notes"] += notes
    report["results"] += results
    if not options.functions_only:
        shown = {}
        report["results"] += grade_script(submission, options, isolation, budget, shown)
        if shown:
            report["figures"] = shown    # arrays for the pages, never in the JSON


def counts(report):
    return {status: sum(r["status"] == status for r in report["results"]) for status in STATUSES}


def part_of(r):
    return next((part for part, tag in PARTS.items() if tag == r["function"]), "functions")


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
