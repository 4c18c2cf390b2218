"""The worker's side of check.py's second part: the submission runs as
__main__ on the grader's subset of MNIST, and what it trained and saved is
recorded for the grader to judge (grader/training.py, grader/figures.py)."""
import sys

from grader.protocol import encode
from grader.worker import error_info, text

MAX_CALLS = 100           # save_images calls recorded
MAX_IMAGES = 500          # images kept of one call


def run_script(path, request, arrays):
    """Runs the file as __main__ on the grader's data: `data.load_mnist()` (and
    `load_data()`) return the arrays sent, `save_images` records its calls
    instead of writing files, and autograd's `flatten` remembers the flat
    vectors it makes. -> (answer, arrays): the recorded calls and the 1-D
    float arrays of `request["size"]` entries the script ends with."""
    import builtins
    import math
    import types

    import autograd.misc
    import numpy as np

    import data
    import plotting
    from grader.protocol import decode
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
    found = {text(name, 100): value for name, value in list(script.items())
             if isinstance(value, np.ndarray) and value.ndim == 1 and value.size == size
             and value.dtype.kind == "f"}
    found.update({f"(flattened {i})": flat for i, flat in enumerate(flattened)})
    out = []
    answer["candidates"] = {name: encode(np.array(value), out)
                            for name, value in list(found.items())[-8:]}
    answer["calls"] = [{"images": encode(images, out), "filename": filename,
                        "kwargs": kwargs} for images, filename, kwargs in calls]
    return answer, out
