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
