"""The importance-weighted estimate of log p(x) (Burda, Grosse and
Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016, Eq. 8):
log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), per image from its
own generator, with the ELBO's terms and per-unit KLs; and the summaries over
images (mean and standard error, active units). evaluate.py reports them.
"""
import numpy as np
from scipy.special import logsumexp

from vaelib import fastgrad, runs

IW_SAMPLES = 5000
ELBO_SAMPLES = 100
ACTIVE_UNIT_THRESHOLD = 1e-2     # Burda et al. 2016, Sec. 5.2
MAX_ROWS = 8192                  # decoder rows per chunk: about 50 MB in float64
IW_CURVE = (1, 10, 100, 1000)    # also report the estimate from the first k samples


def log_mean_exp(a, axis=-1):
    """log mean exp(a) along an axis, in float64, without overflow."""
    a = np.asarray(a, dtype=np.float64)
    return logsumexp(a, axis=axis) - np.log(a.shape[axis])


def log_weight_terms(gen_params, rec_params, x, eps, activation="relu"):
    """The two parts of the importance weights of images x given noise eps.

    x: (B, D) in {0, 1}; eps: (B, M, L) standard normal; z = mean + std * eps.
    -> log p(x|z): (B, M), and log p(z) - log q(z|x): (B, M), both float64.
    The log weight is their sum. With eps as the standardised sample,
    log q(z|x) = sum_j -eps_j^2 / 2 - log_std_j - log(2 pi) / 2, so
    log p(z) - log q(z|x) = sum_j (eps_j^2 - z_j^2) / 2 + log_std_j."""
    B, M, L = eps.shape
    q = fastgrad.neural_net_predict(rec_params, x, activation)
    z = fastgrad.reparameterize(np.repeat(q, M, axis=0), eps.reshape(B * M, L))
    logits = fastgrad.neural_net_predict(gen_params, z, activation).reshape(B, M, -1)
    log_px_given_z = fastgrad.bernoulli_log_prob(x[:, None, :], logits)
    _, log_std = fastgrad.unpack_gaussian_params(q)
    z = z.reshape(B, M, L)
    log_prior_ratio = np.sum(0.5 * (eps ** 2 - z ** 2) + log_std[:, None, :], axis=-1)
    return log_px_given_z.astype(np.float64), log_prior_ratio.astype(np.float64)


def iw_standard_error(log_w):
    """The standard error of log (1/K) sum_k w_k per image, log_w (B, K) -> (B,),
    by the delta method: sd(w) / (sqrt(K) mean(w)); nan for K = 1."""
    if log_w.shape[1] < 2:
        return np.full(len(log_w), np.nan)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    return np.std(w, axis=1, ddof=1) / (np.sqrt(w.shape[1]) * np.mean(w, axis=1))


def image_rngs(seed, indices, *stream):
    """One random generator per image, default_rng([seed, image index, *stream]):
    an image gets the same samples whatever the chunking, --n or the other
    images (stream: evaluate.py uses none; conditional.py 0 for the fit, 1
    for the estimates)."""
    return [np.random.default_rng([seed, int(i), *stream]) for i in indices]


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
    out = {"log_px": np.empty(N), "log_px_se": np.empty(N), "iw_curve": {k: np.empty(N) for k in curve},
           "elbo": np.empty(N), "log_px_given_z": np.empty(N), "kl": np.empty(N),
           "kl_per_unit": np.empty((N, latent_dim)),
           "posterior_mean": np.empty((N, latent_dim))}
    done, stopped_by = 0, None
    bar = runs.Progress(N * M, "evaluate.py",
                        f"log p(x) of {N} image{'s' * (N != 1)}, K={iw_samples}",
                        unit="sample", bar=progress, estimate=estimate)
    try:
        for start in range(0, N, images_per_pass):
            x = binary[start:start + images_per_pass]
            rngs = image_rngs(seed, range(start, start + len(x)))
            log_px_given_z = np.empty((len(x), M))
            log_w = np.empty((len(x), M))
            for s in range(0, M, samples_per_pass):
                m = min(samples_per_pass, M - s)
                eps = np.stack([rng.standard_normal((m, latent_dim)) for rng in rngs])
                terms = log_weight_terms(gen_params, rec_params, x, eps.astype(x.dtype),
                                         activation)
                log_px_given_z[:, s:s + m] = terms[0]
                log_w[:, s:s + m] = terms[0] + terms[1]
                bar.update(len(x) * m)
            mean, log_std = fastgrad.unpack_gaussian_params(
                fastgrad.neural_net_predict(rec_params, x, activation))
            # KL per unit in closed form: compute_KL of each unit's (mean, log_std) pair.
            kl_per_unit = fastgrad.compute_KL(np.stack([mean, log_std], axis=-1))
            rows = slice(start, start + len(x))
            for k in curve:
                out["iw_curve"][k][rows] = log_mean_exp(log_w[:, :k])
            out["log_px"][rows] = out["iw_curve"][iw_samples][rows]
            out["log_px_se"][rows] = iw_standard_error(log_w[:, :iw_samples])
            out["log_px_given_z"][rows] = np.mean(log_px_given_z[:, :elbo_samples], axis=1)
            out["kl_per_unit"][rows] = kl_per_unit
            out["kl"][rows] = np.sum(kl_per_unit, axis=1)
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


def mean_and_se(values):
    """(mean, standard error of the mean) over images; the error is nan for one image."""
    values = np.asarray(values, dtype=np.float64)
    se = np.std(values, ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
    return float(np.mean(values)), float(se)


def entry(values):
    """{"mean", "se"} over images, as the reports write them."""
    mean, se = mean_and_se(values)
    return {"mean": mean, "se": se}


def active_units(posterior_mean, threshold=ACTIVE_UNIT_THRESHOLD):
    """Burda et al. 2016, Sec. 5.2: unit u is active if Cov_x(E_q[z_u | x]) > threshold.
    posterior_mean: (N, L) -> (variance over images (L,), active (L,) bool)."""
    variance = np.var(posterior_mean, axis=0)
    return variance, variance > threshold
