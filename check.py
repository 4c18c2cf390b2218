"""Grade a student's vae.py against the reference, function by function.

    python check.py path/to/vae.py             # one submission: a table per function
    python check.py submissions/ --json        # a folder: one summary row per file
    python check.py a.py b.py --timeout 60

A submission is untrusted code. Each one runs in separate processes (one to
probe what importing it does, one to grade it), in a temporary folder holding a
copy of the file, with a time limit, a memory limit and OPENBLAS_NUM_THREADS=1;
`from data import load_mnist, save_images` gets this project's offline data.py.
If importing the file trains, hangs, crashes or writes files (no
`if __name__ == "__main__":` guard), that is reported as a failure of its own
and the functions are graded from the file's imports, definitions and literal
constants only. Exit code: 0 when every check passes (warnings allowed), 1 when
something fails, 2 when a file could not be loaded at all.
"""
import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent
MARKER = "@@check "             # prefix of the worker's result lines on stdout
GRADED = ("sample_latent_variables_from_posterior", "bernoulli_log_prob", "compute_KL",
          "vae_lower_bound")
OPTIONAL = ("neural_net_predict", "init_net_params", "sigmoid", "relu")
STATUSES = ("pass", "fail", "warning", "error", "skipped")


# ----------------------------------------------------------------------------
# The parent: runs workers, survives them, prints tables
# ----------------------------------------------------------------------------

def run_worker(mode, submission, timeout, memory_mb, check_seconds=30.0):
    """Runs `check.py --worker mode` on a copy of the submission in a fresh
    temporary folder. -> (records, stdout tail, timed_out, return code, files written)."""
    with tempfile.TemporaryDirectory(prefix="vae-check-") as workdir:
        copy = Path(workdir) / "submission.py"
        shutil.copyfile(submission, copy)
        before = set(os.listdir(workdir))
        env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0",
                   VAE_CHECK_SECONDS=str(check_seconds))

        def limit_memory():
            import resource
            limit = memory_mb * 2 ** 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            os.setsid()   # its own process group, so a timeout kills its children too

        process = subprocess.Popen(
            [sys.executable, str(PROJECT / "check.py"), "--worker", mode, str(copy)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, preexec_fn=limit_memory)
        timed_out = False
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, 9)
            output, _ = process.communicate()
        written = sorted(set(os.listdir(workdir)) - before - {"__pycache__"})
    text = output.decode(errors="replace")
    records = [json.loads(line[len(MARKER):]) for line in text.splitlines()
               if line.startswith(MARKER)]
    other = [line for line in text.splitlines() if not line.startswith(MARKER)]
    return records, other[-3:], timed_out, process.returncode, written


def check_submission(submission, timeout, import_timeout, memory_mb, check_seconds=30.0):
    """-> report dict: file, loaded ("full", "definitions only" or None), results."""
    results = []
    records, tail, timed_out, code, written = run_worker(
        "probe", submission, min(import_timeout, timeout), memory_mb)
    probe = records[-1] if records else {}
    problems = []
    if timed_out:
        problems.append(f"importing it did not finish within {min(import_timeout, timeout):g} s "
                        "(it trains or loops at import time)")
    elif not probe.get("imported"):
        problems.append("importing it failed: " + (probe.get("error") or " / ".join(tail)
                                                   or f"the process exited with code {code}"))
    if written:
        problems.append(f"importing it wrote files: {', '.join(written[:5])}")
    if problems:
        results.append({"function": "(module)", "check": "import has no side effects",
                        "status": "fail", "message": "; ".join(problems) + ". Put the training "
                        "and plotting code under `if __name__ == \"__main__\":`. The functions "
                        "below were graded from the file's imports and definitions only."})
    else:
        results.append({"function": "(module)", "check": "import has no side effects",
                        "status": "pass", "message": ""})
    mode = "grade-definitions" if problems else "grade-full"
    records, tail, timed_out, code, _ = run_worker(mode, submission, timeout, memory_mb,
                                                   check_seconds)
    loaded = next((r for r in records if "loaded" in r), None)
    graded = [r for r in records if "status" in r]
    if loaded is None:
        return {"file": str(submission), "loaded": None, "results": results + [{
            "function": "(module)", "check": "load", "status": "error",
            "message": "the file could not be loaded: " + (" / ".join(tail) or f"exit code {code}")}]}
    results += graded
    if timed_out or code != 0:
        done = {(r["function"], r["check"]) for r in graded}
        current = next((r for r in reversed(records) if "running" in r), None)
        if current and (current["function"], current["check"]) not in done:
            why = f"stopped after {timeout:g} s" if timed_out else f"the process died (exit code {code})"
            results.append({"function": current["function"], "check": current["check"],
                            "status": "error", "message": f"{why} during this check; "
                            "the checks after it did not run. " + " / ".join(tail)})
    return {"file": str(submission), "loaded": loaded["loaded"],
            "notes": loaded.get("notes", []), "results": results}


def summary(report):
    counts = {status: sum(r["status"] == status for r in report["results"]) for status in STATUSES}
    return counts


def exit_code(report):
    if report["loaded"] is None:
        return 2
    counts = summary(report)
    return 1 if counts["fail"] or counts["error"] else 0


def print_table(report):
    print(f"{report['file']} (loaded: {report['loaded'] or 'no'})")
    width = max(len(r["function"]) for r in report["results"])
    for r in report["results"]:
        print(f"  {r['function']:<{width}}  {r['check']:<44} {r['status'].upper():<7} {r['message']}")
    for note in report.get("notes", []):
        print(f"  note: {note}")
    counts = summary(report)
    print(f"summary: {counts['pass']} passed, {counts['fail']} failed, {counts['warning']} "
          f"warnings, {counts['error']} errors, {counts['skipped']} skipped")


def submissions_in(paths):
    files = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    return files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Grade vae.py submissions against the reference.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="SUBMISSION",
                        help="a student's vae.py, several files, or folders of them")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds for grading one file")
    parser.add_argument("--import-timeout", type=float, default=20.0,
                        help="seconds that importing a file may take")
    parser.add_argument("--check-timeout", type=float, default=30.0,
                        help="seconds for one check of one function")
    parser.add_argument("--memory", type=int, default=4096, help="memory limit in MiB")
    args = parser.parse_args(argv)
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if min(args.timeout, args.import_timeout, args.check_timeout, args.memory) <= 0:
        parser.error("--timeout, --import-timeout, --check-timeout and --memory must be positive")
    return args


def main(argv=None):
    args = parse_args(argv)
    files = submissions_in(args.paths)
    if not files:
        print("check.py: error: no .py files found", file=sys.stderr)
        return 2
    reports = []
    for path in files:
        reports.append(check_submission(path, args.timeout, args.import_timeout, args.memory,
                                        args.check_timeout))
        if not args.json and len(files) == 1:
            print_table(reports[-1])
        elif not args.json:
            counts = summary(reports[-1])
            print(f"{str(path):<50} {'loaded' if reports[-1]['loaded'] else 'NOT LOADED':<10} "
                  f"{counts['pass']:3d} passed {counts['fail']:3d} failed "
                  f"{counts['warning']:3d} warnings {counts['error']:3d} errors", flush=True)
    if args.json:
        print(json.dumps(reports if len(files) > 1 else reports[0], indent=2))
    return max(exit_code(report) for report in reports)


# ----------------------------------------------------------------------------
# The worker: loads the submission, runs the checks, prints one line per result
# ----------------------------------------------------------------------------

def emit(**record):
    sys.__stdout__.write(MARKER + json.dumps(record) + "\n")
    sys.__stdout__.flush()


def load_definitions(path):
    """Executes only the imports, function and class definitions and literal
    constant assignments of the file, one statement at a time."""
    import types
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    module = types.ModuleType("submission")
    module.__file__ = str(path)
    notes = []
    for node in tree.body:
        keep = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                ast.literal_eval(node.value)
                keep = True
            except ValueError:
                pass
        if keep:
            try:
                exec(compile(ast.Module([node], []), str(path), "exec"), module.__dict__)
            except Exception as e:   # an import that fails: the functions may still work
                notes.append(f"line {node.lineno}: {type(e).__name__}: {e}")
    return module, notes


def import_whole(path):
    """Imports the file as the module `submission`, running all its top-level code."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("submission", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker(mode, path):
    sys.path.insert(0, str(PROJECT))    # our data.py, plotting.py and the reference vae.py
    sys.argv = [str(path)]
    if mode == "probe":
        try:
            import_whole(path)
            emit(imported=True)
        except BaseException as e:      # SystemExit, KeyboardInterrupt and all
            emit(imported=False, error=f"{type(e).__name__}: {e}")
        return 0
    try:
        if mode == "grade-full":
            module, notes = import_whole(path), []
        else:
            module, notes = load_definitions(path)
    except SyntaxError as e:
        print(f"SyntaxError: {e}")
        return 2
    emit(loaded="full" if mode == "grade-full" else "definitions only", notes=notes)
    for function, check, status, message in run_all(module):
        emit(function=function, check=check, status=status, message=message)
    return 0


# ----------------------------------------------------------------------------
# The checks (run inside the worker). Dimensions are the assignment's, since
# submissions may hard-code them: L = 50 latent dimensions, D = 784 pixels.
# ----------------------------------------------------------------------------

LATENT, PIXELS, HIDDEN, SEED = 50, 784, 40, 0


class Failed(Exception):
    """A check's verdict other than pass: status "fail" or "warning"."""

    def __init__(self, message, status="fail"):
        super().__init__(message)
        self.status = status


class CheckTimeout(BaseException):
    pass


def described(value):
    """A short description of what a function returned."""
    import numpy as np
    if value is None:
        return "None (is the function still a stub, or missing its return?)"
    shape = np.shape(value)
    return f"shape {shape}" if shape else f"the scalar {float(np.asarray(value, dtype=float)):.6g}"


def as_array(value, shape, what):
    """The value as a float array of the expected shape, or a fail message."""
    import numpy as np
    if value is None or np.shape(value) != shape:
        raise Failed(f"expected {what} of shape {shape}, got {described(value)}")
    return np.asarray(value, dtype=float)


def close(got, expected, rtol):
    import numpy as np
    return bool(np.all(np.isfinite(got))) and np.allclose(got, expected, rtol=rtol, atol=rtol * 1e-3)


def draw(rs_seed, function, *args):
    """Calls function with the global stream seeded, as the skeleton's run does."""
    import autograd.numpy.random as npr
    npr.seed(rs_seed)
    return function(*args)


def networks(reference, noise_off=False):
    """Generator (L, HIDDEN, D) and recognition (D, HIDDEN, 2L) parameters with
    moderate logits. noise_off: the encoder's log_std is -50, so z = mean."""
    import autograd.numpy.random as npr
    import numpy as np
    npr.seed(SEED)
    gen = reference.init_net_params([LATENT, HIDDEN, PIXELS], scale=0.2)
    rec = reference.init_net_params([PIXELS, HIDDEN, 2 * LATENT], scale=0.05)
    if noise_off:
        W, b = rec[-1]
        keep = (np.arange(2 * LATENT) < LATENT).astype(float)
        rec = rec[:-1] + [(W * keep, b * keep - 50 * (1 - keep))]
    return gen, rec


def binary_images(n):
    import numpy as np
    return (np.random.RandomState(1).rand(n, PIXELS) < 0.3).astype(float)


def encoder_outputs(n, mean=None, log_std=None):
    import numpy as np
    rs = np.random.RandomState(2)
    mean = rs.randn(n, LATENT) if mean is None else np.broadcast_to(mean, (n, LATENT))
    log_std = 0.5 * rs.randn(n, LATENT) if log_std is None else np.broadcast_to(log_std, (n, LATENT))
    return np.hstack([mean, log_std])


# -- sampler ---------------------------------------------------------------

def check_sampler_shape(f, reference):
    as_array(f(encoder_outputs(7)), (7, LATENT), "z")


def check_sampler_mean(f, reference):
    import numpy as np
    q = encoder_outputs(5, log_std=-50.0)
    z = as_array(f(q), (5, LATENT), "z")
    # exp(-50) * eps is below 1e-20; 1e-8 still tells a mean from a sample.
    if not np.allclose(z, q[:, :LATENT], rtol=0, atol=1e-8):
        raise Failed("with log_std = -50 the samples should equal the mean (exp(-50) is "
                     f"2e-22); the largest difference was {np.max(np.abs(z - q[:, :LATENT])):.3g}. "
                     "Check that the first L columns are the mean and the noise is scaled "
                     "by exp(log_std)")


def check_sampler_moments(f, reference):
    # 20,000 draws per dimension: the sample mean has standard error std/141 and
    # the sample standard deviation std/200; 5 standard errors leave false alarms
    # below one in a million while log-variance (std sqrt(sigma)) is ~50 errors off.
    import numpy as np
    n, log_std = 20000, np.linspace(-0.8, 0.8, LATENT)
    z = as_array(f(encoder_outputs(n, mean=1.0, log_std=log_std)), (n, LATENT), "z")
    std, sample_std = np.exp(log_std), z.std(axis=0, ddof=1)
    if not np.all(np.abs(z.mean(axis=0) - 1.0) < 5 * std / np.sqrt(n)):
        raise Failed("the samples' mean is not the encoder's mean (mean 1 in every "
                     f"dimension; got means from {z.mean(0).min():.3f} to {z.mean(0).max():.3f})")
    if np.all(np.abs(sample_std - std) < 5 * std / np.sqrt(2 * n)):
        return
    hints = [(np.sqrt(std), "looks like log_std was used as log-variance: samples have "
                            "standard deviation sqrt(sigma) = exp(log_std / 2)"),
             (std ** 2, "samples have standard deviation sigma^2 = exp(2 log_std)"),
             (np.ones_like(std), "samples have standard deviation 1: the noise is not scaled")]
    cause = next((why for target, why in hints if np.allclose(sample_std, target, rtol=0.03)),
                 "the noise is not scaled by exp(log_std)")
    raise Failed(f"expected standard deviations exp(log_std) (from {std.min():.3f} to "
                 f"{std.max():.3f}), got {sample_std.min():.3f} to {sample_std.max():.3f}: {cause}")


def check_sampler_stream(f, reference):
    import numpy as np
    q = encoder_outputs(6)
    if not np.allclose(draw(3, f, q), draw(3, reference.sample_latent_variables_from_posterior, q),
                       rtol=1e-9):
        raise Failed("the samples are valid but not the skeleton's draws: eps should come "
                     "from one npr.randn(N, L) call on the global stream, so that a run "
                     "matches the reference run number for number", "warning")


# -- Bernoulli log-likelihood ------------------------------------------------

def check_bernoulli_values(f, reference):
    # Moderate logits (|l| < 8): a naive but correct formula agrees with the
    # stable one to about 1e-12 relative, so rtol 1e-8 separates right from wrong.
    import numpy as np
    x, logits = binary_images(6), 3 * np.random.RandomState(4).randn(6, PIXELS)
    got = as_array(f(x, logits), (6,), "one log-probability per image")
    expected = reference.bernoulli_log_prob(x, logits)
    if close(got, expected, 1e-8):
        return
    hints = [(-expected, "the sign is flipped"),
             (expected / PIXELS, "looks like a mean over pixels instead of a sum"),
             (np.sum(x * np.log(reference.sigmoid(logits)), axis=1), "the (1 - x) log(1 - p) term is missing")]
    cause = next((why for target, why in hints if close(got, target, 1e-6)), "")
    raise Failed(f"expected {expected[:2].round(3)} ... (sum over pixels of "
                 f"log Bernoulli(x | sigmoid(l))), got {got[:2].round(3)} ...; {cause}".rstrip("; "))


def check_bernoulli_extremes(f, reference):
    import numpy as np
    x = np.array([[1.0, 1.0, 0.0, 0.0]])
    logits = np.array([[1e3, -1e3, 1e3, -1e3]])
    with np.errstate(all="ignore"):
        got = np.array([np.asarray(f(x[:, [d]], logits[:, [d]]), float).ravel()[0] for d in range(4)])
    if not np.allclose(got, [0.0, -1e3, -1e3, 0.0], rtol=1e-9, atol=1e-9):
        raise Failed(f"at logits +-1000 expected [0, -1000, -1000, 0], got {got}: "
                     "log(sigmoid(l)) underflows to log(0); x * l - logaddexp(0, l) is exact. "
                     "Harmless at the logits of a normal run", "warning")


# -- KL ------------------------------------------------------------------------

def check_kl_shape(f, reference):
    import numpy as np
    got = f(encoder_outputs(5))
    if got is not None and np.shape(got) == ():
        raise Failed(f"expected one KL per image, shape (5,), got {described(got)}: " + (
            "is the function still a stub?" if float(got) == 0 else
            "the KL was summed over the whole batch"))
    as_array(got, (5,), "one KL per image")


def check_kl_zero(f, reference):
    import numpy as np
    got = as_array(f(np.zeros((3, 2 * LATENT))), (3,), "one KL per image")
    if not np.allclose(got, 0, atol=1e-12):
        raise Failed(f"KL(N(0, I) || N(0, I)) is 0, got {got}")


def check_kl_known_value(f, reference):
    # Mean 1 and log_std log 2 in every dimension: 1/2 (4 + 1 - 1 - 2 log 2) = 2 - log 2 each.
    import numpy as np
    expected = LATENT * (2 - np.log(2))
    got = as_array(f(encoder_outputs(2, mean=1.0, log_std=np.log(2.0))), (2,), "one KL per image")
    if close(got, expected, 1e-10):
        return
    log_variance = LATENT * 0.5 * (2 + 1 - 1 - np.log(2))
    cause = ("looks like log_std was used as log-variance" if close(got, log_variance, 1e-6)
             else "the sign is flipped" if close(got, -expected, 1e-6) else "")
    raise Failed(f"mean 1, log_std log 2 in {LATENT} dimensions: expected "
                 f"{LATENT} (2 - log 2) = {expected:.4f}, got {got[0]:.4f}; {cause}".rstrip("; "))


def check_kl_values(f, reference):
    q = encoder_outputs(4)
    got = as_array(f(q), (4,), "one KL per image")
    expected = reference.compute_KL(q)
    if not close(got, expected, 1e-10):
        raise Failed(f"expected {expected.round(4)}, got {got.round(4)} (closed form, "
                     "Kingma & Welling 2014, Appendix B)")


# -- the bound -----------------------------------------------------------------

def check_bound_signature(f, reference):
    import inspect
    parameters = list(inspect.signature(f).parameters)
    if len(parameters) != 3:
        raise Failed(f"expected exactly (gen_params, rec_params, data), got ({', '.join(parameters)}):"
                     " the harness calls it with three arguments")
    if parameters != ["gen_params", "rec_params", "data"]:
        raise Failed(f"three parameters as expected, named ({', '.join(parameters)}) instead of "
                     "(gen_params, rec_params, data)", "warning")


def bound_noise_off(f, reference, data):
    gen, rec = networks(reference, noise_off=True)
    return draw(5, f, gen, rec, data), draw(5, reference.vae_lower_bound, gen, rec, data)


def check_bound_scalar(f, reference):
    import numpy as np
    got, _ = bound_noise_off(f, reference, binary_images(4))
    if got is None or np.shape(got) != ():
        raise Failed(f"expected a scalar (the mean over the batch), got {described(got)}")


def check_bound_value(f, reference):
    # Noise off, so both are deterministic; rtol 1e-8 as for the log-likelihood.
    data = binary_images(4)
    got, expected = bound_noise_off(f, reference, data)
    got = float(as_array(got, (), "a scalar"))
    if close(got, expected, 1e-8):
        return
    hints = [(-expected, "the sign is flipped: it returns KL - log p(x|z), the bound must be "
                         "log p(x|z) - KL"),
             (len(data) * expected, "looks like a sum over the batch instead of the mean")]
    cause = next((why for target, why in hints if close(got, target, 1e-6)), "")
    raise Failed(f"with the posterior noise switched off expected {expected:.4f}, got "
                 f"{got:.4f}; {cause}".rstrip("; "))


def check_bound_batch_mean(f, reference):
    import numpy as np
    one = binary_images(1)
    single, _ = bound_noise_off(f, reference, one)
    batch, _ = bound_noise_off(f, reference, np.repeat(one, 5, axis=0))
    single, batch = float(as_array(single, (), "a scalar")), float(as_array(batch, (), "a scalar"))
    if not close(batch, single, 1e-10):
        ratio = batch / single if single else float("nan")
        raise Failed(f"a batch of 5 copies of one image should give that image's bound "
                     f"{single:.4f}, got {batch:.4f} ({ratio:.2f} times): "
                     + ("it sums over the batch instead of averaging" if abs(ratio - 5) < 1e-6
                        else "it is not the mean over the batch"))


def check_bound_gradient(f, reference):
    # Gradients through autograd with the noise off; rtol 1e-6 allows naive formulas.
    import numpy as np
    from autograd import grad
    from autograd.misc import flatten
    import autograd.numpy
    modules = [value for value in f.__globals__.values() if isinstance(value, type(np))]
    if any(m is np for m in modules) and not any(m is autograd.numpy for m in modules):
        # Differentiating plain NumPy code makes object arrays: slow, then an error.
        raise Failed("the file imports plain numpy and not autograd.numpy, so autograd cannot "
                     "differentiate the bound: use `import autograd.numpy as np`")
    gen, rec = networks(reference, noise_off=True)
    data = binary_images(3)
    flat, unflatten = flatten((gen, rec))
    try:
        got = grad(lambda p: draw(5, f, *unflatten(p), data))(flat)
    except Exception as e:
        raise Failed(f"autograd cannot differentiate it ({type(e).__name__}: {e}); use "
                     "autograd.numpy (import autograd.numpy as np), not plain numpy") from e
    expected = grad(lambda p: draw(5, reference.vae_lower_bound, *unflatten(p), data))(flat)
    if not np.allclose(got, expected, rtol=1e-6, atol=1e-9):
        worst = np.argmax(np.abs(got - expected))
        raise Failed(f"the gradient differs from the reference's (largest difference at "
                     f"parameter {worst}: {got[worst]:.4g} instead of {expected[worst]:.4g})")


def check_bound_stream(f, reference):
    import numpy as np
    gen, rec = networks(reference)
    data = binary_images(4)
    got = draw(7, f, gen, rec, data)
    expected = draw(7, reference.vae_lower_bound, gen, rec, data)
    if not np.allclose(float(got), expected, rtol=1e-9):
        raise Failed("with the posterior noise on, the value differs from the reference's "
                     "for the same seed: the sampler differs (see its checks) or the noise is "
                     "not drawn as one npr.randn(N, L) per call, as in the skeleton", "warning")


# -- optional functions ----------------------------------------------------------

def check_sigmoid_values(f, reference):
    import numpy as np
    x = np.linspace(-20, 20, 41)
    got = as_array(f(x), (41,), "elementwise values")
    if not close(got, reference.sigmoid(x), 1e-9):
        raise Failed("expected 1 / (1 + exp(-x)) elementwise")


def check_sigmoid_extremes(f, reference):
    import warnings

    import numpy as np
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="warn"):
        warnings.simplefilter("always")
        got = np.asarray(f(np.array([-1e4, 1e4])), float)
    if caught or not np.allclose(got, [0, 1], atol=1e-12):
        raise Failed(f"at x = -1e4 and 1e4 expected 0 and 1 without warnings, got {got} "
                     f"({len(caught)} warnings): exp(-x) overflows; scipy's expit or "
                     "0.5 * (tanh(x / 2) + 1) does not", "warning")


def check_relu_values(f, reference):
    import numpy as np
    x = np.linspace(-2, 2, 9)
    if not close(as_array(f(x), (9,), "elementwise values"), np.maximum(0, x), 1e-12):
        raise Failed("expected max(0, x) elementwise")


def check_init_shapes(f, reference):
    import autograd.numpy.random as npr
    import numpy as np
    npr.seed(SEED)
    params = f([3, 4, 2])
    shapes = [tuple(np.shape(p) for p in layer) for layer in params or []]
    if shapes != [((3, 4), (4,)), ((4, 2), (2,))]:
        raise Failed(f"for layer sizes [3, 4, 2] expected [(W (3, 4), b (4,)), (W (4, 2), b (2,))],"
                     f" got {shapes}")


def check_init_stream(f, reference):
    import numpy as np
    got, expected = draw(SEED, f, [3, 4, 2]), draw(SEED, reference.init_net_params, [3, 4, 2])
    if not all(np.allclose(a, b) for layer, ref in zip(got, expected) for a, b in zip(layer, ref)):
        raise Failed("valid shapes, but not the skeleton's draws (scale * npr.randn, W then b, "
                     "layer by layer, default scale 1e-2)", "warning")


def check_predict_values(f, reference):
    import numpy as np
    gen, _ = networks(reference)
    z = np.random.RandomState(6).randn(5, LATENT)
    expected = reference.neural_net_predict(gen, z)
    got = as_array(f(gen, z), expected.shape, "outputs")
    if close(got, expected, 1e-10):
        return
    relu_last = np.maximum(expected, 0)
    cause = ("ReLU is applied to the last layer too; it should be linear" if close(got, relu_last, 1e-8)
             else "expected ReLU on every hidden layer and a linear last layer, np.dot(inputs, W) + b")
    raise Failed(cause)


def check_predict_vector(f, reference):
    import numpy as np
    gen, _ = networks(reference)
    z = np.random.RandomState(6).randn(LATENT)
    try:
        got = np.asarray(f(gen, z), float)
    except Exception as e:
        raise Failed(f"a 1-D input (D_in,) fails: {type(e).__name__}: {e}", "warning") from e
    if got.shape != (PIXELS,) or not close(got, reference.neural_net_predict(gen, z), 1e-10):
        raise Failed(f"a 1-D input (D_in,) should give (D_out,) = ({PIXELS},), got {got.shape}",
                     "warning")


CHECKS = {
    "sample_latent_variables_from_posterior": [
        ("returns (N, L)", check_sampler_shape),
        ("returns the mean when log_std = -50", check_sampler_mean),
        ("mean and std of 20,000 samples", check_sampler_moments),
        ("same draws as the skeleton", check_sampler_stream)],
    "bernoulli_log_prob": [
        ("values at moderate logits", check_bernoulli_values),
        ("exact at logits +-1000", check_bernoulli_extremes)],
    "compute_KL": [
        ("one value per image", check_kl_shape),
        ("zero at the prior", check_kl_zero),
        ("mean 1, log_std log 2: 2 - log 2 each", check_kl_known_value),
        ("values", check_kl_values)],
    "vae_lower_bound": [
        ("signature (gen_params, rec_params, data)", check_bound_signature),
        ("returns a scalar", check_bound_scalar),
        ("value with the posterior noise off", check_bound_value),
        ("mean over the batch", check_bound_batch_mean),
        ("gradient through autograd", check_bound_gradient),
        ("same draws as the skeleton", check_bound_stream)],
    "neural_net_predict": [
        ("values", check_predict_values), ("1-D input", check_predict_vector)],
    "init_net_params": [
        ("shapes", check_init_shapes), ("same draws as the skeleton", check_init_stream)],
    "sigmoid": [("values", check_sigmoid_values), ("no overflow at +-1e4", check_sigmoid_extremes)],
    "relu": [("values", check_relu_values)],
}


# Whether a correct function draws what the skeleton draws means little once it is wrong.
AFTER_SUCCESS_ONLY = {check_sampler_stream, check_bound_stream, check_init_stream}


def run_all(module):
    """Yields (function, check, status, message) for every check; announces
    each check first, so that the parent knows where a worker died."""
    import signal
    import traceback

    import vae as reference

    def alarm(signum, frame):
        raise CheckTimeout()

    seconds = float(os.environ.get("VAE_CHECK_SECONDS", "30"))
    signal.signal(signal.SIGALRM, alarm)
    for name, checks in CHECKS.items():
        f = getattr(module, name, None)
        if not callable(f):
            if name in GRADED:
                yield name, "defined", "fail", f"vae.py defines no function {name}"
            continue
        failed = False
        for check, run in checks:
            if failed and run in AFTER_SUCCESS_ONLY:
                yield name, check, "skipped", "not run: an earlier check of this function failed"
                continue
            emit(running=True, function=name, check=check)
            signal.setitimer(signal.ITIMER_REAL, seconds)
            try:
                run(f, reference)
                yield name, check, "pass", ""
            except Failed as verdict:
                failed = failed or verdict.status == "fail"
                yield name, check, verdict.status, str(verdict)
            except CheckTimeout:
                yield name, check, "error", f"did not finish within {seconds:g} s (an endless loop?)"
            except NameError as e:
                yield name, check, "error", (f"{e}: the function uses a global variable that only "
                                             "exists when the file runs as a script; pass it in or "
                                             "derive it from the arguments")
            except Exception as e:
                where = traceback.extract_tb(e.__traceback__)[-1]
                yield name, check, "error", (f"raised {type(e).__name__}: {e} (line {where.lineno} "
                                             f"of {Path(where.filename).name})")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(worker(sys.argv[2], Path(sys.argv[3])))
    sys.exit(main())
