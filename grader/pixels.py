"""Pixels and logits as the figure checks compare them (grader/figures.py,
grader/prior.py): images are the same to float32 round-off, and Bernoulli
means are compared as logits, logit(p) with p clipped to [1e-6, 1 - 1e-6]
(|logit| <= 13.8)."""
import numpy as np

SAME = 1e-6            # atol: the same image up to float32 round-off (float32 eps 6e-8)
PIXEL_CLIP = 1e-6      # pixels clipped to [1e-6, 1 - 1e-6] before the logit
LOGIT_CLIP = float(np.log1p(-PIXEL_CLIP) - np.log(PIXEL_CLIP))   # 13.8, its logit


def same(images, expected):
    """True if the two arrays have one shape and agree within SAME everywhere."""
    return images.shape == expected.shape and bool(np.max(np.abs(images - expected)) <= SAME)


def logits(pixels):
    p = np.clip(pixels, PIXEL_CLIP, 1 - PIXEL_CLIP)
    return np.log(p) - np.log1p(-p)


def logit_distance(a, b):
    """Mean |logit(a) - logit(b)| over pixels: (..., D), (..., D) -> (...)."""
    return np.mean(np.abs(logits(a) - logits(b)), axis=-1)


# Frames of an interpolation are close to their neighbours: the median
# distance between consecutive frames over the mean distance between any two
# is at most 0.14 for lines between encoder means, 0.26 for lines between
# posterior or prior samples, and at least 0.36 for independent prior samples
# (1200 draws each, three training lengths). Such a call is not prior samples.
SMOOTH_PATH = 0.3


def in_unit_interval(images):
    return bool(np.all((images >= 0) & (images <= 1)))   # False for NaN too


def binary(images):
    return bool(np.all((images == 0) | (images == 1)))


def mean_distance(images):
    """Mean pixel distance between all pairs of images: (n, D) -> scalar."""
    n = len(images)
    return np.sum(np.abs(images[:, None] - images[None]).mean(-1)) / (n * (n - 1))


def smooth_path(images):
    """True if consecutive images are much closer than images on average:
    the frames of an interpolation, not independent samples."""
    average = mean_distance(images) if len(images) > 2 else 0.0
    if not average > 0:
        return False
    step = np.median(np.mean(np.abs(np.diff(images, axis=0)), axis=-1))
    return bool(step / average < SMOOTH_PATH)


def sigmoid(values):
    """Bernoulli means of logits, 0.5 (1 + tanh(x / 2)): no overflow for large |x|."""
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(values, dtype=np.float64)))


def shown_as_logits(images):
    """True if the images are finite and not all in [0, 1]: perhaps logits."""
    return bool(np.all(np.isfinite(images))) and not in_unit_interval(images)
