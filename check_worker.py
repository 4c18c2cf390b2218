"""The worker that check.py starts for one submission: it loads the student's
file and computes what the grader asks, nothing else.

It never sees the reference and judges nothing: requests arrive on one file
descriptor and raw results (arrays, exceptions with the student's line)
leave on another, so nothing the submission prints can pass for a verdict.
check.py runs it inside a sandbox where one exists (see check.py).

    python check_worker.py REQUEST_FD ANSWER_FD SUBMISSION MEMORY_MB

A frame is two big-endian 8-byte lengths, a JSON header and an .npz payload
(np.load with allow_pickle=False on the grader's side: a frame cannot carry
code). Values are encoded as JSON trees whose leaves name arrays of the payload.
"""
import io
import json
import struct
import sys

LENGTHS = struct.Struct(">QQ")
MAX_HEADER = 2 ** 20            # bytes: JSON headers are small
MAX_PAYLOAD = 2 ** 28           # bytes: the largest legitimate payload is about 16 MB
MAX_ITEMS = 10000               # list items encoded per value
MAX_DEPTH = 4                   # nesting of lists in a value


class FrameError(Exception):
    """A frame that breaks the protocol (too large, truncated, not JSON, not numeric)."""


# ----------------------------------------------------------------------------
# Frames and values (shared with check.py)
# ----------------------------------------------------------------------------

def encode(value, arrays, depth=0):
    """value -> JSON tree; numbers and arrays go into `arrays` (name -> ndarray)."""
    import numpy as np
    if value is None:
        return {"none": True}
    if isinstance(value, (bool, int, float, np.generic, np.ndarray)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            return {"unsupported": f"array of {array.dtype}"}
        name = f"a{len(arrays)}"
        arrays[name] = array
        return {"array": name}
    if isinstance(value, (list, tuple)) and depth < MAX_DEPTH and len(value) <= MAX_ITEMS:
        return {"tuple" if isinstance(value, tuple) else "list":
                [encode(item, arrays, depth + 1) for item in value]}
    return {"unsupported": type(value).__name__}


def decode(tree, arrays):
    """The inverse of encode; unsupported values become Unsupported(type name)."""
    if not isinstance(tree, dict) or len(tree) != 1:
        raise FrameError("a value that is not an encoded tree")
    (kind, content), = tree.items()
    if kind == "none":
        return None
    if kind == "array":
        if content not in arrays:
            raise FrameError(f"a reference to a missing array {content!r}")
        return arrays[content]
    if kind in ("list", "tuple") and isinstance(content, list):
        items = [decode(item, arrays) for item in content]
        return tuple(items) if kind == "tuple" else items
    if kind == "unsupported":
        return Unsupported(str(content)[:100])
    raise FrameError(f"an unknown value kind {kind!r}")


class Unsupported:
    """A returned value of a type the protocol does not carry."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"an object of type {self.type_name}"


def frame(header, arrays=None):
    """-> bytes of one frame."""
    import numpy as np
    payload = io.BytesIO()
    if arrays:
        np.savez(payload, **arrays)
    head = json.dumps(header).encode()
    return LENGTHS.pack(len(head), len(payload.getvalue())) + head + payload.getvalue()


def parse(head, payload):
    """(header bytes, payload bytes) -> (header dict, {name: ndarray})."""
    import numpy as np
    try:
        header = json.loads(head)
        arrays = {}
        if payload:
            with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, RecursionError) as e:
        raise FrameError(f"a frame that is not JSON and .npz ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise FrameError("a frame header that is not a JSON object")
    if any(array.dtype.kind not in "biuf" for array in arrays.values()):
        raise FrameError("a frame with non-numeric arrays")
    return header, arrays


def read_exactly(read, n):
    chunks, got = [], 0
    while got < n:
        chunk = read(n - got)
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(read):
    """Reads one frame with read(n) -> bytes; sizes are checked before reading."""
    head_size, payload_size = LENGTHS.unpack(read_exactly(read, LENGTHS.size))
    if head_size > MAX_HEADER or payload_size > MAX_PAYLOAD:
        raise FrameError(f"a frame of {head_size + payload_size} bytes, over the limit")
    return parse(read_exactly(read, head_size), read_exactly(read, payload_size))


# ----------------------------------------------------------------------------
# The worker
# ----------------------------------------------------------------------------

def error_info(e, path):
    """What went wrong, and where in the submission: its deepest frame there."""
    import traceback
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
    where = frames[-1] if frames else None
    return {"type": type(e).__name__, "message": str(e)[:500],
            "line": where.lineno if where else None,
            "text": (where.line or "").strip()[:200] if where else ""}


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
            except ValueError:
                pass
        if keep:
            try:
                exec(compile(ast.Module([node], []), str(path), "exec"), module.__dict__)
            except Exception as e:   # an import that fails: the functions may still work
                notes.append(f"line {node.lineno}: {type(e).__name__}: {e}")
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
            parameters = list(inspect.signature(f).parameters)
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
    out = {}
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


def run_script(path, request, arrays):
    """Runs the file as __main__ on the grader's data: `data.load_mnist()` (and
    `load_data()`) return the arrays sent, `save_images` records its calls
    instead of writing files, and autograd's `flatten` remembers the flat
    vectors it makes. -> (answer, arrays): the recorded calls and the 1-D
    float arrays of `request["size"]` entries the script ends with."""
    import builtins
    import types

    import autograd.misc
    import numpy as np

    import data
    import plotting
    subset = (len(arrays["train_images"]), arrays["train_images"], arrays["train_labels"],
              arrays["test_images"], arrays["test_labels"])
    calls, flattened, size = [], [], request["size"]

    def save_images(images, filename, **kwargs):
        if len(calls) < 100:
            calls.append((np.array(images, dtype=float), str(filename), {
                k: float(v) for k, v in kwargs.items()
                if k in ("vmin", "vmax", "ims_per_row") and isinstance(v, (int, float))}))

    original_flatten = autograd.misc.flatten

    def flatten(value):
        flat, unflatten = original_flatten(value)
        if np.size(flat) == size:
            flattened[1:] = [flat]           # the first and the last of the right size
        return flat, unflatten

    fake = types.ModuleType("data")
    fake.__dict__.update({k: v for k, v in vars(data).items() if not k.startswith("__")})
    fake.load_mnist, fake.load_data = (lambda: subset), (lambda *args, **kwargs: subset)
    fake.save_images = plotting.save_images = save_images
    sys.modules["data"] = fake
    autograd.misc.flatten = sys.modules["autograd.misc.flatten"].flatten = flatten
    sys.argv = [str(path)]
    script = {"__name__": "__main__", "__file__": str(path), "__builtins__": builtins}
    answer = {"ok": True}
    try:
        exec(compile(path.read_text(), str(path), "exec"), script)
    except SystemExit as e:
        if e.code not in (None, 0):
            answer = {"ok": False, "error": error_info(e, path)}
    except BaseException as e:   # the student's: reported, and what was recorded still counts
        answer = {"ok": False, "error": error_info(e, path)}
    found = {name: value for name, value in script.items() if isinstance(value, np.ndarray)
             and value.ndim == 1 and value.size == size and value.dtype.kind == "f"}
    found.update({f"(flattened {i})": flat for i, flat in enumerate(flattened)})
    out = {}
    answer["candidates"] = {name: encode(np.array(value), out)
                            for name, value in list(found.items())[-8:]}
    answer["calls"] = [{"images": encode(images, out), "filename": filename[:200],
                        "kwargs": kwargs} for images, filename, kwargs in calls]
    return answer, out


def serve(read, write, path):
    """Answers requests until the channel closes."""
    module = None
    while True:
        try:
            request, arrays = read_frame(read)
        except EOFError:
            return 0
        answer, out = {}, {}
        try:
            if request["op"] == "import":
                module = import_whole(path)
                answer = {"ok": True}
            elif request["op"] == "run_script":
                answer, out = run_script(path, request, arrays)
            elif request["op"] == "load":
                module, notes = ((import_whole(path), []) if request["mode"] == "full"
                                 else load_definitions(path))
                answer = {"ok": True, "notes": notes,
                          "functions": describe_functions(module, request["names"])}
            else:
                answer, out = call(module, request, arrays)
        except BaseException as e:   # SystemExit, KeyboardInterrupt and all: the student's
            answer, out = {"ok": False, "error": error_info(e, path)}, {}
        answer["id"] = request.get("id")
        write(frame(answer, out))


def main(argv):
    import os
    import resource
    request_fd, answer_fd, path, memory_mb = int(argv[1]), int(argv[2]), argv[3], int(argv[4])
    limit = memory_mb * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))   # before NumPy loads
    requests, answers = os.fdopen(request_fd, "rb", buffering=0), os.fdopen(answer_fd, "wb")

    def write(data):
        answers.write(data)
        answers.flush()

    from pathlib import Path
    # -I left out the script's folder: data.py and plotting.py are staged beside
    # this file, and a submission may import its own modules from its folder.
    sys.path[:0] = [str(Path(__file__).parent), str(Path(path).parent)]
    import autograd.numpy  # noqa: F401  the grader knows the worker started once these load
    import numpy  # noqa: F401
    write(frame({"ready": True}))
    return serve(requests.read, write, Path(path))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
