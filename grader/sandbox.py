"""One worker process of one submission: started in the sandbox of its
isolation level (grader/isolation.py), talked to over two pipes, bounded by
one wall-clock budget per file, and removed with everything it left.

At every level the worker lowers its own rlimits before the submission loads
(memory, processes, file size, CPU time, open files), a cgroup holds the
whole tree where one can be made (grader/limits.py), deadlines are enforced
from here, and the worker's output is drained with only its tail kept.
"""
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader import protocol

PROJECT = Path(__file__).resolve().parent.parent
TAIL_BYTES = 4000               # of the worker's output, kept for messages
ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
       "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


class WorkerLost(BaseException):
    """The worker timed out, died or broke the protocol: no answer to judge."""


class GraderProblem(Exception):
    """The grader itself cannot run a worker (its memory limit is too low)."""


# ---- Time ----------------------------------------------------------------------------

class Budget:
    """The wall-clock seconds one file's workers may take in all, every start,
    request and reload included; the grader's own work is not counted."""

    def __init__(self, seconds):
        self.left = seconds

    def allow(self, seconds):
        return max(0.0, min(seconds, self.left))

    def spend(self, seconds):
        self.left -= seconds


# ---- One worker ------------------------------------------------------------------------

def folders_of(submission):
    """The folders to make for the staged files (intake's names: relative,
    no "..", no links), parents first."""
    folders = set(getattr(submission, "folders", ()))
    for name in submission.files:
        folders.update(str(parent) for parent in Path(name).parents if str(parent) != ".")
    return sorted(folders, key=lambda folder: (folder.count("/"), folder))


def memfd(name, content):
    fd = os.memfd_create(name.replace("/", "-"), 0)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def interpreter_paths():
    """Folders of the Python installation the worker runs in (read-only in bwrap)."""
    paths = {sys.prefix, sys.base_prefix, str(Path(sys.executable).resolve().parent.parent)}
    return sorted(p for p in paths if Path(p).exists())


class Worker:
    """One worker process for one submission, talked to over two pipes."""

    def __init__(self, submission, isolation, budget, limits=None, canary=False):
        """limits: the isolation's unless given (the canary's are its own); canary:
        a worker that only answers one identity request (grader/worker.py)."""
        self.isolation, self.budget, self.next_id = isolation, budget, 0
        self.limits = limits = limits or isolation.limits
        self.submission, level = submission, isolation.level
        self.uid = isolation.uids.acquire() if isolation.uids else None
        self.private, self.cgroup, self.process, fds = None, None, None, []
        request_read, self.request_write = os.pipe()
        self.answer_read, answer_write = os.pipe()
        fds += [request_read, answer_write]
        try:
            if isolation.cgroups is not None:
                self.cgroup = isolation.cgroups.create(limits)
            inside = (Path("/submission") if level == "bwrap" else self.make_private())
            config = json.dumps({"requests": request_read, "answers": answer_write,
                                 "submission": str(inside / submission.name),
                                 "course": "/course" if level == "bwrap" else str(isolation.course),
                                 "limits": limits.for_worker(count_processes=level != "none"),
                                 "canary": canary})
            if level == "bwrap":
                files = {name: memfd(name, content) for name, content in submission.files.items()}
                fds += files.values()
                command, cwd, env = self.bwrap_command(files, config), None, None
            else:
                code = isolation.code
                command = [sys.executable, "-I", str(code / "grader" / "worker.py"), config]
                if level == "user":
                    command = [sys.executable, "-I", "-S", str(code / "grader" / "launch.py"),
                               json.dumps({"join": self.cgroup.procs_files if self.cgroup else [],
                                           "drop": [self.uid, self.uid]})] + command
                cwd = self.private
                env = {**ENV, "HOME": str(self.private), "TMPDIR": str(self.private),
                       "MPLCONFIGDIR": str(self.private)}
            if self.cgroup is not None and level == "bwrap":
                command = [sys.executable, "-I", "-S", str(isolation.code / "grader" / "launch.py"),
                           json.dumps({"join": self.cgroup.procs_files})] + command
            self.process = subprocess.Popen(
                command, pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, cwd=cwd, env=env, start_new_session=True)
        except BaseException:
            self.close()
            raise
        finally:
            for fd in fds:
                os.close(fd)
        self.tail = b""
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def bwrap_command(self, files, config):
        """bwrap's arguments: the read-only system, Python and staged grader
        modules; sized tmpfs mounts for /submission, /tmp and /dev/shm; the
        student's files copied in from memory; no network."""
        isolation, limits = self.isolation, self.limits
        args = [shutil.which("bwrap") or "bwrap", "--die-with-parent", "--new-session",
                "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--cap-drop", "ALL"]
        if not isolation.root:
            args += ["--unshare-user", "--disable-userns"]
        else:   # only to become the worker's uid (grader/launch.py); lost with it
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        mib = 2 ** 20
        # /tmp first: Python may live below it, and later mounts go over earlier ones.
        args += ["--perms", "1777", "--size", str(limits.disk_mb * mib), "--tmpfs", "/tmp"]
        bound = [path for path in ["/usr", "/etc/alternatives", *interpreter_paths()]
                 if Path(path).exists()]
        for folder in sorted({str(parent) for path in bound for parent in Path(path).parents
                              if str(parent) not in ("/", "/tmp")}):   # bwrap would make them 0700
            args += ["--perms", "0755", "--dir", folder]
        for path in bound:
            args += ["--ro-bind", path, path]
        for name in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
            link = Path("/") / name
            if link.is_symlink():
                args += ["--symlink", os.readlink(link), str(link)]
            elif link.is_dir():
                args += ["--ro-bind", str(link), str(link)]
        args += ["--ro-bind", str(isolation.code), "/grader",
                 "--ro-bind", str(isolation.course), "/course",
                 "--ro-bind", str(PROJECT / "datasets"), "/course/datasets",
                 "--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(limits.shm_mb * mib), "--tmpfs", "/dev/shm",
                 "--perms", "1777", "--size", str(limits.disk_mb * mib), "--tmpfs", "/submission"]
        # The student's folder as theirs: its folders and files the worker's to write and
        # remove (made by root where the grader is root: open to all, in a sandbox of one uid).
        for folder in folders_of(self.submission):
            args += ["--perms", "0777", "--dir", f"/submission/{folder}"]
        for name, fd in files.items():
            args += ["--perms", "0666", "--file", str(fd), f"/submission/{name}"]
        args += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/submission",
                 "--clearenv"]
        for key, value in {**ENV, "HOME": "/tmp", "TMPDIR": "/tmp", "MPLCONFIGDIR": "/tmp"}.items():
            args += ["--setenv", key, value]
        worker = [sys.executable, "-I", "/grader/grader/worker.py", config]
        if isolation.root:
            # Become the worker's uid, then (a second bwrap, unprivileged) enter a user
            # namespace of its own in which no further user namespace can be made.
            worker = [sys.executable, "-I", "-S", "/grader/grader/launch.py",
                      json.dumps({"drop": [self.uid, self.uid]}), args[0],
                      "--unshare-user", "--disable-userns", "--bind", "/", "/", "--"] + worker
        return args + ["--"] + worker

    def make_private(self):
        """The user and none levels: a folder of the worker's own with copies
        of the student's files (a tmpfs where root may mount one)."""
        self.private = Path(tempfile.mkdtemp(prefix="work-", dir=self.isolation.folder))
        if self.uid is not None:
            os.chown(self.private, self.uid, self.uid)
            if self.isolation.mounts:
                options = (f"size={self.limits.disk_mb}m,mode=0700,uid={self.uid},"
                           f"gid={self.uid},nosuid,nodev")
                subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                                str(self.private)], check=True, capture_output=True)
        for folder in folders_of(self.submission):
            (self.private / folder).mkdir()
            if self.uid is not None:
                os.chown(self.private / folder, self.uid, self.uid)
        for name, content in self.submission.files.items():
            target = self.private / name
            target.write_bytes(content)
            if self.uid is not None:
                os.chown(target, self.uid, self.uid)
        return self.private

    # ---- talking to it

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
        if str(lost) == "died" and code is not None:
            why = f"the process died (exit code {code})"
            if self.cgroup is not None and self.cgroup.oom_kills():
                why += f": it used more than the memory limit, {self.limits.memory_mb} MiB"
        else:
            why = str(lost) if str(lost).startswith("the worker") else f"the worker {lost}"
        return f"{why} during this check; output: {self.output_tail() or 'none'}"

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

    def receive(self, seconds, kind, request_id=None):
        """The next answer, validated as `kind` -> (header, arrays); WorkerLost
        if it does not come in time or cannot be read."""
        deadline = time.monotonic() + seconds
        try:
            header, arrays = protocol.read_frame(lambda n: self._read(n, deadline))
            protocol.check_answer(kind, header, request_id)
            return header, arrays
        except EOFError:
            raise WorkerLost("died") from None
        except WorkerLost:
            raise
        except Exception as e:   # anything wrong with what came back: the worker's fault
            raise WorkerLost(f"the worker's answer could not be read ({type(e).__name__}: "
                             f"{str(e)[:200]})") from None

    def timed(self, seconds, action):
        """action(allowed seconds), its wall time spent from the file's budget."""
        allowed, start = self.budget.allow(seconds), time.monotonic()
        try:
            return action(allowed)
        finally:
            self.budget.spend(time.monotonic() - start)

    def wait_ready(self, seconds):
        return self.timed(seconds, lambda allowed: self.receive(allowed, "ready"))

    def request(self, header, arrays, seconds, kind=None):
        """Sends a request and waits up to `seconds` (and the file's budget) for
        its answer, validated as `kind` (the request's op by default)."""
        self.next_id += 1
        request_id = self.next_id

        def exchange(allowed):
            deadline = time.monotonic() + allowed
            self._write(protocol.frame({**header, "id": request_id}, arrays), deadline)
            return self.receive(max(0.0, deadline - time.monotonic()),
                                kind or header["op"], request_id)
        return self.timed(seconds, exchange)

    def close(self):
        """Kills every process of the worker and removes what it left."""
        if self.process is not None:
            try:
                os.killpg(self.process.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.uid is not None and self.isolation.level == "user":
            kill_user(self.uid)
        if self.process is not None:
            self.process.wait()
            self.reader.join(timeout=5)
            self.process.stdout.close()
        for fd in (self.request_write, self.answer_read):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.private is not None:
            remove_private(self.private, self.isolation.mounts and self.uid is not None)
        if self.uid is not None:
            if self.isolation.level == "user":
                remove_files_of(self.uid)
            self.isolation.uids.release(self.uid)
            self.uid = None
        self.process = None


def kill_user(uid, seconds=5.0):
    """Kills every process of uid (the user level): a process of that uid
    sends SIGKILL to all it may signal, until none is left."""
    deadline = time.monotonic() + seconds
    while processes_of(uid) and time.monotonic() < deadline:
        try:
            subprocess.run([sys.executable, "-I", "-S", "-c",
                            "import os, signal\ntry: os.kill(-1, signal.SIGKILL)\n"
                            "except ProcessLookupError: pass"],
                           user=uid, group=uid, extra_groups=[], capture_output=True)
        except OSError:
            return


def processes_of(uid):
    return processes_of_any((uid,))


def processes_of_any(uids):
    """Pids of the live processes whose uid is in uids."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid in uids:
                found.append(int(pid))
        except OSError:
            pass
    return found


def remove_private(folder, mounted):
    """Removes a worker's folder however deep it made it (rm and umount walk
    without recursion limits; links are not followed)."""
    if mounted:
        subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(folder)], capture_output=True)


def remove_files_of(uid):
    """What a user-level worker left in the machine's shared writable folders."""
    folders = [f for f in WORLD_WRITABLE if os.path.isdir(f)]
    if folders:
        subprocess.run(["find", *folders, "-xdev", "-depth", "-user", str(uid), "-delete"],
                       capture_output=True)


def start_worker(submission, isolation, budget, seconds):
    """A worker that has loaded NumPy and autograd, or GraderProblem. Nothing of
    the submission has run yet when it says it is ready, so a worker that
    does not get there is the grader's problem (the canary showed that the
    sandbox itself works)."""
    worker = Worker(submission, isolation, budget)
    try:
        worker.wait_ready(seconds)
        return worker
    except WorkerLost:
        if budget.allow(seconds) < seconds:     # the file's time ran out, not the start
            worker.close()
            raise
    tail = worker.output_tail()
    worker.close()
    raise GraderProblem(f"the grader's worker did not start before the submission was loaded "
                        f"({tail or 'no output'}): --memory {isolation.limits.memory_mb} MiB is "
                        "probably too little for Python, NumPy and autograd; raise --memory")
