"""The few steps between the grader and its worker that need privilege, run
with `python -I -S` (no site, no .pth files) before anything else:

    python -I -S launch.py '{"join": [...], "drop": [uid, gid]}' COMMAND...

join: cgroup.procs files this process moves itself into (its children are
born there, so no process of the worker escapes its limits); drop: the user
and group it becomes, with no supplementary groups and no capabilities left
(checked), and no new privileges through set-user-ID programs. Then it
executes COMMAND. Any step that fails ends it with exit code 125 and one
line on stderr that starts with "launch:".
"""
import ctypes
import json
import os
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_PDEATHSIG = 1
SIGKILL = 9


def fail(message):
    sys.stderr.write(f"launch: {message}\n")
    sys.stderr.flush()
    os._exit(125)


def capabilities():
    """{"CapInh": int, "CapPrm": ..., "CapEff": ..., "CapBnd": ..., "CapAmb": ...}."""
    with open("/proc/self/status") as status:
        return {key: int(value, 16) for key, value in
                (line.split(":") for line in status if line.startswith("Cap"))}


def drop(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)        # from uid 0: the permitted and effective sets are cleared
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("no_new_privs could not be set")
    # Dies with the grader (a change of uid clears this, so it is set after it).
    libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    caps = capabilities()
    if os.getresuid() != (uid, uid, uid) or os.getgroups() or any(
            caps[key] for key in ("CapPrm", "CapEff", "CapAmb")):
        fail(f"privileges were not dropped (uid {os.getresuid()}, caps {caps})")


def main(argv):
    try:
        steps, command = json.loads(argv[1]), argv[2:]
        for procs in steps.get("join", []):
            with open(procs, "w") as f:
                f.write("0")
        if steps.get("drop"):
            drop(*steps["drop"])
        os.execv(command[0], command)
    except Exception as e:   # noqa: BLE001  one line, whatever failed
        fail(f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main(sys.argv)
