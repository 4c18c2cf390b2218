"""The verdicts of check.py's checks and how they are worded: a check
raises Failed (fail, warning or error) or lets the student's SubmissionError
through; run_check turns either into (status, message)."""
from typing import Any, NamedTuple

import numpy as np


class Failed(Exception):
    """A check's verdict other than pass: status "fail", "warning" or "error"."""

    def __init__(self, message, status="fail"):
        super().__init__(message)
        self.status = status


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


def describe_error(e):
    """'raised ValueError: ... at line 17: `return np.dot(inputs, W) + b`'."""
    message = e.message if len(e.message) <= 300 else e.message[:300] + " ..."
    where = e.where or ("" if e.line is None else
                        f" at line {e.line}" + (f": `{e.text}`" if e.text else ""))
    said = f"raised {e.type}: {message}{where}"
    if e.type == "NameError":
        said += ("; the function uses a global variable that only exists when the file runs "
                 "as a script: pass it in or derive it from the arguments")
    return said


def run_check(check, f, reference, rng):
    """-> (status, message): "pass", a Failed verdict's status, or "error" when
    the student's code raised. The proxy's timeouts and crashes pass through."""
    try:
        check(f, reference, rng)
    except Failed as verdict:
        return verdict.status, str(verdict)
    except SubmissionError as e:
        return "error", describe_error(e)
    return "pass", ""
