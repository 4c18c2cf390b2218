"""Grade students' vae.py files against the reference, function by function.

    python check.py path/to/vae.py            # one submission: a table per function
    python check.py class/ --json             # a class: every student folder, in parallel
    python check.py a.py b.py --timeout 60

A submission is untrusted code, so the grader judges and the submission only
computes. Each file runs in a worker process that loads it and answers the
grader's requests, "call compute_KL on these arrays", with raw results over a
private channel; this process draws fresh inputs for every file, computes the
reference's answers itself and compares. Nothing a submission prints, patches
or forges becomes a PASS. Then the file runs as a script on the first 300
training and 100 test images of MNIST: its training loop and the figures it
saves are judged too, unless --functions-only.

The worker runs in a sandbox (docs/grading.md, "Threat model"): bubblewrap
where it works (`apt-get install bubblewrap`), with no privilege, a read-only
view of the system, size-capped private folders and no network; else, as
root, a user of its own; `--sandbox none` only when asked for. Limits per
worker (memory, processes, disk, CPU, one time budget per file) hold for its
children too; the footer and the JSON say which held. The grader's internals
are in the package grader/.

Exit code: 0 when every file passes (warnings allowed), 1 when one fails,
2 for a usage error or a file that cannot be graded at all.
"""
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from vaelib import arguments
from grader import intake, outputs, rubric
from grader.limits import Limits
from grader.isolation import PROJECT, IsolationUnavailable, setup  # noqa: F401  PROJECT: tests


# The shortest time limits that a correct file can meet: below them, check.py
# would blame a correct student for an endless loop. (seconds, why)
TIMEOUT_FLOORS = {
    "check_timeout": (1.0, "a worker alone takes about 0.3 s to start, and a correct "
                           "function's check can need a fresh one"),
    "import_timeout": (5.0, "importing NumPy and autograd alone takes about 1 s"),
    "script_timeout": (10.0, "the script trains on 300 images and saves its figures"),
    "timeout": (10.0, "the budget of one file covers its imports, checks and script"),
}


def at_least_s(option):
    return f"at least {TIMEOUT_FLOORS[option][0]:g} s"


def at_least(option):
    """An argparse type for the option's seconds: refused below its floor, in
    one line that says the floor and why."""
    floor, why = TIMEOUT_FLOORS[option]
    return arguments.checked(float, lambda v: floor <= v < float("inf"),
                        f"a finite number of seconds, {at_least_s(option)} ({why})")


def parse_args(argv=None):
    parser = arguments.OneLineErrorParser(description="Grade vae.py submissions against the reference.")
    add = parser.add_argument
    add("paths", nargs="*", metavar="SUBMISSION",
        help="a student's vae.py, several files, or folders of them (searched recursively)")
    add("--json", action="store_true", help="print JSON instead of tables (--format json)")
    add("--format", choices=outputs.FORMATS, default=None,
        help="table, json, or a platform's results file: gradescope (results.json), "
             "prairielearn (results.json), github-classroom (the reporter's result line); "
             "written to --output if given (default: table)")
    add("--output", type=arguments.output_path, default=None, metavar="PATH",
        help="the file --format writes (default: printed), or with --autograder the zip "
             "(gradescope) or folder it writes")
    add("--autograder", choices=tuple(outputs.PLATFORMS), default=None,
        help="write the files a course installs on this platform to --output, and stop")
    add("--rubric", type=arguments.output_path, default=None, metavar="TOML",
        help="points, task numbers and visibility per check, over the default "
             "grader/rubric.toml (docs/platforms.md, 'Points')")
    add("--csv", type=arguments.output_file, default=None, metavar="FILE",
        help="a class's points: one row per file, one column per rubric check")
    add("--json-dir", type=arguments.output_path, default=None, metavar="DIR",
        help="one JSON per file (its report and scored checks) in DIR")
    add("--html", type=arguments.output_file, default=None, metavar="FILE",
        help="a page to look at: one row per file with its points, failing checks and "
             "figures beside the reference's (one file: the student's feedback page)")
    add("--overwrite", action="store_true",
        help="let --output, --csv, --json-dir and --html replace what is there")
    add("--timeout", type=at_least("timeout"), default=180.0,
        help="seconds one file's workers may take in all: import, functions, reloads and "
             f"script ({at_least_s('timeout')}; default: %(default)s)")
    add("--import-timeout", type=at_least("import_timeout"), default=20.0,
        help="seconds that starting a worker or importing a file may take "
             f"({at_least_s('import_timeout')}; default: %(default)s)")
    add("--check-timeout", type=at_least("check_timeout"), default=30.0,
        help=f"seconds for one check of one function ({at_least_s('check_timeout')}; "
             "default: %(default)s)")
    add("--script-timeout", type=at_least("script_timeout"), default=60.0,
        help="seconds for running the file as a script on the data subset "
             f"({at_least_s('script_timeout')}; default: %(default)s)")
    add("--functions-only", action="store_true",
        help="grade the functions only, not the training loop and the figures")
    add("--memory", type=arguments.positive_int, default=4096,
        help="memory limit in MiB per worker (default: %(default)s)")
    add("--processes", type=arguments.positive_int, default=32,
        help="processes and threads per worker (default: %(default)s)")
    add("--disk", type=arguments.positive_int, default=256,
        help="MiB a worker may write in its folder, and in its /tmp (default: %(default)s)")
    add("--jobs", type=arguments.positive_int, default=os.cpu_count() or 1,
        help="files graded at once (default: the number of CPUs)")
    add("--sandbox", choices=("auto", "bwrap", "user", "none"), default="auto",
        help="auto: bubblewrap, else (as root) a user of its own per worker; bwrap or user: "
             "that level or nothing; none: an ordinary process (the submission can read and "
             "write your files) (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.json and args.format not in (None, "json"):
        parser.error(f"--json and --format {args.format} ask for two outputs; give one")
    args.format = "json" if args.json else (args.format or "table")
    args.json = args.format == "json"
    if args.autograder:
        if args.paths or args.output is None:
            parser.error("--autograder writes a platform's files and grades nothing: give "
                         "--output PATH and no submissions")
    elif not args.paths:
        parser.error("give a submission (a file or a folder), or --autograder")
    written = [(option, getattr(args, name)) for option, name in (
        ("--output", "output"), ("--csv", "csv"), ("--json-dir", "json_dir"),
        ("--html", "html")) if getattr(args, name) is not None]
    for option, path in written:
        if path.exists() and not args.overwrite and not (
                option == "--json-dir" and path.is_dir() and not any(path.iterdir())):
            parser.error(f"argument {option}: {path} exists: a finished run is never "
                         "replaced; choose another path or pass --overwrite")
    if args.output is not None and args.format in ("table",) and not args.autograder:
        parser.error("--output takes the file of --format json or a platform's format")
    try:
        args.scoring = rubric.load(args.rubric)
    except rubric.RubricError as e:
        parser.error(f"argument --rubric: {e}")
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:
        from grader.report import shown
        parser.error(f"no such file or folder: {', '.join(map(shown, missing))}")
    return args


def limits_of(args):
    cpus = max(1.0, (os.cpu_count() or 1) / args.jobs)
    cpu_seconds = int(args.timeout) + 60
    return Limits(memory_mb=args.memory, processes=args.processes, disk_mb=args.disk,
                  cpus=cpus, cpu_seconds=cpu_seconds)


def stop(signum, frame):
    raise SystemExit(128 + signum)


def write_outputs(args, reports, isolation):
    """--format's file, --csv, --json-dir and --html, after the table was printed."""
    if args.format not in outputs.PLATFORMS and args.csv is args.json_dir is args.html is None:
        return
    pictures = args.html is not None or args.format == "prairielearn"   # they show figures
    graded = [outputs.Graded(r, rubric.records(r, args.scoring, pictures)) for r in reports]
    if args.format in outputs.PLATFORMS:
        text = outputs.render(args.format, graded, isolation)
        if args.output is None:
            print(text)
        else:
            outputs.write_text(args.output, text)
    if args.csv is not None:
        outputs.write_text(args.csv, outputs.csv_text(graded))
    if args.json_dir is not None:
        outputs.write_json_dir(args.json_dir, graded)
    if args.html is not None:
        from grader import pages
        outputs.write_text(args.html, pages.render(graded, isolation))


def main(argv=None):
    args = parse_args(argv)
    if args.autograder:
        for path in outputs.build(args.autograder, args.output, args.rubric):
            print(f"wrote {path}")
        return 0
    for stream in (sys.stdout, sys.stderr):       # a strict locale never ends the run
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    found = intake.find_submissions(args.paths)
    if not found:
        print("check.py: error: no .py files found", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=1) as starter:
        trying = starter.submit(setup, args.sandbox, limits_of(args))   # the canary runs...
        from grader import grading, report    # ...while the reference and the checks load
        problem = trying.exception()
    if isinstance(problem, IsolationUnavailable):
        print(f"check.py: error: {report.shown(problem)}", file=sys.stderr)
        return 2
    isolation = trying.result()
    if isolation.level == "none":
        print("check.py: note: no sandbox (--sandbox none): each submission runs in its own "
              "process with time and memory limits, but can read and write your files, use "
              "the network and leave processes behind", file=sys.stderr)
    previous = signal.signal(signal.SIGTERM, stop)       # killed politely: still clean up
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = [pool.submit(grading.grade_file, f, args, isolation) for f in found]
        reports = []
        for future in futures:
            reports.append(future.result())
            if args.format == "table":
                (report.print_table if len(found) == 1 else report.print_row)(reports[-1])
        pool.shutdown()
        if args.json:
            text = report.as_json(reports, isolation, len(found) == 1)
            print(text) if args.output is None else outputs.write_text(args.output, text + "\n")
        elif args.format == "table":
            report.print_footer(isolation)
        write_outputs(args, reports, isolation)
    except BaseException:
        pool.shutdown(cancel_futures=True)      # the files being graded finish, and clean up
        raise
    finally:
        isolation.close()
        signal.signal(signal.SIGTERM, previous)
    if any(r.get("grader_problem") for r in reports) or any(r["loaded"] is None for r in reports):
        return 2
    return 1 if any(r["verdict"] != "pass" for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
