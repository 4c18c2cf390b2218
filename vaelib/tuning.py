"""Machine tuning: how the training loops use this CPU, never what they compute.

Importing this module before NumPy loads sets OPENBLAS_THREAD_TIMEOUT (unless
it is set already): OpenBLAS's idle threads then sleep at once instead of
spinning on the core that Adam and the log-likelihood share (docs/speed.md).
Everything else here is called: malloc's settings, the one worker thread, the
cores there are to share elementwise work, and denormal numbers flushed.
"""
import functools
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # read once, when NumPy loads


def flush_denormals(x):
    """Sets the entries of x below the smallest normal number to zero, in place.
    Adam's first moment decays by b1 per step into that range for weights whose
    gradient is almost always zero (pixels at the border), and arithmetic on
    denormal numbers takes a slow path in the CPU (SPEED-NOTES: 48x slower)."""
    import numpy as np
    x[np.abs(x) < np.finfo(x.dtype).tiny] = 0


def keep_freed_memory(mmap_below=2 ** 26, trim_above=2 ** 28):
    """Asks glibc's malloc to serve blocks under 64 MiB from its heap and to
    keep up to 256 MiB of freed heap, not give it back: a training step
    frees and allocates the same few arrays of 0.1 to 2 MB, and by default
    they are often fresh pages that the kernel must zero on first touch
    (about a fifth of a float32 step on two threads; docs/speed.md).
    The numbers are unchanged. Does nothing where there is no glibc."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-3, mmap_below)   # M_MMAP_THRESHOLD
        libc.mallopt(-1, trim_above)   # M_TRIM_THRESHOLD
    except (OSError, TypeError, AttributeError):
        pass


_worker = []


def worker():
    """One thread, shared, for work beside the main thread's (ThreadPoolExecutor)."""
    if not _worker:
        from concurrent.futures import ThreadPoolExecutor
        _worker.append(ThreadPoolExecutor(1, thread_name_prefix="fastgrad"))
    return _worker[0]


@functools.lru_cache(maxsize=None)
def cores():
    """How many cores this process may use for elementwise work: the BLAS
    thread setting if there is one (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS,
    MKL_NUM_THREADS: 1 keeps a run on one core), else the cores it may run on.
    Read once, as the BLAS library reads it once (cores.cache_clear() rereads)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(name, "").strip().isdigit():
            return max(1, int(os.environ[name]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
