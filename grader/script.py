"""The worker's side of check.py's second part: the submission runs as
__main__ on the grader's subset of MNIST, and what it trained and saved is
recorded for the grader to judge (grader/training.py, grader/figures.py)."""
import functools
import sys

from grader.protocol import MAX_CALLS, decode, encode, error_info, text

MAX_IMAGES = 500          # images kept of one call
# Numbers kept of all calls: 8,000 images of 784 pixels. The assignment's figures
# are 170 images (one call per frame of the five interpolations is 125 calls); in
# float64 these 6.3 million numbers are 50 MB of the answer's 128 MiB, beside the
# 8 candidate vectors (27 MB), the gradient record (16 MB) and its first and last
# vectors (7 MB).
MAX_RECORDED = 8000 * 784
TRACE_BUDGET = 2 ** 20    # numbers in each of the two per-evaluation records (8 MB in float64)
GRADIENT_OPERATORS = {"grad": False, "value_and_grad": True, "elementwise_grad": False}
# (autograd's operators whose gradient functions are followed: do they return the value too)


def traced_width(evaluations, width):
    """How many of the `width` coordinates the grader asked for are kept at
    each of `evaluations` gradient evaluations: halved until both records fit
    TRACE_BUDGET (2,048 up to 512 evaluations; the skeleton's run has 60)."""
    while width > 1 and evaluations * width > TRACE_BUDGET:
        width //= 2
    return width


class GradientTrace:
    """Every evaluation of a gradient function of autograd's at the model's
    parameters (a 1-D float array of `size` numbers, or lists of (W, b) that
    flatten to one): how many, the whole vector at the first and at the last,
    and at each the parameters and the gradient on the coordinates `indices`
    (the first traced_width of them). Copies: a loop may update in place."""

    def __init__(self, size, indices, flatten):
        self.size, self.indices, self.flatten = size, indices, flatten
        self.count, self.first, self.last, self.points, self.gradients = 0, None, None, [], []

    def as_flat(self, value):
        """value as a flat float vector of the model's size (a copy), or None."""
        import numpy as np
        if isinstance(value, (list, tuple, dict)):
            value = self.flatten(value)[0]
        if type(value) is not np.ndarray or value.shape != (self.size,) \
                or value.dtype.kind != "f":
            return None
        return np.array(value)

    def parameters(self, args, argnum):
        """The differentiated argument, if it is the model's parameters."""
        try:
            return self.as_flat(args[argnum]) if type(argnum) is int else None
        except Exception:   # an argument that is not there or does not flatten: not followed
            return None

    def record(self, flat, out, returns_value):
        """One evaluation at flat; out: what the gradient function returned."""
        try:
            gradient = self.as_flat(out[1] if returns_value else out)
        except Exception:   # not a gradient of the parameters' shape: not followed
            return
        if gradient is None or self.count >= TRACE_BUDGET:
            return
        self.count += 1
        self.first = flat if self.first is None else self.first
        self.last = flat
        width = traced_width(self.count, len(self.indices))
        if self.points and len(self.points[0]) > width:       # too many: keep fewer columns
            self.points = [row[:width] for row in self.points]
            self.gradients = [row[:width] for row in self.gradients]
        self.points.append(flat[self.indices[:width]])
        self.gradients.append(gradient[self.indices[:width]])

    def operator(self, original, returns_value):
        """original (grad, value_and_grad, ...) whose gradient functions record
        their evaluations here."""
        @functools.wraps(original)
        def operator(fun, argnum=0, *args, **kwargs):
            gradient_function = original(fun, argnum, *args, **kwargs)

            @functools.wraps(gradient_function)
            def recorded(*call_args, **call_kwargs):
                flat = self.parameters(call_args, argnum)
                out = gradient_function(*call_args, **call_kwargs)
                if flat is not None:
                    self.record(flat, out, returns_value)
                return out
            return recorded
        return operator

    def answer(self, out):
        """The record as the answer's "gradients" field (arrays appended to out)."""
        import numpy as np
        return {"count": self.count, "first": encode(self.first, out),
                "last": encode(self.last, out),
                "points": encode(np.array(self.points) if self.points else None, out),
                "gradients": encode(np.array(self.gradients) if self.gradients else None, out)}


def stand_in(real, module, run, note):
    """A function in place of `real` (of the course's `module`) that the
    script calls as it would the real one: its name, signature and doc,
    `run` for its body. A call the grader does not take is a TypeError
    worded for the student: "data.load_mnist() takes no argument sklearn in
    the grader: <note>" (no name of the grader's own)."""
    import inspect
    signature = inspect.signature(real)

    @functools.wraps(real)
    def function(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{module}.{real.__name__}() {refused(signature, args, kwargs, e)} "
                            f"in the grader: {note}") from None
        return run(*bound.args, **bound.kwargs)
    return function


def refused(signature, args, kwargs, error):
    """Why signature does not take these arguments, in a few words."""
    unknown = [name for name in kwargs if name not in signature.parameters]
    if unknown:
        return f"takes no argument {', '.join(text(name, 60) for name in unknown[:5])}"
    positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                     for p in signature.parameters.values())
    if len(args) > positional:
        return (f"takes {positional or 'no'} positional argument{'' if positional == 1 else 's'}"
                f" ({len(args)} given)")
    return text(error, 200)


def watch_writes(written):
    """builtins.open and io.open in place, noting in `written` the files a
    write could not open because a folder on their path is missing."""
    import builtins
    import io
    import os
    original = io.open

    @functools.wraps(original)
    def open(file, mode="r", *args, **kwargs):
        try:
            return original(file, mode, *args, **kwargs)
        except FileNotFoundError:
            if isinstance(mode, str) and any(c in mode for c in "wax+") \
                    and isinstance(file, (str, bytes, os.PathLike)) and len(written) < 1000:
                written.add(os.path.normpath(os.fsdecode(file)))
            raise
    builtins.open = io.open = open


def missing_folder(e, written):
    """"trained_params/" if e is the failed write (watch_writes) of a relative
    path whose folder does not exist, else None."""
    import os
    filename = getattr(e, "filename", None) if isinstance(e, FileNotFoundError) else None
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return None
    name = os.path.normpath(os.fsdecode(filename))
    folder = os.path.dirname(name)
    if name not in written or os.path.isabs(name) or not folder or os.path.isdir(folder):
        return None
    return text(folder + "/", 200)


def run_script(path, request, arrays):
    """Runs the file as __main__ on the grader's data: `data.load_mnist()` (and
    `load_data()`) return the arrays sent, `save_images` records its calls
    instead of writing files, autograd's `flatten` remembers the flat vectors
    it makes, and the gradient functions of autograd's operators record their
    evaluations at the parameters (GradientTrace; request["trace"]: the
    coordinates to follow). -> (answer, arrays): the recorded calls, the
    gradient evaluations and the 1-D float arrays of `request["size"]`
    entries the script ends with."""
    import builtins
    import inspect
    import math
    import types

    import autograd
    import autograd.differential_operators
    import autograd.misc
    import numpy as np

    import data
    import plotting
    train_images, train_labels, test_images, test_labels = decode(request["data"], arrays)
    subset = (len(train_images), train_images, train_labels, test_images, test_labels)
    calls, flattened, size = [], [], request["size"]

    def record(images, filename, *args, **kwargs):
        given = signature.bind(images, filename, *args, **kwargs).arguments
        room = MAX_RECORDED - sum(kept.size for kept, _, _ in calls)
        kept = np.array(images, dtype=float)
        if kept.ndim >= 2:      # a batch of images (or one 28 x 28): whole rows, within room
            kept = kept[:min(MAX_IMAGES, room // max(1, kept[0].size))]
        if len(calls) < MAX_CALLS and 0 < kept.size <= room:
            calls.append((kept, text(filename, 200), {
                k: float(v) for k, v in given.items()
                if k in ("vmin", "vmax", "ims_per_row") and isinstance(v, (int, float))
                and math.isfinite(v)}))
    signature = inspect.signature(plotting.save_images)
    save_images = stand_in(plotting.save_images, "plotting", record,
                           f"its arguments are {text(signature, 300)}")

    original_flatten = autograd.misc.flatten
    indices = np.asarray(decode(request["trace"], arrays), dtype=np.int64)
    trace = GradientTrace(size, indices, original_flatten)

    @functools.wraps(original_flatten)
    def flatten(value):
        flat, unflatten = original_flatten(value)
        if np.size(flat) == size:
            flattened[1:] = [flat]           # the first and the last of the right size
        return flat, unflatten

    fake = types.ModuleType("data")
    fake.__dict__.update({k: v for k, v in vars(data).items() if not k.startswith("__")})
    given = "it returns the grader's subset of MNIST"
    fake.load_mnist = stand_in(data.load_mnist, "data", lambda: subset, given)
    fake.load_data = stand_in(data.load_data, "data", lambda data_dir=None: subset,
                              given + ", whatever data_dir is")
    fake.save_images = plotting.save_images = save_images
    sys.modules["data"] = fake
    autograd.misc.flatten = sys.modules["autograd.misc.flatten"].flatten = flatten
    for name, returns_value in GRADIENT_OPERATORS.items():
        operator = trace.operator(getattr(autograd.differential_operators, name), returns_value)
        setattr(autograd, name, operator)
        setattr(autograd.differential_operators, name, operator)
    sys.argv = [str(path)]
    script = {"__name__": "__main__", "__file__": str(path), "__builtins__": builtins}
    answer, written = {"ok": True}, set()
    watch_writes(written)
    try:
        exec(compile(path.read_text(), str(path), "exec"), script)
    except SystemExit as e:
        if e.code not in (None, 0):
            answer = {"ok": False, "error": error_info(e, path)}
    except BaseException as e:   # the student's: reported, and what was recorded still counts
        answer = {"ok": False, "error": error_info(e, path)}
        folder = missing_folder(e, written)
        if folder:
            answer["error"]["missing_folder"] = folder
    found = {text(name, 100): value for name, value in list(script.items())
             if isinstance(value, np.ndarray) and value.ndim == 1 and value.size == size
             and value.dtype.kind == "f"}
    found.update({f"(flattened {i})": flat for i, flat in enumerate(flattened)})
    out = []
    answer["candidates"] = {name: encode(np.array(value), out)
                            for name, value in list(found.items())[-8:]}
    answer["calls"] = [{"images": encode(images, out), "filename": filename,
                        "kwargs": kwargs} for images, filename, kwargs in calls]
    answer["gradients"] = trace.answer(out)
    return answer, out
