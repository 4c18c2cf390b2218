"""How good is a trained VAE? Test log-likelihood and diagnostics of a checkpoint.

    python evaluate.py output/checkpoint.npz

reports, for the test set (or --split train, or the first --n images):

- the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)), with S posterior samples per
  image for the reconstruction term and the KL in closed form;
- log p(x), estimated by importance sampling with the encoder as proposal
  (Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", ICLR
  2016, Eq. 8): log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x). Its
  expectation rises with K towards log p(x) and never exceeds it (their
  Theorem 1); K = 1 is the ELBO with the KL sampled;
- per latent unit, the average KL and whether the unit is active: the variance
  over images of its posterior mean exceeds 0.01 (Burda et al., Sec. 5.2);
- for a 2-dimensional latent space (--exact), log p(x) by numerical
  integration over a grid, the number the importance-weighted estimate is
  meant to approach.

Units: nats per image, summed over the 784 pixels, averaged over images, with
one standard error over images. Every number says which binarisation of the
data it was measured on. Results go to the terminal and to a JSON file.
"""
import json
import sys
import time
from pathlib import Path

import numpy as onp
from scipy.special import logsumexp

import data
from vaelib import fastgrad
from vaelib import runs
from vaelib import checkpoints, training
from vaelib.networks import cast_params
import vae

IW_SAMPLES = 5000
ELBO_SAMPLES = 100
ACTIVE_UNIT_THRESHOLD = 1e-2     # Burda et al. 2016, Sec. 5.2
THRESHOLD = 0.5                  # --binarize threshold: pixel > 0.5
MAX_ROWS = 8192                  # decoder rows per chunk: about 50 MB in float64
IW_CURVE = (1, 10, 100, 1000)    # also report the estimate from the first k samples
GRID_HALF_WIDTH = 6.0            # --exact: the grid starts on [-6, 6]^2 ...
GRID_POINTS = 601                # ... with spacing 12/601 = 0.02 (and a check at 0.04)
GRID_ROWS = 1024                 # grid points per decoder pass
GRID_TOLERANCE = 0.01            # converged: halving the points moves log p(x) by less,
GRID_BAND = 1.0                  # and the box's outer band, this wide, holds less
GRID_BAND_TOLERANCE = 1e-3       # than this share of the posterior mass on the box;
GRID_MAX_HALF_WIDTH = 18.0       # else the box is widened, same spacing, up to [-18, 18]^2,
GRID_WIDENING = 2.0              # by this much on every side at a time
ORDERING_SES = 3                 # exact >= importance weighted - 3 of its standard errors


# ----------------------------------------------------------------------------
# The estimators
# ----------------------------------------------------------------------------

def log_mean_exp(a, axis=-1):
    """log mean exp(a) along an axis, in float64, without overflow."""
    a = onp.asarray(a, dtype=onp.float64)
    return logsumexp(a, axis=axis) - onp.log(a.shape[axis])


def log_weight_terms(gen_params, rec_params, x, eps, activation="relu"):
    """The two parts of the importance weights of images x given noise eps.

    x: (B, D) in {0, 1}; eps: (B, M, L) standard normal; z = mean + std * eps.
    -> log p(x|z): (B, M), and log p(z) - log q(z|x): (B, M), both float64.
    The log weight is their sum. With eps as the standardised sample,
    log q(z|x) = sum_j -eps_j^2 / 2 - log_std_j - log(2 pi) / 2, so
    log p(z) - log q(z|x) = sum_j (eps_j^2 - z_j^2) / 2 + log_std_j."""
    B, M, L = eps.shape
    q = fastgrad.neural_net_predict(rec_params, x, activation)
    z = fastgrad.reparameterize(onp.repeat(q, M, axis=0), eps.reshape(B * M, L))
    logits = fastgrad.neural_net_predict(gen_params, z, activation).reshape(B, M, -1)
    log_px_given_z = fastgrad.bernoulli_log_prob(x[:, None, :], logits)
    _, log_std = vae.unpack_gaussian_params(q)
    z = z.reshape(B, M, L)
    log_prior_ratio = onp.sum(0.5 * (eps ** 2 - z ** 2) + log_std[:, None, :], axis=-1)
    return log_px_given_z.astype(onp.float64), log_prior_ratio.astype(onp.float64)


def iw_standard_error(log_w):
    """The standard error of log (1/K) sum_k w_k per image, log_w (B, K) -> (B,),
    by the delta method: sd(w) / (sqrt(K) mean(w)); nan for K = 1."""
    if log_w.shape[1] < 2:
        return onp.full(len(log_w), onp.nan)
    w = onp.exp(log_w - log_w.max(axis=1, keepdims=True))
    return onp.std(w, axis=1, ddof=1) / (onp.sqrt(w.shape[1]) * onp.mean(w, axis=1))


def image_rngs(seed, indices):
    """One random generator per image, seeded by (seed, image index): an image
    gets the same samples whatever the chunking, --n or the other images."""
    return [onp.random.default_rng([seed, int(i)]) for i in indices]


def evaluate(gen_params, rec_params, binary, iw_samples=IW_SAMPLES,
             elbo_samples=ELBO_SAMPLES, seed=0, max_rows=MAX_ROWS, progress=False,
             activation="relu", estimate=False):
    """Per-image estimates for binary images (N, D).

    Every image draws M = max(K, S) posterior samples from its own generator;
    the importance-weighted estimate uses the first K, the ELBO's
    reconstruction term the first S. -> dict of arrays over the images:
    "log_px" (N,) and its standard error "log_px_se" (N,) (the delta method:
    sd of the K weights / (sqrt(K) x their mean)), "iw_curve" {k: (N,)} for k in IW_CURVE below K,
    "elbo", "log_px_given_z", "kl" (N,), "kl_per_unit" and "posterior_mean"
    (N, L), and "n_done": the number of images finished, fewer than N when
    interrupted (Ctrl-C or SIGTERM: "stopped_by" holds the KeyboardInterrupt,
    else None), in which case the arrays hold those images only. progress:
    a bar or progress lines; estimate: a line with the duration, measured
    after the first pass (runs.Progress)."""
    N, M = len(binary), max(iw_samples, elbo_samples)
    latent_dim = gen_params[0][0].shape[0]
    images_per_pass = max(1, max_rows // M)
    samples_per_pass = min(M, max_rows)
    curve = [k for k in IW_CURVE if k < iw_samples] + [iw_samples]
    out = {"log_px": onp.empty(N), "log_px_se": onp.empty(N), "iw_curve": {k: onp.empty(N) for k in curve},
           "elbo": onp.empty(N), "log_px_given_z": onp.empty(N), "kl": onp.empty(N),
           "kl_per_unit": onp.empty((N, latent_dim)),
           "posterior_mean": onp.empty((N, latent_dim))}
    done, stopped_by = 0, None
    bar = runs.Progress(N * M, "evaluate.py",
                        f"log p(x) of {N} image{'s' * (N != 1)}, K={iw_samples}",
                        unit="sample", bar=progress, estimate=estimate)
    try:
        for start in range(0, N, images_per_pass):
            x = binary[start:start + images_per_pass]
            rngs = image_rngs(seed, range(start, start + len(x)))
            log_px_given_z = onp.empty((len(x), M))
            log_w = onp.empty((len(x), M))
            for s in range(0, M, samples_per_pass):
                m = min(samples_per_pass, M - s)
                eps = onp.stack([rng.standard_normal((m, latent_dim)) for rng in rngs])
                terms = log_weight_terms(gen_params, rec_params, x, eps.astype(x.dtype),
                                         activation)
                log_px_given_z[:, s:s + m] = terms[0]
                log_w[:, s:s + m] = terms[0] + terms[1]
                bar.update(len(x) * m)
            mean, log_std = vae.unpack_gaussian_params(
                fastgrad.neural_net_predict(rec_params, x, activation))
            # KL per unit in closed form: compute_KL of each unit's (mean, log_std) pair.
            kl_per_unit = vae.compute_KL(onp.stack([mean, log_std], axis=-1))
            rows = slice(start, start + len(x))
            for k in curve:
                out["iw_curve"][k][rows] = log_mean_exp(log_w[:, :k])
            out["log_px"][rows] = out["iw_curve"][iw_samples][rows]
            out["log_px_se"][rows] = iw_standard_error(log_w[:, :iw_samples])
            out["log_px_given_z"][rows] = onp.mean(log_px_given_z[:, :elbo_samples], axis=1)
            out["kl_per_unit"][rows] = kl_per_unit
            out["kl"][rows] = onp.sum(kl_per_unit, axis=1)
            out["elbo"][rows] = out["log_px_given_z"][rows] - out["kl"][rows]
            out["posterior_mean"][rows] = mean
            done += len(x)
    except KeyboardInterrupt as e:
        stopped_by = e
    finally:
        bar.close()
    out = {key: ({k: v[:done] for k, v in value.items()} if key == "iw_curve" else value[:done])
           for key, value in out.items()}
    out["n_done"], out["stopped_by"] = done, stopped_by
    return out


def observed_decoder(gen_params, observed):
    """The decoder restricted to the observed pixels (a boolean mask (D,), or
    None for all): the last layer's columns of those pixels only."""
    if observed is None:
        return gen_params
    W, b = gen_params[-1]
    return list(gen_params[:-1]) + [(W[:, observed], b[observed])]


def log_joint_on_grid(gen_params, binary, z, activation="relu", observed=None):
    """log p(x_observed, z_g) = log p(x_observed | z_g) + log p(z_g) for
    images (N, D) and latent points z (G, L) -> (N, G), in float64. The
    decoder's outputs are shared by all images: log p(x|z_g) for every image
    and point is one matrix product, x @ logits.T minus the row sums of
    softplus(logits)."""
    gen_params = observed_decoder(cast_params(gen_params, onp.float64), observed)
    binary = onp.asarray(binary, dtype=onp.float64)
    if observed is not None:
        binary = binary[:, observed]
    z = onp.asarray(z, dtype=onp.float64)
    logits = fastgrad.neural_net_predict(gen_params, z, activation)
    log_joint = binary @ logits.T - fastgrad.softplus(logits).sum(axis=1)
    log_joint += -0.5 * onp.sum(z ** 2, axis=1) - 0.5 * z.shape[1] * onp.log(2 * onp.pi)
    return log_joint


def latent_grid(half_width=GRID_HALF_WIDTH, points=GRID_POINTS):
    """The cell midpoints of a square grid on [-half_width, half_width]^2 with
    points x points cells, as (points^2, 2) with z_1 varying slowest, and the
    log of a cell's area."""
    h = 2 * half_width / points
    axis = -half_width + h * (onp.arange(points) + 0.5)
    return onp.stack(onp.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), 2 * onp.log(h)


def ring_chunks(n, inner, h, band_cells, grid_rows=GRID_ROWS):
    """The cells of the centred n x n box of spacing h that lie outside its
    centred inner x inner box (n - inner even), in chunks of about grid_rows:
    yields (midpoints (G, 2), in the box's outer band of band_cells cells (G,) bool)."""
    side = (n - inner) // 2
    axis = (onp.arange(n) - (n - 1) / 2) * h
    every, edges = onp.arange(n), onp.r_[0:side, side + inner:n]
    rows_per_chunk = max(1, round(grid_rows / n))
    for start in range(0, n, rows_per_chunk):
        i, j = [], []
        for row in range(start, min(n, start + rows_per_chunk)):
            cols = every if inner == 0 or not side <= row < side + inner else edges
            i.append(onp.full(len(cols), row))
            j.append(cols)
        i, j = onp.concatenate(i), onp.concatenate(j)
        band = ((onp.minimum(i, n - 1 - i) < band_cells)
                | (onp.minimum(j, n - 1 - j) < band_cells))
        yield onp.stack([axis[i], axis[j]], -1), band


def grid_integral(gen_params, binary, half_width=GRID_HALF_WIDTH, points=GRID_POINTS,
                  grid_rows=GRID_ROWS, activation="relu", observed=None,
                  max_half_width=GRID_MAX_HALF_WIDTH, moments=False):
    """log p(x) = log integral p(x|z) p(z) dz for a 2-dimensional latent space,
    by the midpoint rule in float64, on a square box that follows the mass.
    The box starts as [-half_width, half_width]^2 with points x points cells of
    spacing h = 2 half_width / points. While the box's outer band (the cells
    within GRID_BAND of its edge) holds GRID_BAND_TOLERANCE or more of an
    image's posterior mass on the box, that image's box is widened by
    GRID_WIDENING on every side (a whole number of cells, same spacing; only
    the new ring is computed), up to max_half_width. binary: (N, D); with a boolean pixel mask
    `observed` (D,), log p(x_observed) (the other pixels summed out). The
    decoder runs once per chunk of grid_rows points for all images still
    being widened. -> dict of per-image arrays: "log_px", "log_px_start_box"
    (on the starting box), "half_width" (of the final box), "log_band_fraction"
    (log of the band's share of the mass), "extent_converged" (the share is
    below the tolerance), and with moments the posterior's "mean" (N, 2) and
    "cov" (N, 2, 2) on the final box."""
    if gen_params[0][0].shape[0] != 2:
        raise ValueError("exact_log_px integrates over a 2-dimensional latent space; "
                         f"this decoder takes {gen_params[0][0].shape[0]}")
    N, h = len(binary), 2 * half_width / points
    step = max(1, int(round(GRID_WIDENING / h)))
    band_cells = min(step, max(1, int(round(GRID_BAND / h))))
    top, s0 = onp.full(N, -onp.inf), onp.zeros(N)
    s1, s2 = onp.zeros((N, 2)), onp.zeros((N, 4))
    band_sum, cells = onp.zeros(N), onp.full(N, points)
    start_box = None
    todo, n, inner = onp.arange(N), points, 0
    while True:
        x = binary if len(todo) == N else binary[todo]
        t_top, t_s0, t_s1, t_s2 = top[todo], s0[todo], s1[todo], s2[todo]
        t_band = onp.zeros(len(todo))     # the new box's band: all in the new ring
        for z, band in ring_chunks(n, inner, h, band_cells, grid_rows):
            log_joint = log_joint_on_grid(gen_params, x, z, activation, observed)
            new_top = onp.maximum(t_top, log_joint.max(axis=1))
            scale = onp.exp(t_top - new_top)
            w = onp.exp(log_joint - new_top[:, None])
            t_s0 = t_s0 * scale + w.sum(axis=1)
            t_band = t_band * scale + w[:, band].sum(axis=1)
            if moments:
                t_s1 = t_s1 * scale[:, None] + w @ z
                t_s2 = t_s2 * scale[:, None] + w @ (z[:, :, None] * z[:, None, :]).reshape(-1, 4)
            t_top = new_top
        top[todo], s0[todo], s1[todo], s2[todo] = t_top, t_s0, t_s1, t_s2
        band_sum[todo], cells[todo] = t_band, n
        log_total = top + onp.log(s0)
        with onp.errstate(divide="ignore"):
            log_band = onp.log(band_sum) + top
        if start_box is None:
            start_box = log_total.copy()
        wide = log_band[todo] - log_total[todo] >= onp.log(GRID_BAND_TOLERANCE)
        if not wide.any() or (n + 2 * step) * h / 2 > max_half_width * (1 + 1e-9):
            break
        todo, inner, n = todo[wide], n, n + 2 * step
    log_cell = 2 * onp.log(h)
    out = {"log_px": log_total + log_cell, "log_px_start_box": start_box + log_cell,
           "half_width": cells * h / 2, "widened": cells > points,
           "log_band_fraction": log_band - log_total,
           "extent_converged": log_band - log_total < onp.log(GRID_BAND_TOLERANCE)}
    if moments:
        out["mean"] = s1 / s0[:, None]
        out["cov"] = ((s2 / s0[:, None]).reshape(-1, 2, 2)
                      - out["mean"][:, :, None] * out["mean"][:, None, :])
    return out


def exact_log_px(gen_params, binary, half_width=GRID_HALF_WIDTH, points=GRID_POINTS,
                 grid_rows=GRID_ROWS, activation="relu", observed=None,
                 max_half_width=GRID_MAX_HALF_WIDTH):
    """log p(x) (N,) by grid_integral: the midpoint rule on a box that starts
    at [-half_width, half_width]^2 with points x points cells and is widened,
    per image, until its outer band holds a negligible share of the mass."""
    return grid_integral(gen_params, binary, half_width, points, grid_rows, activation,
                         observed, max_half_width)["log_px"]


def grid_posterior(gen_params, x, observed=None, activation="relu",
                   half_width=GRID_HALF_WIDTH, points=GRID_POINTS,
                   grid_rows=GRID_ROWS, max_half_width=GRID_MAX_HALF_WIDTH):
    """On exact_log_px's grid: log p(x_observed) (N,), and the mean (N, 2) and
    covariance (N, 2, 2) of p(z | x_observed) (conditional.py), accumulated
    chunk by chunk with a running maximum so nothing overflows."""
    out = grid_integral(gen_params, x, half_width, points, grid_rows, activation, observed,
                        max_half_width, moments=True)
    return out["log_px"], out["mean"], out["cov"]


def grid_check(gen_params, binary, activation="relu", observed=None, points=GRID_POINTS,
               half_width=GRID_HALF_WIDTH, max_half_width=GRID_MAX_HALF_WIDTH, moments=False):
    """grid_integral with points and with half the points, and per image
    whether the value has converged in both senses: the spacing (halving the
    points moves log p(x) by less than GRID_TOLERANCE) and the extent (the
    final box's outer band holds less than GRID_BAND_TOLERANCE of the mass).
    -> grid_integral's dict plus "half_points" (N,), "spacing_converged",
    "converged" (N,) bool (and the posterior's "mean" and "cov" with moments)."""
    fine = grid_integral(gen_params, binary, half_width, points, activation=activation,
                         observed=observed, max_half_width=max_half_width, moments=moments)
    coarse = exact_log_px(gen_params, binary, half_width, points // 2, activation=activation,
                          observed=observed, max_half_width=max_half_width)
    fine["half_points"] = coarse
    fine["spacing_converged"] = onp.abs(fine["log_px"] - coarse) < GRID_TOLERANCE
    fine["converged"] = fine["spacing_converged"] & fine["extent_converged"]
    return fine


def grid_settings(points=GRID_POINTS, half_width=GRID_HALF_WIDTH):
    """The grid's fixed settings, as the reports record them."""
    return {"start_half_width": half_width, "points": points,
            "spacing": 2 * half_width / points, "max_half_width": GRID_MAX_HALF_WIDTH,
            "widening_step": max(1, int(round(GRID_WIDENING * points / (2 * half_width))))
                             * 2 * half_width / points,
            "band_width": GRID_BAND, "band_tolerance": GRID_BAND_TOLERANCE,
            "tolerance": GRID_TOLERANCE}


def grid_facts(check):
    """What a grid_check found, over its images (JSON-ready)."""
    widened = check["widened"]
    return {"converged_images": int(check["converged"].sum()),
            "spacing_not_converged_images": int((~check["spacing_converged"]).sum()),
            "extent_not_converged_images": int((~check["extent_converged"]).sum()),
            "widened_images": int(widened.sum()),
            "largest_half_width": float(check["half_width"].max()),
            "max_change_from_widening": float(onp.max(onp.abs(
                check["log_px"] - check["log_px_start_box"]))),
            "max_change_from_half_the_points": float(onp.max(onp.abs(
                check["log_px"] - check["half_points"]))),
            "max_band_fraction": float(onp.exp(check["log_band_fraction"].max()))}


def local_posterior(gen_params, x_row, observed, mean, cov, activation, points=40, width=5):
    """p(z | x_observed) of one image on a points x points grid spanning
    mean +- width sds per axis (exact mean and covariance from grid_posterior).
    -> (z (points^2, 2), weights (points^2,) summing to 1)."""
    sd = onp.sqrt(onp.diag(cov))
    axes = [onp.linspace(mean[i] - width * sd[i], mean[i] + width * sd[i], points)
            for i in range(2)]
    z = onp.stack(onp.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    log_joint = log_joint_on_grid(gen_params, x_row[None], z, activation, observed)[0]
    return z, onp.exp(log_joint - logsumexp(log_joint))


# ----------------------------------------------------------------------------
# From per-image numbers to a report
# ----------------------------------------------------------------------------

def mean_and_se(values):
    """(mean, standard error of the mean) over images; the error is nan for one image."""
    values = onp.asarray(values, dtype=onp.float64)
    se = onp.std(values, ddof=1) / onp.sqrt(len(values)) if len(values) > 1 else onp.nan
    return float(onp.mean(values)), float(se)


def entry(values):
    """{"mean", "se"} over images, as the reports write them."""
    mean, se = mean_and_se(values)
    return {"mean": mean, "se": se}


def active_units(posterior_mean, threshold=ACTIVE_UNIT_THRESHOLD):
    """Burda et al. 2016, Sec. 5.2: unit u is active if Cov_x(E_q[z_u | x]) > threshold.
    posterior_mean: (N, L) -> (variance over images (L,), active (L,) bool)."""
    variance = onp.var(posterior_mean, axis=0)
    return variance, variance > threshold


def summarize(per_image, exact=None):
    """The report's numbers: means and standard errors over images."""
    variance, active = active_units(per_image["posterior_mean"])
    kl_per_unit = onp.mean(per_image["kl_per_unit"], axis=0)
    summary = {
        "elbo": entry(per_image["elbo"]),
        "log_px_given_z": entry(per_image["log_px_given_z"]),
        "kl": entry(per_image["kl"]),
        "log_px": entry(per_image["log_px"]),
        "gap_log_px_minus_elbo": entry(per_image["log_px"] - per_image["elbo"]),
        "iw_curve": {str(k): entry(v) for k, v in per_image["iw_curve"].items()},
        "active_units": int(onp.sum(active)),
        "latent_dim": len(active),
        "units": [{"unit": u, "kl": float(kl_per_unit[u]),
                   "posterior_mean_variance": float(variance[u]), "active": bool(active[u])}
                  for u in range(len(active))],
    }
    if exact is not None:
        converged = exact["converged"]
        # "exact" only where the grid converged (spacing and extent); else "grid".
        summary["exact_log_px" if converged.all() else "grid_log_px"] = entry(exact["log_px"])
        summary["exact_grid"] = exact["grid"]
        summary["exact_minus_iw"] = entry(exact["log_px"] - per_image["log_px"])
        summary["exact_converged_images"] = int(onp.sum(converged))
        summary["exact_not_converged_image_indices"] = onp.flatnonzero(~converged).tolist()
        if onp.any(converged):
            summary["exact_minus_iw_converged_images"] = entry(
                exact["log_px"][converged] - per_image["log_px"][converged])
        summary["ordering"] = ordering_check(exact["log_px"], per_image["log_px"],
                                             per_image["log_px_se"], converged)
    return summary


def ordering_check(exact, iw, iw_se, converged, ses=ORDERING_SES):
    """Per converged image, the exact log p(x) must not lie below the
    importance-weighted estimate (a stochastic lower bound) by more than ses
    of its standard errors. -> dict (JSON-ready) with the violating images."""
    bad = converged & (exact < iw - ses * onp.nan_to_num(iw_se, nan=0.0))
    return {"rule": f"exact >= importance weighted - {ses} s.e., per converged image",
            "checked_images": int(converged.sum()), "violations": int(bad.sum()),
            "violating_images": onp.flatnonzero(bad).tolist()[:20],
            "largest_shortfall_in_ses": float(onp.max(((iw - exact) / iw_se)[bad]))
            if bad.any() else None}


def binarize_split(images, how):
    """'sample': x > uniform noise drawn once from RandomState(TEST_BINARIZATION_SEED),
    as vae.py binarises its test set; 'threshold': x > 0.5.
    -> (binary images, a sentence that says which)."""
    if how == "threshold":
        return ((images > THRESHOLD).astype(onp.float64),
                f"thresholded: x > {THRESHOLD}")
    return training.binarize_once(images), training.TEST_BINARIZATION


def exact_lines(s, n, K, row):
    """format_report's lines about the grid: 'exact' only if every image converged."""
    g, o = s["exact_grid"], s["ordering"]
    bad = n - s["exact_converged_images"]
    if bad == 0:
        lines = [row(f"log p(x), exact (grid, spacing {g['spacing']:.2g})", s["exact_log_px"]),
                 row(f"  exact - importance weighted (K={K})", s["exact_minus_iw"])]
    else:
        lines = [row(f"log p(x), grid: NOT exact, {bad} images not converged",
                     s["grid_log_px"]),
                 row(f"  grid - importance weighted (K={K})", s["exact_minus_iw"])]
    lines.append(
        f"  The grid converged for {s['exact_converged_images']} of {n} images: halving its "
        f"points moves log p(x) by less than {g['tolerance']:g} (fails for "
        f"{g['spacing_not_converged_images']}) and its outer band, {g['band_width']:g} wide, "
        f"holds less than {g['band_tolerance']:g} of the mass (fails for "
        f"{g['extent_not_converged_images']})")
    box = f"[-{g['start_half_width']:g}, {g['start_half_width']:g}]^2"
    lines.append(f"  The box {box} needed no widening" if not g["widened_images"] else
                 f"  The box {box} was widened (same spacing) for {g['widened_images']} images, "
                 f"to at most [-{g['largest_half_width']:.3g}, {g['largest_half_width']:.3g}]^2, "
                 f"moving log p(x) by up to {g['max_change_from_widening']:.3g}")
    if bad:
        shown = s["exact_not_converged_image_indices"]
        lines.append(f"  Not converged: images {', '.join(map(str, shown[:10]))}"
                     + (", ..." if len(shown) > 10 else "")
                     + "; their grid values are approximations, not exact")
    if "exact_minus_iw_converged_images" in s:
        lines.append(row("  exact - importance weighted, converged",
                         s["exact_minus_iw_converged_images"]))
    if o["violations"]:
        lines.append(f"PROBLEM: exact < importance weighted - {ORDERING_SES} s.e. for "
                     f"{o['violations']} of {o['checked_images']} converged images (images "
                     f"{', '.join(map(str, o['violating_images'][:10]))}; up to "
                     f"{o['largest_shortfall_in_ses']:.1f} s.e.): the estimate is a lower "
                     "bound in expectation, so either the grid is wrong there or the estimate's "
                     "s.e. understates its heavy-tailed weights (by chance alone, were the "
                     f"estimates normal: {0.00135 * o['checked_images']:.1f} images)")
    else:
        lines.append(f"  Ordering: exact >= importance weighted - {ORDERING_SES} s.e. for all "
                     f"{o['checked_images']} converged images")
    return lines


def format_report(report):
    """The terminal table."""
    s, c = report["summary"], report["checkpoint"]
    K, S = report["iw_samples"], report["elbo_samples"]

    def row(name, entry, sign=1):
        return f"  {name:<44}{sign * entry['mean']:>10.2f}{entry['se']:>9.2f}"

    lines = [
        f"{c['path']}: epoch {c['epochs_trained']}, latent_dim {c['latent_dim']}, "
        f"{c['hidden_layers']} hidden layers of {c['hidden_units']} "
        f"{c['config'].get('activation', 'relu')} units, trained in {c['dtype']}",
        f"{report['split'].capitalize()} set: {report['n']} images"
        + (f" (first {report['n']} of {report['n_split']})" if report['n'] < report['n_split'] else "")
        + f"; binarisation: {report['binarization']}",
        "Nats per image (summed over pixels, averaged over images); +- one standard "
        "error over images.",
        f"  {'':<44}{'estimate':>10}{'s.e.':>9}",
        row(f"ELBO ({S} posterior samples per image)", s["elbo"]),
        row("  reconstruction E_q[log p(x|z)]", s["log_px_given_z"]),
        row("  KL(q(z|x) || p(z)), closed form", s["kl"]),
        row(f"log p(x), importance weighted, K={K}", s["log_px"]),
        row("  gap log p(x) - ELBO", s["gap_log_px_minus_elbo"]),
        row("negative log-likelihood -log p(x)", s["log_px"], -1),
    ]
    if "exact_grid" in s:
        lines += exact_lines(s, report["n"], K, row)
    curve = ", ".join(f"K={k}: {v['mean']:.2f}" for k, v in s["iw_curve"].items())
    lines.append(f"Importance-weighted estimate with the first K samples: {curve}")
    active = [u for u in s["units"] if u["active"]]
    inactive_kl = sum(u["kl"] for u in s["units"] if not u["active"])
    lines.append(f"Active units (variance over images of the posterior mean > "
                 f"{ACTIVE_UNIT_THRESHOLD}): {s['active_units']} of {s['latent_dim']}; "
                 f"the inactive ones carry {inactive_kl:.3f} nats of KL")
    lines.append(f"  {'unit':>6}{'KL':>9}{'Var[mean]':>11}")
    for u in sorted(active, key=lambda u: -u["kl"]):
        lines.append(f"  {u['unit']:>6}{u['kl']:>9.2f}{u['posterior_mean_variance']:>11.3f}")
    if report["status"] != "complete":
        how = "TERMINATED (SIGTERM)" if report["status"] == "terminated" else "INTERRUPTED"
        lines.append(f"{how}: these numbers cover the first {report['n']} images only"
                     if report["n"] < report["n_selected"] else
                     f"{how} during the grid integration: no exact log p(x)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

def parse_args(argv=None):
    parser = runs.OneLineErrorParser(
        description="Estimate the test log-likelihood of a VAE checkpoint written by "
                    "vae.py by importance sampling, with the ELBO and per-unit diagnostics.")
    add = parser.add_argument
    add("checkpoint", type=runs.existing_file, help="checkpoint.npz written by vae.py")
    add("--split", choices=("test", "train"), default="test", help="which images")
    add("--n", type=runs.positive_int, default=None, metavar="N",
        help="evaluate only the first N images of the split (default: all)")
    add("--iw-samples", type=runs.positive_int, default=IW_SAMPLES, metavar="K",
        help="importance samples per image for log p(x)")
    add("--elbo-samples", type=runs.positive_int, default=ELBO_SAMPLES, metavar="S",
        help="posterior samples per image for the ELBO's reconstruction term")
    add("--binarize", choices=("sample", "threshold"), default="sample",
        help="sample: x > uniform noise drawn once with a fixed seed, as vae.py's "
             f"test set; threshold: x > {THRESHOLD}")
    add("--seed", type=runs.seed_int, default=0,
        help="seed of the posterior samples (image i uses default_rng([seed, i]))")
    add("--exact", action="store_true",
        help="2-dimensional latent space only: also compute log p(x) by integration "
             f"over a {GRID_POINTS}x{GRID_POINTS} grid on [-{GRID_HALF_WIDTH:g}, "
             f"{GRID_HALF_WIDTH:g}]^2, widened per image (same spacing, up to "
             f"[-{GRID_MAX_HALF_WIDTH:g}, {GRID_MAX_HALF_WIDTH:g}]^2) until its outer band holds "
             "a negligible share of the posterior mass")
    add("--data-dir", type=runs.existing_dir, default=None, metavar="DIR",
        help="MNIST-format folder (default: the one the checkpoint was trained on)")
    add("--json", type=runs.output_file, default=None, metavar="PATH",
        help="where to write the report (default: evaluation_<split>_<binarize>.json "
             "beside the checkpoint, or ..._n<N>.json for the first N images only); "
             "the per-image estimates go beside it as .npz; its folder must exist")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def report_path(args, n, n_split):
    """--json, or the default name beside the checkpoint: a partial evaluation
    (fewer images than the split, by --n or Ctrl-C) gets a name of its own."""
    if args.json is not None:
        return args.json
    partial = "" if n == n_split else f"_n{n}"
    return args.checkpoint.parent / f"evaluation_{args.split}_{args.binarize}{partial}.json"


def holds_complete_report(path):
    """Whether path is a report of every image of its split."""
    try:
        report = json.loads(Path(path).read_text())
        return report["status"] == "complete" and report["n"] == report["n_split"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def exact_summary(gen_params, binary, activation="relu"):
    """grid_check: log p(x) on the grid and with half the points, per image the
    final box and whether the grid converged (spacing and extent)."""
    check = grid_check(gen_params, binary, activation)
    return {**check, "grid": {**grid_settings(), **grid_facts(check)}}


def write_report(path, report, per_image, exact):
    """The JSON report and the per-image estimates beside it (.npz), atomically."""
    arrays = {key: per_image[key] for key in ("log_px", "log_px_se", "elbo", "log_px_given_z",
                                              "kl")}
    arrays.update({f"log_px_K{k}": v for k, v in per_image["iw_curve"].items()})
    if exact is not None:
        arrays["exact_log_px"] = exact["log_px"]
        arrays["exact_log_px_half_points"] = exact["half_points"]
        arrays["exact_converged"] = exact["converged"]
        arrays["exact_half_width"] = exact["half_width"]
        arrays["exact_log_band_fraction"] = exact["log_band_fraction"]
    runs.atomic_write(path.with_suffix(".npz"), lambda f: onp.savez(f, **arrays))
    runs.write_json(path, report)


def evaluation_memory(iw_samples, elbo_samples, config, max_rows=MAX_ROWS):
    """Bytes, roughly, that evaluate() holds at once: two float64 numbers per
    sample of the images of one pass, and a pass of max_rows rows through the
    encoder and decoder (input, activations and output, a few copies each)."""
    samples = max(iw_samples, elbo_samples)
    images_per_pass = max(1, max_rows // samples)
    widths = data.DATA_DIM + config["hidden_layers"] * config["hidden_units"] + config["latent_dim"]
    return 8 * (2 * images_per_pass * samples + 4 * min(samples, max_rows) * images_per_pass * widths)


def run(args):
    """Evaluates per args, prints the table, then writes the JSON. -> exit code."""
    wall_start = time.perf_counter()
    gen_params, rec_params, config, history, note = checkpoints.read_model(args.checkpoint)
    if note:   # a run is training into its folder: said first
        print(note, flush=True)
    latent_dim = config["latent_dim"]
    if args.exact and latent_dim != 2:
        raise runs.RunError(f"--exact needs a 2-dimensional latent space; {args.checkpoint} "
                            f"has latent_dim {latent_dim}", exit_code=2)
    data_dir = args.data_dir or config["data_dir"]
    _, train_images, _, test_images, _ = data.load_data(data_dir and Path(data_dir))
    images = test_images if args.split == "test" else train_images
    if args.n is not None and args.n > len(images):
        raise runs.RunError(f"--n {args.n} but the {args.split} set has {len(images)} images",
                            exit_code=2)
    n_selected = min(args.n or len(images), len(images))
    path = report_path(args, n_selected, len(images))
    if path.suffix == ".npz":
        raise runs.RunError(f"--json {path}: the per-image estimates go to the same name with "
                            ".npz; name the report .json", exit_code=2)
    for written in (path, path.with_suffix(".npz")):
        runs.check_output_file(written, "--json" if args.json else None)
    runs.check_writable(path.parent, what="the report's folder")
    runs.check_memory(evaluation_memory(args.iw_samples, args.elbo_samples, config),
                      f"--iw-samples {args.iw_samples} with --elbo-samples {args.elbo_samples}",
                      "choose a smaller --iw-samples")
    binary, binarization = binarize_split(images, args.binarize)
    binary = binary[:args.n]
    # Float64 throughout: the weights of a float32-trained model are cast up.
    gen_params = cast_params(gen_params, onp.float64)
    rec_params = cast_params(rec_params, onp.float64)
    with runs.sigterm_as_interrupt():
        per_image = evaluate(gen_params, rec_params, binary, args.iw_samples,
                             args.elbo_samples, args.seed, progress=not args.no_progress,
                             activation=config["activation"], estimate=True)
        n, stopped_by, exact = per_image["n_done"], per_image["stopped_by"], None
        if args.exact and stopped_by is None:
            try:
                exact = exact_summary(gen_params, binary, config["activation"])
            except KeyboardInterrupt as e:
                stopped_by = e
    status, code = runs.interruption(stopped_by) if stopped_by else ("complete", 0)
    if n == 0:
        print(f"{status.capitalize()} before the first image was done; nothing to report",
              file=sys.stderr)
        return code
    report = {
        "status": status,
        "checkpoint": {"path": str(args.checkpoint), "epochs_trained": len(history),
                       **{key: config[key] for key in ("latent_dim", "hidden_units",
                                                       "hidden_layers", "activation",
                                                       "dtype", "seed")},
                       "config": config},
        "split": args.split, "n": n, "n_split": len(images), "n_selected": len(binary),
        "binarization": binarization,
        "iw_samples": args.iw_samples, "elbo_samples": args.elbo_samples,
        "seed": args.seed,
        "units": "nats per image, summed over pixels, averaged over images; "
                 "se: standard error of the mean over images",
        "summary": summarize(per_image, exact),
        "wall_seconds": time.perf_counter() - wall_start,
        "versions": runs.library_versions(),
    }
    if note:   # the report's first key, as it was the first line printed
        report = {"note": note, **report}
    print(format_report(report), flush=True)
    path = report_path(args, n, len(images))
    if (n < len(images) or status != "complete") and holds_complete_report(path):
        print(f"Not written: {path} holds an evaluation of all {len(images)} images, and a "
              f"partial one never replaces it; pass another --json to keep this one",
              file=sys.stderr)
        return code or 1
    try:
        write_report(path, report, per_image, exact)
    except OSError as e:
        print(f"evaluate.py: error: could not write {path}: {e.strerror or e} (the report "
              "above is complete)", file=sys.stderr)
        return 1
    print(f"Wrote {path} and the per-image estimates to {path.with_suffix('.npz')} "
          f"({report['wall_seconds']:.0f} s)")
    return code


def main(argv=None):
    """Entry point of `python evaluate.py`: returns the exit code."""
    args = parse_args(argv)
    return runs.run_main("evaluate.py", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
