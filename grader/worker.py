"""The worker that check.py starts for one submission: it loads the student's
file and computes what the grader asks, nothing else.

It never sees the reference and judges nothing: requests arrive on one file
descriptor and raw results (arrays, exceptions with the student's line)
leave on another, so nothing the submission prints can pass for a verdict.
It runs inside the sandbox that grader/sandbox.py sets up, already as an
unprivileged user; before anything of the submission runs it lowers its own
limits (which a child process inherits and cannot raise), loads NumPy,
autograd and its own modules, and then steps out of the submission's way:
the only folder of ours left on the path is the course's (data.py and
plotting.py), ahead of the installation, and no module of the grader's is
left in sys.modules, so a submission can import neither the grader nor the
reference (and a module of its own named grader.py is its own).

    python -I grader/worker.py CONFIG_JSON

CONFIG_JSON: {"requests": fd, "answers": fd, "submission": path, "course":
folder of data.py and plotting.py, "limits": {"memory_mb", "processes",
"file_mb", "cpu_seconds", "open_files"}}.
"""
import json
import os
import sys
from pathlib import Path

CODE = str(Path(__file__).resolve().parent.parent)    # the folder that holds `grader`
if __name__ == "__main__":           # run as a script: until step_aside
    sys.path[0] = CODE

from grader.protocol import (Unsupported, decode, encode, error_info, frame,  # noqa: E402, F401
                             read_frame, text)


def limit_self(limits):
    """Lowers this process's limits, soft and hard, before NumPy loads. A
    child inherits them; without privilege no process can raise them. The
    process count is counted per user (in the sandbox's user namespace), so
    it holds for the worker's whole tree."""
    import resource
    mib = 2 ** 20
    wanted = {resource.RLIMIT_AS: limits.get("memory_mb", 0) * mib,
              resource.RLIMIT_NPROC: limits.get("processes", 0),
              resource.RLIMIT_FSIZE: limits.get("file_mb", 0) * mib,
              resource.RLIMIT_CPU: limits.get("cpu_seconds", 0),
              resource.RLIMIT_NOFILE: limits.get("open_files", 0),
              resource.RLIMIT_CORE: 0, resource.RLIMIT_MEMLOCK: 0,
              resource.RLIMIT_MSGQUEUE: 0}
    for which, value in wanted.items():
        if value or which in (resource.RLIMIT_CORE, resource.RLIMIT_MEMLOCK,
                              resource.RLIMIT_MSGQUEUE):
            resource.setrlimit(which, (value, value))


def load_definitions(path):
    """Executes only the imports, function and class definitions and literal
    constant assignments of the file, one statement at a time."""
    import ast
    import types
    tree = ast.parse(path.read_text(), filename=str(path))
    module = types.ModuleType("submission")
    module.__file__ = str(path)
    notes = []
    for node in tree.body:
        keep = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            try:
                ast.literal_eval(node.value)
                keep = True
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
        if keep:
            try:
                exec(compile(ast.Module([node], []), str(path), "exec"), module.__dict__)
            except Exception as e:   # an import that fails: the functions may still work
                notes.append(text(f"line {node.lineno}: {type(e).__name__}: {text(e)}"))
    return module, notes


def import_whole(path):
    """Imports the file as the module `submission`, running its top-level code."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("submission", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def describe_functions(module, names):
    import inspect

    import autograd.numpy
    import numpy
    described = {}
    for name in names:
        f = getattr(module, name, None)
        if not callable(f):
            continue
        try:
            parameters = [text(p, 100) for p in inspect.signature(f).parameters][:100]
        except (TypeError, ValueError):
            parameters = []
        modules = list(getattr(f, "__globals__", {}).values())
        described[name] = {"parameters": parameters, "plain_numpy": (
            any(m is numpy for m in modules) and not any(m is autograd.numpy for m in modules))}
    return described


def call(module, request, arrays):
    """Runs one requested call. -> (answer header, answer arrays)."""
    import warnings

    import autograd.numpy.random as npr
    import numpy as np
    f = getattr(module, request["function"])
    args = decode(request["args"], arrays)
    out = []
    with warnings.catch_warnings(record=True) as caught, \
            np.errstate(all=request.get("errstate") or "warn"):
        warnings.simplefilter("always")
        if request.get("gradient"):
            from autograd import grad
            from autograd.misc import flatten
            gen_params, rec_params, data = args
            flat, unflatten = flatten((gen_params, rec_params))

            def objective(flat_params):
                npr.seed(request["seed"])
                return f(*unflatten(flat_params), data)
            value = grad(objective)(flat)
        else:
            if request.get("seed") is not None:
                npr.seed(request["seed"])
            value = f(*args)
        tree = encode(value, out)
    return {"ok": True, "value": tree, "warnings": len(caught)}, out


def listing(folder, limit=5000):
    """{relative path: (size, mtime) of a file, () of a folder} below folder,
    links not followed, at most `limit` entries: what importing changed."""
    found, stack = {}, [""]
    while stack and len(found) < limit:
        prefix = stack.pop()
        try:
            with os.scandir(folder / prefix if prefix else folder) as entries:
                for entry in entries:
                    if len(found) >= limit:
                        break
                    name = prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        found[name + "/"] = ()
                        stack.append(name + "/")
                    else:
                        st = entry.stat(follow_symlinks=False)
                        found[name] = (st.st_size, st.st_mtime_ns)
        except OSError:
            pass
    return found


def identity(paths):
    """Who this process is: its uid, its effective capabilities, and which of
    the paths it can open (the canary of grader/isolation.py asks)."""
    with open("/proc/self/status") as status:
        caps = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff"))
    readable = []
    for path in paths:
        try:
            with open(path, "rb"):
                readable.append(path)
        except OSError:
            pass
    return {"ok": True, "uid": os.getuid(), "capabilities": caps, "readable": readable}


def step_aside(course):
    """Leaves nothing of the grader's importable: the course folder (data.py,
    plotting.py) replaces the grader's on the path, and the grader's modules
    leave sys.modules (the functions already loaded keep what they use)."""
    import importlib
    sys.path[:] = [course] + [p for p in sys.path[1:] if os.path.abspath(p or ".") != CODE]
    sys.path_importer_cache.pop(CODE, None)
    for name in [name for name in sys.modules if name == "grader" or name.startswith("grader.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def serve(read, write, path, run_script):
    """Answers requests until the channel closes."""
    module = None
    while True:
        try:
            request, arrays = read_frame(read)
        except EOFError:
            return 0
        answer, out = {}, []
        try:
            if request["op"] == "import":
                before = listing(path.parent)
                module = import_whole(path)
                after = listing(path.parent)
                answer = {"ok": True, "files": sorted(name for name, state in after.items()
                                                      if before.get(name) != state)[:1000]}
            elif request["op"] == "identity":
                answer = identity(request["paths"])
            elif request["op"] == "run_script":
                answer, out = run_script(path, request, arrays)
            elif request["op"] == "load":
                if request["mode"] == "imported" and module is not None:
                    notes = []                   # the module the "import" request made
                else:
                    module, notes = ((import_whole(path), []) if request["mode"] == "full"
                                     else load_definitions(path))
                answer = {"ok": True, "notes": notes[:1000],
                          "functions": describe_functions(module, request["names"])}
            else:
                answer, out = call(module, request, arrays)
        except BaseException as e:   # SystemExit, KeyboardInterrupt and all: the student's
            answer, out = {"ok": False, "error": error_info(e, path)}, []
        answer["id"] = request.get("id")
        try:
            message = frame(answer, out)
        except BaseException as e:   # a value that cannot be sent
            message = frame({"ok": False, "id": request.get("id"), "error": error_info(e, path)})
        write(message)


def main(argv):
    config = json.loads(argv[1])
    limit_self(config["limits"])
    sys.dont_write_bytecode = True
    requests = os.fdopen(config["requests"], "rb", buffering=0)
    answers = os.fdopen(config["answers"], "wb")

    def write(data):
        answers.write(data)
        answers.flush()

    if config.get("canary"):                  # grader/isolation.py: who is this worker?
        request, _ = read_frame(requests.read)
        write(frame({**identity(request["paths"]), "id": request["id"]}))
        return 0
    # NumPy and autograd are loaded before the submission's folder joins the
    # path, and it joins last: the course's data.py and plotting.py (first on
    # the path) and the installation's modules come first.
    import autograd  # noqa: F401
    import autograd.misc  # noqa: F401
    import autograd.numpy  # noqa: F401
    import autograd.numpy.random  # noqa: F401
    import numpy  # noqa: F401
    from grader.script import run_script
    step_aside(config["course"])
    path = Path(config["submission"])
    sys.path.append(str(path.parent))        # after the installation: its own helpers only
    write(frame({"ready": True}))
    return serve(requests.read, write, path, run_script)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
