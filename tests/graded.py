"""Grading a file in-process as check.py does, for the tests: one Isolation
per sandbox level and limits, set up once (its canary run) and removed at exit."""
import atexit
from pathlib import Path

import check
from grader import grading, intake
from grader.isolation import setup

_isolations = {}


def isolation_for(args):
    key = (args.sandbox, check.limits_of(args))
    if key not in _isolations:
        _isolations[key] = setup(args.sandbox, check.limits_of(args))
        atexit.register(_isolations[key].close)
    return _isolations[key]


def graded(path, argv):
    """check.py's report of one file, graded with the options argv (path first)."""
    args = check.parse_args([str(path), *argv])
    return grading.grade_file(intake.Found(Path(path)), args, isolation_for(args))
