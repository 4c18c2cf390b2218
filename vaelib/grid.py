"""log p(x) = log integral p(x|z) p(z) dz for a 2-dimensional latent space, by
the midpoint rule on a grid whose box follows the posterior's mass: it starts
on [-6, 6]^2 and is widened per image (same spacing) until the box's outer
band holds less than GRID_BAND_TOLERANCE of the mass; converged means both
the spacing (half the points moves log p(x) by less than GRID_TOLERANCE) and
the extent. Also the posterior on the grid (its mean and covariance, a local
grid around it) and the ordering check against the importance-weighted
estimate. evaluate.py, conditional.py and posterior_gap.py use them.
"""
import numpy as np
from scipy.special import logsumexp

from vaelib import fastgrad
from vaelib.networks import cast_params

GRID_HALF_WIDTH = 6.0            # --exact: the grid starts on [-6, 6]^2 ...
GRID_POINTS = 601                # ... with spacing 12/601 = 0.02 (and a check at 0.04)
CONTOUR_POINTS = 120       # per side of each panel's local grid
GRID_ROWS = 1024                 # grid points per decoder pass
GRID_TOLERANCE = 0.01            # converged: halving the points moves log p(x) by less,
GRID_BAND = 1.0                  # and the box's outer band, this wide, holds less
GRID_BAND_TOLERANCE = 1e-3       # than this share of the posterior mass on the box;
GRID_MAX_HALF_WIDTH = 18.0       # else the box is widened, same spacing, up to [-18, 18]^2,
GRID_WIDENING = 2.0              # by this much on every side at a time
ORDERING_SES = 3                 # exact >= importance weighted - 3 of its standard errors


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
    gen_params = observed_decoder(cast_params(gen_params, np.float64), observed)
    binary = np.asarray(binary, dtype=np.float64)
    if observed is not None:
        binary = binary[:, observed]
    z = np.asarray(z, dtype=np.float64)
    logits = fastgrad.neural_net_predict(gen_params, z, activation)
    log_joint = binary @ logits.T - fastgrad.softplus(logits).sum(axis=1)
    log_joint += -0.5 * np.sum(z ** 2, axis=1) - 0.5 * z.shape[1] * np.log(2 * np.pi)
    return log_joint


def latent_grid(half_width=GRID_HALF_WIDTH, points=GRID_POINTS):
    """The cell midpoints of a square grid on [-half_width, half_width]^2 with
    points x points cells, as (points^2, 2) with z_1 varying slowest, and the
    log of a cell's area."""
    h = 2 * half_width / points
    axis = -half_width + h * (np.arange(points) + 0.5)
    return np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), 2 * np.log(h)


def ring_chunks(n, inner, h, band_cells, grid_rows=GRID_ROWS):
    """The cells of the centred n x n box of spacing h that lie outside its
    centred inner x inner box (n - inner even), in chunks of about grid_rows:
    yields (midpoints (G, 2), in the box's outer band of band_cells cells (G,) bool)."""
    side = (n - inner) // 2
    axis = (np.arange(n) - (n - 1) / 2) * h
    every, edges = np.arange(n), np.r_[0:side, side + inner:n]
    rows_per_chunk = max(1, round(grid_rows / n))
    for start in range(0, n, rows_per_chunk):
        i, j = [], []
        for row in range(start, min(n, start + rows_per_chunk)):
            cols = every if inner == 0 or not side <= row < side + inner else edges
            i.append(np.full(len(cols), row))
            j.append(cols)
        i, j = np.concatenate(i), np.concatenate(j)
        band = ((np.minimum(i, n - 1 - i) < band_cells)
                | (np.minimum(j, n - 1 - j) < band_cells))
        yield np.stack([axis[i], axis[j]], -1), band


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
    top, s0 = np.full(N, -np.inf), np.zeros(N)
    s1, s2 = np.zeros((N, 2)), np.zeros((N, 4))
    band_sum, cells = np.zeros(N), np.full(N, points)
    start_box = None
    todo, n, inner = np.arange(N), points, 0
    while True:
        x = binary if len(todo) == N else binary[todo]
        t_top, t_s0, t_s1, t_s2 = top[todo], s0[todo], s1[todo], s2[todo]
        t_band = np.zeros(len(todo))     # the new box's band: all in the new ring
        for z, band in ring_chunks(n, inner, h, band_cells, grid_rows):
            log_joint = log_joint_on_grid(gen_params, x, z, activation, observed)
            new_top = np.maximum(t_top, log_joint.max(axis=1))
            scale = np.exp(t_top - new_top)
            w = np.exp(log_joint - new_top[:, None])
            t_s0 = t_s0 * scale + w.sum(axis=1)
            t_band = t_band * scale + w[:, band].sum(axis=1)
            if moments:
                t_s1 = t_s1 * scale[:, None] + w @ z
                t_s2 = t_s2 * scale[:, None] + w @ (z[:, :, None] * z[:, None, :]).reshape(-1, 4)
            t_top = new_top
        top[todo], s0[todo], s1[todo], s2[todo] = t_top, t_s0, t_s1, t_s2
        band_sum[todo], cells[todo] = t_band, n
        log_total = top + np.log(s0)
        with np.errstate(divide="ignore"):
            log_band = np.log(band_sum) + top
        if start_box is None:
            start_box = log_total.copy()
        wide = log_band[todo] - log_total[todo] >= np.log(GRID_BAND_TOLERANCE)
        if not wide.any() or (n + 2 * step) * h / 2 > max_half_width * (1 + 1e-9):
            break
        todo, inner, n = todo[wide], n, n + 2 * step
    log_cell = 2 * np.log(h)
    out = {"log_px": log_total + log_cell, "log_px_start_box": start_box + log_cell,
           "half_width": cells * h / 2, "widened": cells > points,
           "log_band_fraction": log_band - log_total,
           "extent_converged": log_band - log_total < np.log(GRID_BAND_TOLERANCE)}
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
    fine["spacing_converged"] = np.abs(fine["log_px"] - coarse) < GRID_TOLERANCE
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
            "max_change_from_widening": float(np.max(np.abs(
                check["log_px"] - check["log_px_start_box"]))),
            "max_change_from_half_the_points": float(np.max(np.abs(
                check["log_px"] - check["half_points"]))),
            "max_band_fraction": float(np.exp(check["log_band_fraction"].max()))}


def local_posterior(gen_params, x_row, observed, mean, cov, activation, points=40, width=5):
    """p(z | x_observed) of one image on a points x points grid spanning
    mean +- width sds per axis (exact mean and covariance from grid_posterior).
    -> (z (points^2, 2), weights (points^2,) summing to 1)."""
    sd = np.sqrt(np.diag(cov))
    axes = [np.linspace(mean[i] - width * sd[i], mean[i] + width * sd[i], points)
            for i in range(2)]
    z = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    log_joint = log_joint_on_grid(gen_params, x_row[None], z, activation, observed)[0]
    return z, np.exp(log_joint - logsumexp(log_joint))


def ordering_check(exact, iw, iw_se, converged, ses=ORDERING_SES):
    """Per converged image, the exact log p(x) must not lie below the
    importance-weighted estimate (a stochastic lower bound) by more than ses
    of its standard errors. -> dict (JSON-ready) with the violating images."""
    bad = converged & (exact < iw - ses * np.nan_to_num(iw_se, nan=0.0))
    return {"rule": f"exact >= importance weighted - {ses} s.e., per converged image",
            "checked_images": int(converged.sum()), "violations": int(bad.sum()),
            "violating_images": np.flatnonzero(bad).tolist()[:20],
            "largest_shortfall_in_ses": float(np.max(((iw - exact) / iw_se)[bad]))
            if bad.any() else None}


def exact_summary(gen_params, binary, activation="relu"):
    """grid_check: log p(x) on the grid and with half the points, per image the
    final box and whether the grid converged (spacing and extent)."""
    check = grid_check(gen_params, binary, activation)
    return {**check, "grid": {**grid_settings(), **grid_facts(check)}}


def gaussian_density(z, mean, std):
    """Density of N(mean, diag(std^2)) at points z (G, 2) -> (G,)."""
    u = (z - mean) / std
    return np.exp(-0.5 * np.sum(u ** 2, axis=1)) / (2 * np.pi * np.prod(std))


def contour_panel(gen_params, x, observed, q, encoder_q, exact_mean, exact_cov, activation,
                  points=CONTOUR_POINTS):
    """Densities on a local grid around the three distributions of one image:
    -> (axis_1, axis_2, {name: density (points, points)}), as plotting wants them."""
    centres = [exact_mean, *(fastgrad.unpack_gaussian_params(g)[0] for g in (q, encoder_q))]
    spreads = [np.sqrt(np.diag(exact_cov)),
               *(np.exp(fastgrad.unpack_gaussian_params(g)[1]) for g in (q, encoder_q))]
    low = np.min([c - 4 * s for c, s in zip(centres, spreads)], axis=0)
    high = np.max([c + 4 * s for c, s in zip(centres, spreads)], axis=0)
    axes = [np.linspace(low[i], high[i], points) for i in range(2)]
    z = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    log_joint = log_joint_on_grid(gen_params, x[None], z, activation, observed)[0]
    cell = (axes[0][1] - axes[0][0]) * (axes[1][1] - axes[1][0])
    exact = np.exp(log_joint - logsumexp(log_joint)) / cell
    shape = (points, points)
    densities = {"exact p(z | x_observed)": exact.reshape(shape)}
    for name, g in (("fitted q(z)", q), ("encoder q(z | full x)", encoder_q)):
        mean, log_std = fastgrad.unpack_gaussian_params(g)
        densities[name] = gaussian_density(z, mean, np.exp(log_std)).reshape(shape)
    return axes[0], axes[1], densities
