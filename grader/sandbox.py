"""Where and as whom a submission runs: the isolation levels, and the worker
process of one submission.

Levels, strongest first (docs/grading.md, "Threat model"):

- bwrap: bubblewrap. The worker sees a read-only view of the system, of the
  Python installation and of the staged grader modules (not the reference),
  size-capped tmpfs mounts as its only writable places (/submission with
  copies of the student's files, /tmp, /dev/shm), no network, its own PID,
  IPC and UTS namespaces. Run by root, bwrap sets up the mounts and the
  worker then becomes a user of its own (a uid from UID_BASE, one per
  worker: per-user limits separate classmates) with no capabilities and no
  new privileges, before any Python site code runs (grader/launch.py), and
  enters a user namespace in which it cannot make another; run
  by anyone else, bwrap's user namespace maps the worker to the instructor's
  uid with no capabilities and no further user namespaces.
- user: where bwrap cannot start (a container whose seccomp profile forbids
  namespaces, a kernel without user namespaces) and the grader is root: the
  worker runs as a uid of its own in a private folder (a size-capped tmpfs
  where mounts are allowed), with the same rlimits; the reference must be
  unreadable to that uid (checked at the start), and what it leaves in the
  shared /tmp, /var/tmp and /dev/shm is removed with its processes.
- none: an ordinary process of the instructor, in a temporary folder. Only
  when asked for (--sandbox none).

At every level the worker lowers its own rlimits before the submission loads
(memory, processes, file size, CPU time, open files), a cgroup holds the
whole tree where one can be made (grader/limits.py), deadlines are enforced
from here, and the worker's output is drained with only its tail kept.
Whether a level works is tried once, with a canary worker, before any
submission runs: a worker that then fails to start is the grader's problem,
never blamed on the sandbox because of a student's files.
"""
import dataclasses
import fcntl
import json
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grader import protocol
from grader.limits import find_cgroups

PROJECT = Path(__file__).resolve().parent.parent
STAGED = ("grader/__init__.py", "grader/protocol.py", "grader/worker.py", "grader/script.py",
          "grader/launch.py", "data.py", "plotting.py")
TAIL_BYTES = 4000               # of the worker's output, kept for messages
ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0",
       "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
UID_BASE, UID_COUNT = 1_900_000_000, 4096    # the workers' users, when the grader is root
LEVELS = ("bwrap", "user", "none")
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
NO_CGROUPS = "VAE_CHECK_NO_CGROUPS"   # set: grade as if no cgroup could be made (tests)
CANARY_MEMORY_MB = 2048      # enough for any worker to start; --memory is tried on the first file


class WorkerLost(BaseException):
    """The worker timed out, died or broke the protocol: no answer to judge."""


class GraderProblem(Exception):
    """The grader itself cannot run a worker (its memory limit is too low)."""


class IsolationUnavailable(Exception):
    """The level asked for cannot run on this machine; the message says why
    and what to do."""


# ---- Users of the workers ---------------------------------------------------------

class Uids:
    """Unused uids, one per running worker, claimed with a lock file so that
    two grading runs on one machine never share one."""

    def __init__(self):
        self.folder = Path("/run/vae-check-uids")
        self.folder.mkdir(mode=0o700, exist_ok=True)
        st = self.folder.lstat()
        if st.st_uid != 0 or st.st_mode & 0o077 or self.folder.is_symlink():
            raise IsolationUnavailable(f"{self.folder} is not a private folder of root")
        self.held, self.lock = {}, threading.Lock()

    def acquire(self):
        with self.lock:
            for uid in range(UID_BASE, UID_BASE + UID_COUNT):
                if uid in self.held or known_user(uid):
                    continue
                fd = os.open(self.folder / str(uid), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.held[uid] = fd
                return uid
        raise GraderProblem(f"all {UID_COUNT} worker uids from {UID_BASE} are in use")

    def release(self, uid):
        with self.lock:
            fd = self.held.pop(uid, None)
            if fd is not None:
                os.close(fd)


def known_user(uid):
    try:
        pwd.getpwuid(uid)
        return True
    except KeyError:
        return False


def mapped(uid):
    """True if uid exists in this process's user namespace (a container may map few)."""
    for line in Path("/proc/self/uid_map").read_text().splitlines():
        inside, _, count = map(int, line.split())
        if inside <= uid < inside + count:
            return True
    return False


# ---- The level of a grading run ----------------------------------------------------

class Isolation:
    """How this run's workers are isolated: the level, the limits, and the
    shared pieces (the staged grader modules, the uids, the cgroups)."""

    def __init__(self, level, limits):
        self.level, self.limits = level, limits
        self.root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="vae-check-"))
        os.chmod(self.folder, 0o711)             # workers may pass through, not look
        self.stage = self.folder / "grader-files"
        for name in STAGED:
            target = self.stage / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT / name, target)
        for path in [self.stage, *self.stage.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        (self.stage / "datasets").mkdir(mode=0o755)  # bwrap mounts the shipped MNIST here
        if level != "bwrap":
            (self.stage / "datasets").rmdir()
            (self.stage / "datasets").symlink_to(PROJECT / "datasets")
        self.uids = Uids() if self.root and level in ("bwrap", "user") else None
        self.cgroups, self.cgroup_note = (
            (None, "not used without a sandbox") if level == "none" else
            (None, f"{NO_CGROUPS} is set") if os.environ.get(NO_CGROUPS) else find_cgroups())
        self.mounts = False          # user level: a tmpfs per private folder
        self.held = {}

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)

    def describe(self):
        """What this level protects and which limits hold: for the report."""
        limits, cgroup = self.limits, self.cgroups is not None
        via = f" ({self.cgroups.describe()})" if cgroup else ""
        user = ({"bwrap": "a uid of its own per worker" if self.root else
                          "the instructor's uid, in a user namespace",
                 "user": "a uid of its own per worker",
                 "none": "the instructor's uid"}[self.level])
        held = {
            "user": user,
            "memory": (f"{limits.memory_mb} MiB of RAM, tmpfs and memfd included{via}" if cgroup
                       else f"{limits.memory_mb} MiB of address space per process (rlimit); "
                            "tmpfs and memfd not counted"),
            "processes": (f"{limits.processes} processes and threads"
                          + (via if cgroup else " (rlimit, per user)")
                          if self.level != "none" else "not limited"),
            "cpu": (f"{limits.cpus:g} CPU{via}" if cgroup else
                    f"{limits.cpu_seconds} s of CPU time per process (rlimit); no CPU share"),
            "disk": ({"bwrap": f"{limits.disk_mb} MiB tmpfs for its folder and for /tmp, "
                               f"{limits.shm_mb} MiB /dev/shm",
                      "user": (f"{limits.disk_mb} MiB tmpfs for its folder" if self.mounts else
                               f"{limits.disk_mb} MiB per file (rlimit)")
                              + "; /tmp and /dev/shm shared, emptied of its files afterwards",
                      "none": f"{limits.disk_mb} MiB per file (rlimit)"}[self.level]),
            "files": {"bwrap": "the system and Python read-only; no other file of this "
                               "machine visible",
                      "user": "what its uid may read (the reference is checked unreadable)",
                      "none": "everything the instructor may read and write"}[self.level],
            "network": "none" if self.level == "bwrap" else "not isolated",
        }
        if not cgroup and self.level != "none":
            held["cgroup"] = f"no cgroup: {self.cgroup_note}"
        return {"level": self.level, **held}


def setup(requested, limits):
    """The isolation level to grade with -> Isolation, tried with a canary
    worker. requested: "auto" (bwrap, else user where root), or a level.
    IsolationUnavailable with the reasons if none works."""
    if requested == "none":
        return Isolation("none", limits)
    reasons = []
    for level in (["bwrap", "user"] if requested == "auto" else [requested]):
        if level == "bwrap" and shutil.which("bwrap") is None:
            reasons.append("bubblewrap is not installed (apt-get install bubblewrap)")
            continue
        if level == "user" and os.geteuid() != 0:
            reasons.append("the user level needs root (it runs each worker as a uid of its own)")
            continue
        if level == "user" and not mapped(UID_BASE + UID_COUNT - 1):
            reasons.append(f"uids {UID_BASE} and up do not exist in this user namespace")
            continue
        if level == "user" and closed_folders():
            reasons.append("user: the worker's own uid cannot run this Python: "
                           f"{', '.join(closed_folders())} cannot be entered by other users "
                           "(chmod o+x them, or use a Python installed where any user can run it)")
            continue
        isolation = Isolation(level, limits)
        try:
            canary(isolation)
            return isolation
        except (IsolationUnavailable, GraderProblem, WorkerLost) as e:
            isolation.close()
            reasons.append(f"{level}: {e}")
    raise IsolationUnavailable("no sandbox can run here: " + "; ".join(reasons)
                               + ". Fix that, or grade with --sandbox none (no isolation: "
                               "a submission can then read and write your files)")


def closed_folders():
    """Folders on the way to the Python installation that other users cannot enter."""
    closed = set()
    for path in [Path(sys.executable), *map(Path, interpreter_paths())]:
        for folder in [*reversed(path.resolve().parents), path.resolve()]:
            if folder.is_dir() and not folder.stat().st_mode & 0o001:
                closed.add(str(folder))
    return sorted(closed)


def canary(isolation):
    """Starts a worker on an empty file and asks who it is: it must not be
    root, hold no capability, and not be able to read the reference."""
    from grader.intake import Submission
    if isolation.level == "user":
        isolation.mounts = try_tmpfs(isolation)
    secret = [str(PROJECT / "vae.py"), str(PROJECT / "grader" / "checks.py")]
    limits = dataclasses.replace(isolation.limits, memory_mb=max(isolation.limits.memory_mb,
                                                                 CANARY_MEMORY_MB))
    try:
        worker = Worker(Submission(PROJECT / "canary.py", "canary.py", {"canary.py": b""}),
                        isolation, Budget(60), limits, canary=True)
    except OSError as e:
        raise IsolationUnavailable(f"the worker could not be started ({e})") from None
    try:
        answer, _ = worker.request({"op": "identity", "paths": secret}, [], 30, "identity")
    except WorkerLost as e:
        raise IsolationUnavailable(f"the canary worker {e} ({worker.output_tail() or 'no output'})"
                                   ) from None
    finally:
        worker.close()
    if answer["uid"] == 0 or answer["capabilities"] != 0:
        raise IsolationUnavailable(f"the worker ran as uid {answer['uid']} with capabilities "
                                   f"{answer['capabilities']:x}")
    if answer["readable"]:
        raise IsolationUnavailable(
            f"the worker's user can read {', '.join(answer['readable'])}: make the project "
            f"folder private to root (chmod 700 {PROJECT}) so that students cannot read the "
            "reference")


def try_tmpfs(isolation):
    """True if root may mount a tmpfs here (not in most containers)."""
    probe = isolation.folder / "mount-probe"
    probe.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                                 capture_output=True).returncode == 0
        if mounted:
            subprocess.run(["umount", "--lazy", str(probe)], capture_output=True)
        return mounted
    except OSError:
        return False
    finally:
        probe.rmdir()


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

def memfd(name, content):
    fd = os.memfd_create(name, 0)
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
                                 "limits": limits.for_worker(count_processes=level != "none"),
                                 "canary": canary})
            if level == "bwrap":
                files = {name: memfd(name, content) for name, content in submission.files.items()}
                fds += files.values()
                command, cwd, env = self.bwrap_command(files, config), None, None
            else:
                stage = isolation.stage
                command = [sys.executable, "-I", str(stage / "grader" / "worker.py"), config]
                if level == "user":
                    command = [sys.executable, "-I", "-S", str(stage / "grader" / "launch.py"),
                               json.dumps({"join": self.cgroup.procs_files if self.cgroup else [],
                                           "drop": [self.uid, self.uid]})] + command
                cwd = self.private
                env = {**ENV, "HOME": str(self.private), "TMPDIR": str(self.private),
                       "MPLCONFIGDIR": str(self.private)}
            if self.cgroup is not None and level == "bwrap":
                command = [sys.executable, "-I", "-S", str(isolation.stage / "grader" / "launch.py"),
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
        args += ["--ro-bind", str(isolation.stage), "/grader",
                 "--ro-bind", str(PROJECT / "datasets"), "/grader/datasets",
                 "--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", str(limits.shm_mb * mib), "--tmpfs", "/dev/shm",
                 "--perms", "1777", "--size", str(limits.disk_mb * mib), "--tmpfs", "/submission"]
        for name, fd in files.items():
            args += ["--perms", "0644", "--file", str(fd), f"/submission/{name}"]
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
        for name, content in self.submission.files.items():
            (self.private / name).write_bytes(content)
            if self.uid is not None:
                os.chown(self.private / name, self.uid, self.uid)
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
