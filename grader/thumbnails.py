"""The figures the pages show (grader/pages.py): for each figure check, the
images of the student's run its verdict is about, beside the same figure
made by the reference from the skeleton's run (grader/training.py
skeleton_run), as PNGs.

grade_script keeps them in the report as report["figures"]:
    {check: {"yours": (n, D) uint8 or None, "reference": (m, D) uint8 or None,
             "per_row": images per row}}
gray levels 0 to 255 of the Bernoulli means clipped to [0, 1] (NaN as 0):
a student's logits show as black and white. They are arrays, not JSON:
report.as_json and --json-dir leave them out; rubric.records turns them into
Record.images [{"label": "yours" | "reference", "png": bytes}].

Sizes are bounded by the figures: 25 prior samples, 10 originals and 10
reconstructions, at most five rows of 25 interpolation frames; a PNG has one
pixel per image pixel (the pages scale them) and a 1-pixel gap.
"""
import numpy as np

from vae import INTERPOLATION_PAIRS, INTERPOLATION_STEPS, NUM_PRIOR_SAMPLES, NUM_RECONSTRUCTIONS

PRIOR = "25 prior samples"
RECONSTRUCTIONS = "10 test images and their reconstructions"
INTERPOLATIONS = "five interpolations"
PER_ROW = {PRIOR: 5, RECONSTRUCTIONS: NUM_RECONSTRUCTIONS, INTERPOLATIONS: INTERPOLATION_STEPS}
MOST = {PRIOR: NUM_PRIOR_SAMPLES, RECONSTRUCTIONS: 2 * NUM_RECONSTRUCTIONS,
        INTERPOLATIONS: INTERPOLATION_STEPS * len(INTERPOLATION_PAIRS)}
REFERENCE_SEED = 0      # the reference's prior samples and posterior noise
GAP = 1                 # pixels between images in a PNG


def levels(images):
    """(n, D) values -> (n, D) uint8 gray levels of the values clipped to [0, 1]."""
    with np.errstate(all="ignore"):
        values = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=0.0)
        return np.round(255 * np.clip(values, 0, 1)).astype(np.uint8)


def reference_figures(gen_params, rec_params, test_images, reference):
    """{check: (n, D) gray levels} of the reference's figures with these
    networks, drawn as vae.write_figures draws them (prior samples, then the
    reconstructions' posterior noise) from RandomState(REFERENCE_SEED)."""
    from grader.figures import Model
    model = Model(gen_params, rec_params, test_images, reference)
    rs = np.random.RandomState(REFERENCE_SEED)
    prior = model.decode(rs.randn(NUM_PRIOR_SAMPLES, model.mean.shape[1]))
    z = model.mean + np.exp(model.log_std) * rs.randn(*model.mean.shape)
    return {PRIOR: levels(prior),
            RECONSTRUCTIONS: levels(np.concatenate([model.originals, model.decode(z)])),
            INTERPOLATIONS: levels(np.concatenate([model.interpolation(a, b)
                                                   for a, b in INTERPOLATION_PAIRS]))}


def kept(seen, reference):
    """report["figures"]: the student's judged images (figures.judge_figures's
    seen) and the reference's (reference_figures, or None), as gray levels."""
    reference = reference or {}
    out = {}
    for check, per_row in PER_ROW.items():
        yours = seen.get(check)
        theirs = reference.get(check)
        out[check] = {"yours": None if yours is None else levels(yours[:MOST[check]]),
                      "reference": theirs, "per_row": per_row}
    return out


def png(images, per_row):
    """A grid of (n, D) uint8 gray levels as PNG bytes: white 0, black 255."""
    import plotting
    return plotting.grid_png(np.asarray(images, dtype=np.float64) / 255, ims_per_row=per_row,
                             padding=GAP, vmin=0, vmax=1, pixels_per_cell=1)


_encoded = {}     # id(reference array) -> (the array, its PNG): the reference's, once


def pngs(figure):
    """Record.images of one report["figures"] entry (or None): [{"label", "png"}]."""
    if not figure:
        return []
    out = []
    for label in ("yours", "reference"):
        images = figure.get(label)
        if images is None or len(images) == 0:
            continue
        if label == "reference":
            cached = _encoded.get(id(images))
            if cached is None or cached[0] is not images:
                cached = _encoded[id(images)] = (images, png(images, figure["per_row"]))
            out.append({"label": label, "png": cached[1]})
        else:
            out.append({"label": label, "png": png(images, figure["per_row"])})
    return out
