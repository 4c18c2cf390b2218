"""Where and as whom a submission runs: the isolation level of a grading run.

Levels, strongest first (docs/grading.md, "Threat model"):

- bwrap: bubblewrap. The worker sees a read-only view of the system, of the
  Python installation, of the staged worker modules (/grader: off the
  submission's path once the worker has loaded them) and of the course's
  data.py and plotting.py (/course; not the reference),
  size-capped tmpfs mounts as its only writable places (/submission with
  copies of the student's folder, /tmp, /dev/shm), no network, its own PID,
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

Whether a level works is tried once, with a canary worker (a Worker of
grader/sandbox.py), before any submission runs: a worker that then fails to
start is the grader's problem, never blamed on the sandbox because of a
student's files.
"""
import dataclasses
import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from grader.limits import find_cgroups
from grader.sandbox import PROJECT, Budget, GraderProblem, Worker, WorkerLost, interpreter_paths

STAGED = ("grader/__init__.py", "grader/protocol.py", "grader/worker.py", "grader/script.py",
          "grader/launch.py", "data.py", "plotting.py")
# The course's modules stand alone in a folder of their own (COURSE below the stage, /course
# in bwrap), the only one of ours on the submission's path; the worker's package (CODE, /grader
# in bwrap) is on its path only until the worker has imported it.
COURSE_MODULES = ("data.py", "plotting.py")
CODE, COURSE = "code", "course"
UID_BASE, UID_COUNT = 1_900_000_000, 4096    # the workers' users, when the grader is root
NO_CGROUPS = "VAE_CHECK_NO_CGROUPS"   # set: grade as if no cgroup could be made (tests)
CANARY_MEMORY_MB = 2048      # enough for any worker to start; --memory is tried on the first file


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
        self.code, self.course = self.stage / CODE, self.stage / COURSE
        for name in STAGED:
            target = (self.course if name in COURSE_MODULES else self.code) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PROJECT / name, target)
        for path in [self.stage, *self.stage.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        (self.course / "datasets").mkdir(mode=0o755)  # bwrap mounts the shipped MNIST here
        if level != "bwrap":
            (self.course / "datasets").rmdir()
            (self.course / "datasets").symlink_to(PROJECT / "datasets")
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

