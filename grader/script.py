"""The worker's side of check.py's second part: the submission runs as
__main__ on the grader's subset of MNIST, and what it trained and saved is
recorded for the grader to judge (grader/training.py, grader/figures.py)."""
import functools
import sys

from grader.protocol import decode, encode, error_info, text

MAX_CALLS = 100           # save_images calls recorded
MAX_IMAGES = 500          # images kept of one call
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

    def save_images(images, filename, **kwargs):
        if len(calls) < MAX_CALLS:
            calls.append((np.array(images, dtype=float)[:MAX_IMAGES], text(filename, 200), {
                k: float(v) for k, v in kwargs.items()
                if k in ("vmin", "vmax", "ims_per_row") and isinstance(v, (int, float))
                and math.isfinite(v)}))

    original_flatten = autograd.misc.flatten
    indices = np.asarray(decode(request["trace"], arrays), dtype=np.int64)
    trace = GradientTrace(size, indices, original_flatten)

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
    for name, returns_value in GRADIENT_OPERATORS.items():
        operator = trace.operator(getattr(autograd.differential_operators, name), returns_value)
        setattr(autograd, name, operator)
        setattr(autograd.differential_operators, name, operator)
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
