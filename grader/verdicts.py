"""The verdicts of check.py's checks and how they are worded: a check
raises Failed (fail, warning or error) or lets the student's SubmissionError
through; judge turns either into (status, message, explained)."""
import re
from typing import Any, NamedTuple

import numpy as np


class Failed(Exception):
    """A check's verdict other than pass: status "fail", "warning" or "error".
    explained: the check measured that the difference follows from the functions
    the graded one calls (grading.knock_on then names those that fail)."""

    def __init__(self, message, status="fail", explained=False):
        super().__init__(message)
        self.status, self.explained = status, explained


class SubmissionError(Exception):
    """The student's code raised `type` (e.g. "TypeError") with `message`, at
    `line` of the submission (None if no line of it was running) reading `text`;
    where: the student's frames as protocol.where words them, if known."""

    def __init__(self, type, message, line=None, text="", where=""):
        super().__init__(f"{type}: {message}")
        self.type, self.message, self.line, self.text = type, message, line, text
        self.where = where


class Result(NamedTuple):
    value: Any
    warnings: int = 0     # Python warnings raised during the call


# ---- Helpers -----------------------------------------------------------------

def described(value):
    """A short description of what a function returned."""
    if value is None:
        return "None (is the function still a stub, or missing its return?)"
    if isinstance(value, np.ndarray):
        return f"shape {value.shape}" if value.ndim else f"the scalar {float(value):.6g}"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return f"an object of type {getattr(value, 'type_name', type(value).__name__)}"


def as_array(value, shape, what):
    """The value as a float array of the expected shape, or a fail verdict."""
    array = value
    if isinstance(value, list):           # a list of numbers is fine too
        try:
            array = np.array(value, dtype=float)
        except (TypeError, ValueError):
            pass
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise Failed(f"expected {what} of shape {shape}, got {described(value)}")
    return array.astype(float)


def close(got, expected, rtol):
    return bool(np.all(np.isfinite(got))) and np.allclose(got, expected, rtol=rtol,
                                                          atol=rtol * 1e-3)


def likely_cause(got, hints, rtol=1e-6):
    """The explanation of the first (value, explanation) hint that got matches, or ""."""
    return next((why for target, why in hints if close(got, target, rtol)), "")


# How the harness calls each function (the assignment's signatures).
HARNESS_CALLS = {
    "sample_latent_variables_from_posterior": ("encoder_output",),
    "bernoulli_log_prob": ("targets", "logits"), "compute_KL": ("q_means_and_log_stds",),
    "vae_lower_bound": ("gen_params", "rec_params", "data"),
    "neural_net_predict": ("params", "inputs"), "init_net_params": ("layer_sizes",),
    "sigmoid": ("x",), "relu": ("x",)}


def call_mismatch(e, f):
    """What is wrong when e is the TypeError of calling f itself with the
    harness's arguments (not an error inside it), or ""."""
    if f is None or e.type != "TypeError" or e.line is not None \
            or not e.message.startswith(f"{f.name}() ") or f.name not in HARNESS_CALLS:
        return ""
    call = f"{f.name}({', '.join(HARNESS_CALLS[f.name])})"
    named = re.search(r"missing \d+ required (?:positional|keyword-only) arguments?: (.*)$",
                      e.message)
    missing = [p for p in f.parameters if named and f"'{p}'" in named.group(1)]
    if missing:
        return (f"the harness calls it as {call}, and {' and '.join(missing)} "
                f"{'has' if len(missing) == 1 else 'have'} no default: give "
                f"{'it' if len(missing) == 1 else 'them'} a default or take "
                f"{'it' if len(missing) == 1 else 'them'} out (see the signature check)")
    return f"the harness calls it as {call} (see the signature check)"


def describe_error(e, f=None):
    """'raised ValueError: ... at line 17: `return np.dot(inputs, W) + b`';
    f: the function called, to say when the call itself did not fit it."""
    message = e.message if len(e.message) <= 300 else e.message[:300] + " ..."
    where = e.where or ("" if e.line is None else
                        f" at line {e.line}" + (f": `{e.text}`" if e.text else ""))
    said = f"raised {e.type}: {message}{where}"
    if e.type == "NameError":
        said += ("; the function uses a global variable that only exists when the file runs "
                 "as a script: pass it in or derive it from the arguments")
    mismatch = call_mismatch(e, f)
    return said + ("; " + mismatch if mismatch else "")


def judge(check, f, reference, rng):
    """-> (status, message, explained): "pass", a Failed verdict's status, or
    "error" when the student's code raised; explained as the check measured it
    (see Failed). The proxy's timeouts and crashes pass through."""
    try:
        check(f, reference, rng)
    except Failed as verdict:
        return verdict.status, str(verdict), verdict.explained
    except SubmissionError as e:
        return "error", describe_error(e, f), False
    return "pass", "", False


def run_check(check, f, reference, rng):
    """-> (status, message) of judge."""
    return judge(check, f, reference, rng)[:2]
