"""The command line of every script: an argument parser whose errors are one
line, argument types that say what they expected, and checks of output paths
before any work. Imports no NumPy (bench.py sets BLAS threads first)."""
import argparse
import math
from pathlib import Path

from vaelib.runs import RunError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" after each option's help, unless the default is
    None (no value) or the help text states it already."""

    def _get_help_string(self, action):
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, with every error one line ending in "(see --help)", exit 2,
    and no abbreviated options (an abbreviation could change meaning later)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def given_options(argv):
    """The long options that argv gives explicitly, e.g. {"--epochs"} for
    ["--epochs=3"] (exact names: OneLineErrorParser allows no abbreviations)."""
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def checked(convert, ok, what):
    """An argparse type: convert(text), then refuse it unless ok(value)."""
    def parse(text):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = checked(int, lambda v: v >= 0, "an integer >= 0")
seed_int = checked(int, lambda v: 0 <= v < 2 ** 32, "an integer in [0, 2**32)")
positive_float = checked(float, lambda v: 0 < v < math.inf, "a positive number")


def nonempty_path(text):
    if not text.strip():
        raise ValueError("empty path")
    return Path(text)


existing_dir = checked(nonempty_path, Path.is_dir, "an existing folder")
existing_file = checked(nonempty_path, Path.is_file, "an existing file")


def output_path(text):
    """An argparse type for a file or folder to write: any non-empty path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def output_file_problem(path):
    """Why a file cannot be written at path, or None: a folder is there, or
    the folder it would go in does not exist (it is never created)."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder; name a file, for example {path / 'report.json'}"
    if not path.parent.is_dir():
        return (f"{path.parent} is not a folder" if path.parent.exists() else
                f"the folder {path.parent} does not exist; create it first or choose another")
    return None


def output_file(text):
    """An argparse type for a file to write: not a folder, in a folder that exists."""
    path = output_path(text)
    problem = output_file_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return path


def check_output_file(path, option=None, overwrite=None):
    """Before the work: raises RunError (exit 2) if path cannot be written as
    a file (output_file_problem) or, with overwrite False (a script that
    refuses to replace its files), if it exists. option: what names it."""
    problem = output_file_problem(path)
    if problem is None and overwrite is False and Path(path).exists():
        problem = f"{path} exists; choose another {option or 'path'} or pass --overwrite"
    if problem:
        raise RunError(f"{option + ': ' if option else ''}{problem}", exit_code=2)


def output_dir(text):
    """An argparse type for a folder to write into: not empty, not a file."""
    path = output_path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a folder")
    return path
