"""check.py's internals: finding and reading submissions (intake), the
isolation levels and the worker process (sandbox, limits, launch), the
frames between them (protocol), the worker itself (worker, script), the
checks of the functions (checks), of the training loop (training) and of
the figures (figures), and grading one file (grading). Nothing here runs at
import; the worker's modules import nothing of the grader's side."""
