"""Conditional completion: the model seen through a mask of observed pixels,
stochastic variational inference of q(z | x_observed) for each image (Adam
on the per-image bound, all images at once), and the predictive of the
missing pixels it implies (its log-likelihood, its pixel correlations).
conditional.py runs it and judges it against the grid's exact answers.
"""
import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from scipy.special import logsumexp

from plotting import IMAGE_SIDE, bernoulli_means
from vaelib import fastgrad, runs
from vaelib.grid import observed_decoder

IMAGES_PER_PASS = 10       # images whose K predictive samples are decoded together
UNCERTAIN = (0.05, 0.95)   # correlations between missing pixels whose mean lies inside


def observed_pixels(mask):
    """Boolean (D,): the pixels of the named half ("top", "bottom", "left",
    "right") of a flattened IMAGE_SIDE x IMAGE_SIDE image."""
    rows, cols = np.indices((IMAGE_SIDE, IMAGE_SIDE))
    half = IMAGE_SIDE // 2
    return {"top": rows < half, "bottom": rows >= half,
            "left": cols < half, "right": cols >= half}[mask].reshape(-1)


def log_px_observed(gen_params, x, observed, z, activation="relu"):
    """log p(x_observed | z): x (N, D), z (S, N, L) -> (S, N). Only the observed
    pixels' logits are computed (observed_decoder), so a missing
    pixel cannot enter."""
    S, N, L = z.shape
    logits = fastgrad.neural_net_predict(observed_decoder(gen_params, observed),
                                         anp.reshape(z, (S * N, L)), activation)
    targets = np.broadcast_to(x[:, observed], (S, N, int(observed.sum())))
    return anp.reshape(fastgrad.bernoulli_log_prob(targets.reshape(S * N, -1), logits), (S, N))


def svi_objective(q_means_and_log_stds, gen_params, x, observed, eps, activation="relu"):
    """Per image, (1/S) sum_s log p(x_observed | z_s) - KL(q || p(z)), with
    z_s = mean + exp(log_std) * eps_s. q: (N, 2L), eps: (S, N, L) -> (N,)."""
    S = len(eps)
    z = fastgrad.reparameterize(anp.concatenate([q_means_and_log_stds] * S, axis=0),
                                eps.reshape(S * len(x), -1))
    log_px = log_px_observed(gen_params, x, observed, anp.reshape(z, eps.shape), activation)
    return anp.mean(log_px, axis=0) - fastgrad.compute_KL(q_means_and_log_stds)


def draw(rngs, samples, latent_dim):
    """eps (samples, N, latent_dim): image n's column from rngs[n]."""
    return np.stack([rng.standard_normal((samples, latent_dim)) for rng in rngs], axis=1)


def fit_q(gen_params, x, observed, q_init, rngs, steps, samples, learning_rate,
          activation="relu", progress=False, estimate=False):
    """Stochastic variational inference: Adam (fastgrad.adam_step, ascending)
    on the per-image objective, for all images at once (Adam acts elementwise,
    so each image's q is fitted as if alone). -> (q (N, 2L), the objective's
    mean over images at every step (steps,)). progress, estimate: runs.Progress's
    bar and estimate of the duration."""
    q = np.array(q_init, dtype=np.float64)
    m, v = np.zeros_like(q), np.zeros_like(q)
    objective_and_grad = value_and_grad(lambda q, eps: anp.sum(
        svi_objective(q, gen_params, x, observed, eps, activation)))
    trace = np.empty(steps)
    with runs.Progress(steps, "conditional.py", f"SVI fit of {len(x)} images, {steps} steps",
                       unit="step", bar=progress, estimate=estimate) as bar:
        for t in range(1, steps + 1):
            value, gradient = objective_and_grad(q, draw(rngs, samples, q.shape[1] // 2))
            fastgrad.adam_step(q, gradient, m, v, t, learning_rate)
            trace[t - 1] = value / len(x)
            bar.bar.set_postfix(objective=f"{trace[t - 1]:.2f}")
            bar.update(1)
    return q, trace


def missing_pixel_means(gen_params, z, missing, activation="relu"):
    """p(x_d = 1 | z) for the missing pixels: z (K, L) -> (K, D_missing)."""
    return bernoulli_means(fastgrad.neural_net_predict(
        observed_decoder(gen_params, missing), z, activation))


def log_predictive(gen_params, x, missing, z, activation="relu"):
    """log (1/K) sum_k p(x_missing | z_k) per image, z: (K, N, L) -> (N,)."""
    out = np.empty(len(x))
    for start in range(0, len(x), IMAGES_PER_PASS):
        rows = slice(start, start + IMAGES_PER_PASS)
        log_p = log_px_observed(gen_params, x[rows], missing, z[:, rows], activation)
        out[rows] = logsumexp(log_p, axis=0) - np.log(len(z))
    return out


def predictive_samples(q, rngs, samples):
    """z (samples, N, L) from each image's q, with its own generator."""
    mean, log_std = fastgrad.unpack_gaussian_params(q)
    return mean + np.exp(log_std) * draw(rngs, samples, mean.shape[1])


def log_pixel_marginal(x, missing, pixel_probability):
    """sum over missing pixels of log Bernoulli(x_d; p_d): (N, D) -> (N,)."""
    p = pixel_probability[missing]
    return np.sum(x[:, missing] * np.log(p) + (1 - x[:, missing]) * np.log1p(-p), axis=1)


def pixel_correlations(means, weights=None):
    """Correlations between missing pixels under a predictive that mixes
    independent Bernoullis: means (K, D) = p(x_d = 1 | z_k), mixed with
    weights (K,) summing to 1 (default 1/K each). Given z the pixels are
    independent, so E[x_i x_j] = sum_k w_k p_ki p_kj for i != j, and
    Var x_i = m_i (1 - m_i) with m_i = sum_k w_k p_ki. -> (D, D), diagonal 1."""
    weights = np.full(len(means), 1 / len(means)) if weights is None else weights
    m = weights @ means
    cov = means.T @ (weights[:, None] * means) - np.outer(m, m)
    sd = np.sqrt(m * (1 - m))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    return corr


def correlation_summary(means, weights=None):
    """Largest and mean |correlation| between two different missing pixels
    whose predictive mean lies in UNCERTAIN (the others are all but decided),
    and that pair. means (K, D), weights as pixel_correlations ->
    dict (nan if fewer than two such pixels)."""
    weights = np.full(len(means), 1 / len(means)) if weights is None else weights
    m = weights @ means
    pixels = np.flatnonzero((m > UNCERTAIN[0]) & (m < UNCERTAIN[1]))
    if len(pixels) < 2:
        return {"uncertain_pixels": len(pixels), "max_abs": np.nan, "mean_abs": np.nan,
                "pair": None}
    corr = np.abs(pixel_correlations(means[:, pixels], weights))
    off = ~np.eye(len(pixels), dtype=bool)
    i, j = np.unravel_index(np.argmax(np.where(off, corr, -1)), corr.shape)
    return {"uncertain_pixels": len(pixels), "max_abs": float(corr[i, j]),
            "mean_abs": float(corr[off].mean()), "pair": (int(pixels[i]), int(pixels[j]))}


def correlation_maps(mixtures, observed):
    """For test image 0: the correlation of one missing pixel with every
    missing pixel, under each predictive. The pixel is one of the most
    correlated uncertain pair under the exact conditional if known, else
    under the SVI predictive. mixtures: {name: means (K, D_missing) or
    (means, weights)}. -> (maps (P, D), titles, the pixel's flat index)."""
    mixtures = {name: m if isinstance(m, tuple) else (m, None) for name, m in mixtures.items()}
    pair = correlation_summary(*mixtures.get("exact", mixtures["svi"]))["pair"]
    pixel = 0 if pair is None else pair[0]
    maps, titles = [], []
    for name, label in (("svi", "SVI predictive"), ("exact", "exact conditional"),
                        ("prior", "prior predictive")):
        if name in mixtures:
            image = np.zeros(len(observed))
            image[~observed] = pixel_correlations(*mixtures[name])[pixel]
            maps.append(image)
            titles.append(label)
    return np.array(maps), titles, int(np.flatnonzero(~observed)[pixel])
