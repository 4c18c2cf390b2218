"""grader/limits.py: which cgroups a grader can use, read from this
process's mountinfo and cgroup files, and what it writes for a worker.
The cgroup folders here are plain folders in tmp_path standing in for the
kernel's files (the real ones are exercised by tests/grading/hostile as root)."""
from pathlib import Path

from grader.limits import Cgroups, Limits, cgroup_mounts, find_cgroups, own_cgroups

V1_MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
37 30 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
"""
V1_CGROUP = "5:memory:/jobs/42\n4:pids:/\n3:cpu,cpuacct:/\n0::/\n"
V2_MOUNTINFO = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def test_v1_mounts_and_own_paths_are_read_per_controller():
    v1, v2 = cgroup_mounts(V1_MOUNTINFO)
    assert v1 == {"memory": Path("/sys/fs/cgroup/memory"), "pids": Path("/sys/fs/cgroup/pids"),
                  "cpu": Path("/sys/fs/cgroup/cpu,cpuacct")}
    assert v2 == Path("/sys/fs/cgroup/unified")
    assert own_cgroups(V1_CGROUP) == {"memory": "jobs/42", "pids": "", "cpu": "", "cpuacct": "",
                                      "": ""}


def fake_v2(tmp_path, own, enabled):
    root = tmp_path / "cgroup"
    (root / own).mkdir(parents=True)
    (root / "cgroup.subtree_control").write_text(enabled)
    (root / own / "cgroup.subtree_control").write_text("")
    mountinfo = f"30 25 0:26 / {root} rw - cgroup2 cgroup2 rw\n"
    return root, mountinfo, f"0::/{own}\n"


def test_v2_is_used_below_the_root_when_the_own_cgroup_cannot_delegate(tmp_path):
    root, mountinfo, proc = fake_v2(tmp_path, "user.slice/session", "cpu memory pids io")
    cgroups, why = find_cgroups(mountinfo, proc)
    assert cgroups.version == 2 and cgroups.parents["memory"] == root and why == ""


def test_v2_without_the_controllers_is_said_so(tmp_path):
    _, mountinfo, proc = fake_v2(tmp_path, "a", "io")
    cgroups, why = find_cgroups(mountinfo, proc)
    assert cgroups is None and "no memory, pids and cpu controllers" in why


def test_no_cgroup_file_system_is_said_so():
    assert find_cgroups("", "0::/\n") == (None, "no cgroup file system is mounted")


def test_a_v2_worker_cgroup_gets_memory_swap_processes_and_cpu(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    cgroups = Cgroups({c: parent for c in ("memory", "pids", "cpu")}, 2)
    original = Path.mkdir

    def mkdir_with_files(self, *args, **kwargs):   # the kernel makes a cgroup's files
        original(self, *args, **kwargs)
        (self / "memory.swap.max").write_text("max")
    Path.mkdir = mkdir_with_files
    try:
        worker = cgroups.create(Limits(memory_mb=1024, processes=16, cpus=0.5))
    finally:
        Path.mkdir = original
    (folder,) = worker.folders
    assert (folder / "memory.max").read_text() == str(1024 * 2 ** 20)
    assert (folder / "memory.swap.max").read_text() == "0"
    assert (folder / "pids.max").read_text() == "16"
    assert (folder / "cpu.max").read_text() == "50000 100000"
    assert worker.procs_files == [str(folder / "cgroup.procs")]


def test_a_v1_worker_cgroup_writes_each_controller_and_forbids_swap(tmp_path):
    parents = {c: tmp_path / c for c in ("memory", "pids", "cpu")}
    for parent in parents.values():
        parent.mkdir()
    original = Path.mkdir

    def mkdir_with_files(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.parent == parents["memory"]:
            (self / "memory.memsw.limit_in_bytes").write_text("")
    Path.mkdir = mkdir_with_files
    try:
        worker = Cgroups(parents, 1).create(Limits(memory_mb=512, processes=8, cpus=1.0))
    finally:
        Path.mkdir = original
    memory, = [f for f in worker.folders if f.parent == parents["memory"]]
    assert (memory / "memory.limit_in_bytes").read_text() == str(512 * 2 ** 20)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(512 * 2 ** 20)
    pids, = [f for f in worker.folders if f.parent == parents["pids"]]
    assert (pids / "pids.max").read_text() == "8"
    cpu, = [f for f in worker.folders if f.parent == parents["cpu"]]
    assert (cpu / "cpu.cfs_quota_us").read_text() == "100000"


def test_the_worker_s_rlimits_count_processes_only_inside_a_sandbox():
    limits = Limits(memory_mb=100, processes=7, disk_mb=3)
    assert limits.for_worker()["processes"] == 7
    assert limits.for_worker(count_processes=False)["processes"] == 0   # --sandbox none
