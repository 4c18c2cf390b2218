"""What every script of the project needs around a model run, in one place.

- the command line: an argparse parser whose errors are one line, and the
  argument types that refuse bad values with a message;
- RunError: a problem stated in one line with its exit code;
- files: atomic writes, output paths checked before any work starts, the
  guard that keeps a run from replacing or mixing with a finished one, and
  the lock that keeps two processes from writing one run, and who holds it;
- memory: refuse sizes that cannot fit before allocating them;
- SIGTERM handled like Ctrl-C;
- a training run's records: checkpoint, then metrics.json, after every
  epoch, and what is kept when it stops early.

It knows nothing of the model: vae.py, evaluate.py and bench.py pass in
what is theirs (file names, layer sizes).
"""
import errno
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.json"
EVALUATION_NAME = "evaluation_test_sample.json"   # evaluate.py's report, default options
EVALUATE_COMMAND = "python evaluate.py {}"        # estimates log p(x) of a checkpoint
FIGURE_NAMES = ("samples_from_prior.png", "reconstructions.png", "interpolation_*_*.png",
                "figures_explained.png", "learning_curve.png", "latent_scatter.png",
                "latent_manifold.png")
REPORT_FILES = ("evaluation_*.json", "evaluation_*.npz", "conditional_*.json",
                "conditional_*.png")   # evaluate.py's and conditional.py's, on one checkpoint
RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, *FIGURE_NAMES, *REPORT_FILES)
# (what a run of vae.py, evaluate.py and conditional.py write into the run's folder)
FIGURE_BYTES = 2 ** 23       # room a model's figures need on disk, generously


class RunError(Exception):
    """A problem the user can fix, said in one line; exit_code: 1 for a bad
    file or environment, 2 for a bad request."""

    def __init__(self, message, exit_code=1):
        super().__init__(message)
        self.exit_code = exit_code


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------

def atomic_write(path, write):
    """Calls write(file) on a temporary file beside path, then renames it over
    path, so an interrupted run leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path, content):
    """content as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(content, indent=2) + "\n").encode()))


def check_writable(folder, need_bytes=0, what="the output folder"):
    """Creates folder if needed and writes a probe file into it; raises RunError
    if that fails or if the disk has less than need_bytes free."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"probe")
        probe.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as e:
        raise RunError(f"cannot write into {what} {folder}: {e.strerror or e}; "
                       "choose another folder") from None
    if free < need_bytes:
        raise RunError(f"{what} {folder} has {format_bytes(free)} free, and this run "
                       f"needs about {format_bytes(need_bytes)}; free some space or "
                       "choose another folder")


@contextmanager
def locked(folder, prog):
    """Within the block, this process alone writes a run into folder (which
    must exist): an exclusive flock on the folder itself, so no lock file is
    left behind, and the kernel releases it when the process ends, however it
    ends. Raises RunError if another process holds it. (Where there is no
    fcntl, on Windows, it does nothing.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise RunError(f"cannot open {folder} to lock it: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise RunError(f"another process is writing a run into {folder}; let it finish "
                           f"or stop it, then run {prog} again", exit_code=2) from None
        yield
    finally:
        os.close(fd)


def lock_holder(folder):
    """Whether a process holds folder's run lock (see locked), asked without
    waiting: -> None if it is free (or there is no fcntl), else the holder's
    pid, 0 if unknown. On Linux the holder is found in /proc/locks, without
    touching the lock; elsewhere a shared lock is tried for an instant."""
    try:
        import fcntl
        st = os.stat(folder)
    except (ImportError, OSError):
        return None
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:   # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5358154 0 EOF"
                words = line.split()
                if words[1:2] == ["FLOCK"] and words[3:4] == ["WRITE"] and words[5:6] == [inode]:
                    return int(words[4])
        return None   # not listed: free (a try would stop a run starting at that instant)
    except (OSError, ValueError):
        pass
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except OSError:
        return 0
    finally:
        os.close(fd)   # releases the shared lock, if it was taken


def being_trained(checkpoint, epoch, planned=None, holder_before=None):
    """A note for a report on checkpoint, read at epoch (of planned), if a run
    holds the lock on its folder (a vae.py training it right now) or held it
    before the checkpoint was read (holder_before, lock_holder's answer then),
    else None."""
    pid = lock_holder(Path(checkpoint).parent)
    pid = holder_before if pid is None else pid
    if pid is None:
        return None
    return (f"note: {Path(checkpoint).parent} is being trained right now"
            f"{f' (pid {pid})' if pid else ''}; this report is of epoch {epoch}"
            f"{f' (of {planned} planned)' if planned else ''} of the checkpoint as it was read")


def run_files(folder, patterns):
    """The files in folder whose names match one of the glob patterns, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})


def describe_run(folder, files):
    """A few words on the run whose files these are, from its metrics.json."""
    words = []
    metrics = Path(folder) / METRICS_NAME
    if metrics in files:
        try:
            content = json.loads(metrics.read_text())
            epochs = content.get("epochs", [])
            planned = content.get("config", {}).get("epochs")
            words.append(f"{METRICS_NAME}: status {content.get('status')}, "
                         f"{len(epochs)}{f' of {planned}' if planned else ''} epochs")
        except (OSError, ValueError, AttributeError, TypeError):
            words.append(f"{METRICS_NAME} (not one of ours)")
    others = [p.name for p in files if p.name != METRICS_NAME]
    if others:
        shown = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
        words.append(shown)
    return "; ".join(words)


def claim_output_dir(folder, patterns, overwrite, prog):
    """Keeps a run from replacing or mixing with another: if folder holds files
    matching patterns (another run's), raises RunError (exit 2) unless
    overwrite, in which case exactly those files are deleted first."""
    files = run_files(folder, patterns)
    if files and not overwrite:
        raise RunError(f"{folder} holds a run ({describe_run(folder, files)}); choose "
                       "another --output-dir, or pass --overwrite to delete that run's "
                       "files first", exit_code=2)
    if files and not os.access(folder, os.W_OK):
        raise RunError(f"--overwrite: cannot delete the files of the run in {folder} "
                       "(the folder is not writable); nothing was deleted")
    for done, path in enumerate(files):
        try:
            path.unlink()
        except OSError as e:
            raise RunError(f"--overwrite: cannot delete {path}: {e.strerror or e}; "
                           f"{done} of the run's {len(files)} files were deleted") from None
    if files:
        print(f"{prog}: --overwrite: deleted {len(files)} file{'s' * (len(files) != 1)} of the "
              f"run in {folder}")


def prepare_output_dir(folder, patterns, overwrite, prog, need_bytes=0):
    """What a run checks about its output folder before any work starts: it
    can be written (created if needed), it holds no other run
    (claim_output_dir: refused, or deleted with overwrite), and its disk has
    need_bytes free. Raises RunError."""
    check_writable(folder)      # before overwrite deletes anything
    claim_output_dir(folder, patterns, overwrite, prog)
    check_writable(folder, need_bytes)


# ----------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------

def format_bytes(n):
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def count_params(networks):
    """Weights and biases of networks given as lists of layer sizes."""
    return sum(m * n + n for sizes in networks for m, n in zip(sizes[:-1], sizes[1:]))


def training_memory(networks, dtype, rows):
    """Bytes, roughly, to train networks (lists of layer sizes) with Adam on
    batches of `rows`: the parameters drawn in float64, then in dtype the flat
    vector, its gradient, Adam's m, v and work space; the activations of `rows`
    inputs through every layer, forward and backward."""
    import numpy as np
    itemsize = np.dtype(dtype).itemsize
    return (count_params(networks) * (8 + 7 * itemsize)
            + 4 * rows * sum(sum(sizes) for sizes in networks) * itemsize)


def check_training_size(images, n_train, batch_size):
    """RunError (exit code 2) if --n-train asks for more than the training set's
    `images`, or --batch-size for more than the images trained on (one batch
    would hold them all, and the run would record a batch size that never ran)."""
    if n_train is not None and n_train > images:
        raise RunError(f"--n-train {n_train} but the training set has {images} images "
                       "(see --help)", exit_code=2)
    if batch_size > (n_train or images):
        raise RunError(f"--batch-size {batch_size} is larger than the {n_train or images} "
                       f"training images{' (--n-train)' if n_train else ''}; choose at most "
                       f"{n_train or images} (see --help)", exit_code=2)


def check_memory(need_bytes, what, advice="choose smaller sizes"):
    """Raises RunError (exit 2) if need_bytes cannot fit in available memory."""
    available = available_memory()
    if need_bytes > available:
        raise RunError(f"{what} would need about {format_bytes(need_bytes)} of memory and "
                       f"{format_bytes(available)} is available; {advice}", exit_code=2)


# ----------------------------------------------------------------------------
# Long work: an estimate up front, then progress
# ----------------------------------------------------------------------------

PROGRESS_SECONDS = 60     # without a terminal: a line at least this often, and every tenth
PILOT_SECONDS = 1         # measured before the estimate of the duration
LONG_SECONDS = 10         # work estimated to take longer gets the estimate and the lines


def format_duration(seconds):
    """"about 40 seconds", "about 12 minutes", "about 2.5 hours"."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} second{'s' * (round(seconds) > 1)}"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} minutes"
    return f"about {seconds / 3600:.1f} hours"


class Progress:
    """Progress through `total` units of work for the user of prog. The
    first update is taken as warm-up; from then on the pace is measured, and
    once PILOT_SECONDS have passed (or a twentieth of the work is done), one
    line on stderr estimates the whole duration (estimate=True) if it is
    LONG_SECONDS or more. With bar=True, a tqdm bar on a terminal, or else,
    for long work, a line on stderr at every tenth of the work and at least
    every PROGRESS_SECONDS. A context manager; clock: seconds
    (time.perf_counter)."""

    def __init__(self, total, prog, what, unit="it", bar=True, estimate=True,
                 clock=time.perf_counter):
        from tqdm import tqdm
        self.total, self.prog, self.what, self.clock = total, prog, what, clock
        self.estimate, self.done, self.start, self.pilot = estimate, 0, clock(), None
        self.long = False
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc=what, unit=unit, unit_scale=True, leave=False,
                        disable=not (bar and tty))
        self.lines, self.last_line, self.next_tenth = bar and not tty, self.start, 1

    def say(self, text):
        self.bar.write(f"{self.prog}: {text}", file=sys.stderr)
        sys.stderr.flush()

    def update(self, n):
        self.done += n
        self.bar.update(n)
        now = self.clock()
        if self.done >= self.total:
            return
        if self.pilot is None:
            self.pilot = (now, self.done)
            return
        t0, d0 = self.pilot
        pace = (now - t0) / (self.done - d0)
        left = pace * (self.total - self.done)
        measured = now - t0 >= PILOT_SECONDS or 20 * (self.done - d0) >= self.total
        said = False
        if measured and not self.long and now - self.start + left >= LONG_SECONDS:
            self.long = said = True
            if self.estimate:
                self.say(f"{self.what}: {format_duration(now - self.start + left)} in all "
                         f"(measured on the first {self.done / self.total:.1%})")
        elif self.lines and (self.long or now - self.start >= PROGRESS_SECONDS) and (
                10 * self.done >= self.next_tenth * self.total
                or now - self.last_line >= PROGRESS_SECONDS):
            self.say(f"{self.what}: {self.done / self.total:.0%} done, "
                     f"{format_duration(left)} left")
            said = True
        if said:
            self.last_line, self.next_tenth = now, 10 * self.done // self.total + 1

    def close(self):
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------
# Metrics and signals
# ----------------------------------------------------------------------------

def run_main(prog, work):
    """The tail of every script's main: -> work()'s exit code; a data or run
    error (data.DataError, RunError) is one line, "prog: error: ...", and its
    exit code (1 unless it says otherwise)."""
    from data import DataError
    try:
        return work()
    except (DataError, RunError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 1)


def library_versions():
    from importlib.metadata import version
    return {"python": platform.python_version(),
            **{name: version(name) for name in ("numpy", "autograd", "scipy", "matplotlib")}}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it stops as on Ctrl-C."""


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises Terminated (a KeyboardInterrupt).
    Only the main thread can handle signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interruption(e):
    """(status, exit code) of a KeyboardInterrupt: Ctrl-C or SIGTERM."""
    return ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)


# ----------------------------------------------------------------------------
# A training run's records
# ----------------------------------------------------------------------------

class TrainingDiverged(Exception):
    """The training objective or the test ELBO became NaN or infinite."""


class TrainingRun:
    """The records a training run keeps in its folder, in an order that never
    contradicts itself: each epoch's checkpoint first, then metrics.json
    naming it. metrics(history, status, wall_seconds, **extra) -> the content
    of metrics.json (extra: what write_metrics passes on). history and
    sittings: those of the epochs done before (a resumed run); wall-clock
    seconds add up over all sittings, this one included."""

    def __init__(self, folder, metrics, history=(), sittings=()):
        self.checkpoint, self.metrics_path = folder / CHECKPOINT_NAME, folder / METRICS_NAME
        self.metrics, self.history, self.sittings = metrics, list(history), list(sittings)
        self.first_epoch, self.start = len(self.history) + 1, time.perf_counter()

    def wall_seconds(self):
        return sum(s["wall_seconds"] for s in self.sittings) + time.perf_counter() - self.start

    def with_this_sitting(self, last_epoch):
        """-> the sittings, this one included up to last_epoch (for a checkpoint's state)."""
        return self.sittings + [{"first_epoch": self.first_epoch, "last_epoch": last_epoch,
                                 "wall_seconds": time.perf_counter() - self.start}]

    def write_metrics(self, status, **extra):
        """-> the wall-clock seconds it wrote, for a closing line that agrees."""
        wall = self.wall_seconds()
        write_json(self.metrics_path, self.metrics(self.history, status, wall, **extra))
        return wall

    def add_epoch(self, record, save):
        """save(history with record) writes the checkpoint; only then is the
        epoch in the history and in metrics.json."""
        save(self.history + [record])
        self.history.append(record)
        self.write_metrics("running")

    def stopped(self, e, advice="", how_to_go_on=""):
        """After training ended early with e (Ctrl-C, SIGTERM, TrainingDiverged
        or an OSError such as a full disk): metrics.json says how, or is
        removed if no epoch was completed (the folder is free again), and one
        message says so on stderr; advice follows a divergence, how_to_go_on
        the kept epoch. If metrics.json cannot be written (the disk is full),
        the message says so, still in one line. -> the exit code."""
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        if isinstance(e, TrainingDiverged):
            status, code, message = "diverged", 1, f"Training stopped: {e}. {advice}".rstrip()
        elif full:
            status, code = "stopped: disk full", 1
            message = (f"Training stopped: the disk is full ({e.strerror}) in "
                       f"{self.checkpoint.parent}")
        elif isinstance(e, OSError):
            status, code = f"stopped: {e.strerror or e}", 1
            message = (f"Training stopped: {e.strerror or e}"
                       f"{f' ({e.filename})' if e.filename else ''}")
        else:
            status, code = interruption(e)
            message = f"\n{status.capitalize()}"
        if self.history:
            message += (f"; {self.checkpoint} holds epoch {self.history[-1]['epoch']}"
                        f"{how_to_go_on}{', once some space is free' * full}")
            try:
                self.write_metrics(status)
            except OSError as failed:
                message += (f" ({self.metrics_path} could not be updated: "
                            f"{failed.strerror or failed})")
        else:
            self.metrics_path.unlink(missing_ok=True)
            message += "; no epoch was completed, nothing was saved"
        print(message, file=sys.stderr)
        return code
