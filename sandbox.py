"""The worker process of check.py, in a sandbox where bubblewrap exists.

A Worker copies one submission into a private folder, starts check_worker.py
on it (under bwrap: a read-only view of the system and of Python, data.py and
plotting.py at /grader, the private folder at /submission, no network, its own
PID namespace; without bwrap: an ordinary process in a temporary folder), and
exchanges frames with it over two pipes, with deadlines enforced from here.
Whatever the worker prints is drained, and only its tail is kept.
"""
import ast
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import check_worker

PROJECT = Path(__file__).resolve().parent
STAGED = ("check_worker.py", "data.py", "plotting.py")    # what the worker may import
TAIL_BYTES = 4000               # of the worker's output, kept for messages
ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
       "MPLCONFIGDIR": "/tmp", "HOME": "/tmp"}


class WorkerLost(BaseException):
    """The worker timed out, died or broke the protocol: no answer to judge."""


class GraderProblem(Exception):
    """The grader itself cannot run a worker (its memory limit is too low)."""


def sandbox_prefix(private, stage):
    """bwrap's arguments: an empty /tmp first (Python may live below /tmp, and
    later mounts go over earlier ones), read-only system and Python, the staged
    files at /grader, the private folder at /submission, no network, its own
    PID namespace."""
    bind = []
    for path in sorted({"/usr", "/etc/alternatives", sys.prefix, sys.base_prefix,
                        str(Path(sys.executable).resolve().parent.parent)}):
        if Path(path).exists():
            bind += ["--ro-bind", path, path]
    for name in ("bin", "lib", "lib64", "sbin"):       # merged /usr: symlinks
        link = Path("/") / name
        if link.is_symlink():
            bind += ["--symlink", os.readlink(link), str(link)]
        elif link.is_dir():
            bind += ["--ro-bind", str(link), str(link)]
    return ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--tmpfs", "/tmp", *bind, "--ro-bind", str(stage), "/grader",
            "--ro-bind", str(PROJECT / "datasets"), "/grader/datasets",
            "--bind", str(private), "/submission", "--chdir", "/submission",
            "--proc", "/proc", "--dev", "/dev", "--clearenv",
            *[arg for key, value in ENV.items() for arg in ("--setenv", key, value)]]


def own_modules(submission):
    """The modules beside the submission that it imports (its own helpers)."""
    try:
        tree = ast.parse(submission.read_text())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return [submission.parent / f"{name}.py" for name in sorted(names - {Path(n).stem for n in STAGED})
            if (submission.parent / f"{name}.py").is_file() and name != submission.stem]


class Worker:
    """One worker process for one submission, talked to over two pipes."""

    def __init__(self, submission, sandboxed, memory_mb):
        self.submission, self.next_id = submission, 0
        self.folder = Path(tempfile.mkdtemp(prefix="vae-check-"))
        self.private, stage = self.folder / "work", self.folder / "grader"
        self.private.mkdir()
        stage.mkdir()
        for name in STAGED:
            shutil.copyfile(PROJECT / name, stage / name)
        if sandboxed:
            (stage / "datasets").mkdir()     # where the sandbox mounts the shipped MNIST
        else:
            (stage / "datasets").symlink_to(PROJECT / "datasets")
        self.copied = {submission.name} | {p.name for p in own_modules(submission)}
        for path in [submission, *own_modules(submission)]:
            shutil.copyfile(path, self.private / path.name)
        request_read, self.request_write = os.pipe()
        self.answer_read, answer_write = os.pipe()
        if sandboxed:
            prefix, inside = sandbox_prefix(self.private, stage), Path("/submission")
            worker, env, cwd = "/grader/check_worker.py", None, None
        else:
            prefix, inside = [], self.private
            worker, cwd = str(stage / "check_worker.py"), self.private
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}, **ENV}
        command = prefix + [sys.executable, "-I", worker, str(request_read), str(answer_write),
                            str(inside / submission.name), str(memory_mb)]
        self.process = subprocess.Popen(
            command, pass_fds=(request_read, answer_write), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env,
            start_new_session=True)
        os.close(request_read)
        os.close(answer_write)
        self.tail = b""
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        """Keeps only the last TAIL_BYTES of whatever the worker prints."""
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):
            self.tail = (self.tail + chunk)[-TAIL_BYTES:]

    def output_tail(self):
        text = self.tail.decode(errors="replace").strip().splitlines()
        return " / ".join(text[-3:])

    def what_happened(self, lost):
        """A sentence on a worker that stopped answering."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        why = (f"the process died (exit code {code})" if code is not None and str(lost) == "died"
               else f"the worker {lost}")
        return f"{why} during this check; output: {self.output_tail() or 'none'}"

    def files_written(self):
        return sorted(p.name for p in self.private.iterdir()
                      if p.name not in self.copied | {"__pycache__"})

    def _read(self, n, deadline):
        ready, _, _ = select.select([self.answer_read], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise WorkerLost("timeout")
        return os.read(self.answer_read, min(n, 2 ** 20))

    def _write(self, data, deadline):
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [self.request_write], [],
                                        max(0.0, deadline - time.monotonic()))
            if not ready:
                raise WorkerLost("timeout")
            try:
                view = view[os.write(self.request_write, view[:65536]):]
            except BrokenPipeError:
                raise WorkerLost("died") from None

    def receive(self, seconds):
        deadline = time.monotonic() + seconds
        try:
            return check_worker.read_frame(lambda n: self._read(n, deadline))
        except EOFError:
            raise WorkerLost("died") from None
        except check_worker.FrameError as e:
            raise WorkerLost(f"broke the protocol: {e}") from None

    def request(self, header, arrays, seconds):
        """Sends a request and waits up to `seconds` for its answer."""
        self.next_id += 1
        deadline = time.monotonic() + seconds
        self._write(check_worker.frame({**header, "id": self.next_id}, arrays), deadline)
        answer, out = self.receive(max(0.0, deadline - time.monotonic()))
        if answer.get("id") != self.next_id:
            raise WorkerLost("broke the protocol: an answer to another request")
        return answer, out

    def close(self):
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.reader.join(timeout=5)
        self.process.stdout.close()
        for fd in (self.request_write, self.answer_read):
            os.close(fd)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_worker(submission, sandboxed, memory_mb, seconds):
    """A worker that has loaded NumPy and autograd, or GraderProblem."""
    worker = Worker(submission, sandboxed, memory_mb)
    try:
        answer, _ = worker.receive(seconds)
        if answer.get("ready"):
            return worker
    except WorkerLost:
        pass
    tail = worker.output_tail()
    worker.close()
    if tail.startswith("bwrap:"):
        raise GraderProblem(f"the sandbox did not start ({tail}); try --sandbox none")
    raise GraderProblem(f"the grader's worker did not start before the submission was loaded "
                        f"({tail or 'no output'}): --memory {memory_mb} MiB is probably too "
                        "little for Python, NumPy and autograd; raise --memory")
