"""What one worker may use, and the cgroups that hold it to that where the
machine lets the grader make them.

Rlimits (set by the worker itself before the submission loads, see
grader/worker.py) hold everywhere but count per process (memory, CPU time,
file size) or per user (processes). A cgroup holds the whole tree of the
worker at once: RAM including tmpfs pages and memfd, the number of
processes and threads, and a share of the CPUs, so that busy children
cannot starve a classmate's worker. cgroup v2 (one hierarchy with the
memory, pids and cpu controllers) is used where it offers them, else the
v1 hierarchies of those controllers; where neither can be written (no
root, a container), the rlimits and the sandbox's size-capped tmpfs mounts
are what holds, and the report says so.
"""
import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 2 ** 20
CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD = 100000      # microseconds


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096        # RAM (and tmpfs, where a cgroup holds) of one worker
    processes: int = 32          # processes and threads of one worker
    disk_mb: int = 256           # its private folder, and its /tmp, each
    shm_mb: int = 64             # its /dev/shm
    cpus: float = 1.0            # CPUs its processes share, where a cgroup holds
    cpu_seconds: int = 600       # CPU time of each of its processes
    open_files: int = 256

    def for_worker(self, count_processes=True):
        """The rlimits the worker sets on itself (grader/worker.py)."""
        return {"memory_mb": self.memory_mb, "file_mb": self.disk_mb,
                "processes": self.processes if count_processes else 0,
                "cpu_seconds": self.cpu_seconds, "open_files": self.open_files}


def write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


class WorkerCgroup:
    """The cgroup (v2) or cgroups (v1, one per controller) of one worker."""

    def __init__(self, folders, version):
        self.folders, self.version = folders, version

    @property
    def procs_files(self):
        return [str(folder / "cgroup.procs") for folder in self.folders]

    def pids(self):
        found = set()
        for folder in self.folders:
            try:
                found |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def peak_memory(self):
        """Bytes, or None where the kernel does not keep the peak."""
        for folder in self.folders:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                try:
                    return int((folder / name).read_text())
                except (OSError, ValueError):
                    pass
        return None

    def oom_kills(self):
        """How many processes the kernel killed for going over the memory limit."""
        for folder in self.folders:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    for line in (folder / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            return int(value)
                except (OSError, ValueError):
                    pass
        return 0

    def kill(self, seconds=5.0):
        """Kills every process in it; True when it is empty."""
        if self.version == 2:
            try:
                write(self.folders[0] / "cgroup.kill", 1)
            except OSError:
                pass
        deadline = time.monotonic() + seconds
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def remove(self):
        self.kill()
        for folder in self.folders:
            for _ in range(100):         # a killed process leaves its cgroup a moment later
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


class Cgroups:
    """Where this process can make cgroups for its workers: a parent folder
    per controller (v1) or one (v2) in which each worker gets its own."""

    def __init__(self, parents, version):
        self.parents, self.version, self.counter = parents, version, itertools.count(1)

    def describe(self):
        return f"cgroup v{self.version}"

    def create(self, limits):
        """-> a WorkerCgroup with the limits written, or OSError."""
        name = f"vae-check-{os.getpid()}-{next(self.counter)}"
        folders = sorted({parent / name for parent in self.parents.values()})
        made = []
        try:
            for folder in folders:
                folder.mkdir()
                made.append(folder)
            self._limit(limits, name)
        except OSError:
            WorkerCgroup(made, self.version).remove()
            raise
        return WorkerCgroup(folders, self.version)

    def _limit(self, limits, name):
        memory = limits.memory_mb * MiB
        quota = int(CPU_PERIOD * limits.cpus)
        if self.version == 2:
            folder = self.parents["memory"] / name
            write(folder / "memory.max", memory)
            if (folder / "memory.swap.max").exists():
                write(folder / "memory.swap.max", 0)
            write(folder / "pids.max", limits.processes)
            write(folder / "cpu.max", f"{quota} {CPU_PERIOD}")
            return
        memory_folder = self.parents["memory"] / name
        write(memory_folder / "memory.limit_in_bytes", memory)
        if (memory_folder / "memory.memsw.limit_in_bytes").exists():
            write(memory_folder / "memory.memsw.limit_in_bytes", memory)   # no swap either
        write(self.parents["pids"] / name / "pids.max", limits.processes)
        write(self.parents["cpu"] / name / "cpu.cfs_period_us", CPU_PERIOD)
        write(self.parents["cpu"] / name / "cpu.cfs_quota_us", quota)

def cgroup_mounts(mountinfo):
    """{controller: mount point} of cgroup v1, and the cgroup2 mount point or None."""
    v1, v2 = {}, None
    for line in mountinfo.splitlines():
        fields = line.split(" - ")
        if len(fields) != 2:
            continue
        mount_point = fields[0].split()[4]
        fstype, _, options = (fields[1].split() + ["", ""])[:3]
        if fstype == "cgroup2" and v2 is None:
            v2 = Path(mount_point)
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in CONTROLLERS:
                    v1[option] = Path(mount_point)
    return v1, v2


def own_cgroups(proc_cgroup):
    """{controller or "": path} of /proc/self/cgroup ("" for v2's single line)."""
    paths = {}
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path.lstrip("/")
    return paths


def find_cgroups(mountinfo=None, proc_cgroup=None):
    """-> (Cgroups or None, why not): v2 where its hierarchy has memory, pids
    and cpu for children of this process's cgroup (or of its root), else v1."""
    mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    proc_cgroup = (proc_cgroup if proc_cgroup is not None
                   else Path("/proc/self/cgroup").read_text())
    v1, v2 = cgroup_mounts(mountinfo)
    own = own_cgroups(proc_cgroup)
    reasons = []
    if v2 is not None:
        for parent in [v2 / own.get("", ""), v2]:
            try:
                enabled = (parent / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if all(c in enabled for c in CONTROLLERS) and os.access(parent, os.W_OK):
                return Cgroups({c: parent for c in CONTROLLERS}, 2), ""
        reasons.append("cgroup v2 offers no memory, pids and cpu controllers to this process")
    if all(c in v1 for c in CONTROLLERS):
        parents = {c: v1[c] / own.get(c, "") for c in CONTROLLERS}
        if all(os.access(parent, os.W_OK) for parent in parents.values()):
            return Cgroups(parents, 1), ""
        reasons.append("the cgroup v1 hierarchies are not writable")
    elif v1:
        reasons.append("cgroup v1 lacks the memory, pids or cpu controller")
    return None, "; ".join(reasons) or "no cgroup file system is mounted"
