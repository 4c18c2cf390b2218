"""Are 25 images decodings of the student's trained model? The model's own
prior samples, and the distance of an image from any decoding
sigmoid(decoder(z)) (grader/figures.py, "25 prior samples")."""
import numpy as np

from data import DATA_DIM
from grader.pixels import LOGIT_CLIP, logits, same

# Prior samples must be decodings sigmoid(decoder(z)) of the trained model.
# Each image is compared, in logits (rms over pixels), with PRIOR_BANK
# decodings of z ~ N(0, I) from a stream of its own, in units of scale: the
# median distance of PRIOR_FRESH more decodings from their nearest in the bank
# (0.0024 logits after the skeleton's 60 steps: decodings alike to the eye are
# still told apart in logits). In 50 dimensions the bank is sparse at the
# edges (0.7% of the model's own samples are beyond 5 scales from it, a few
# beyond 900), so an image beyond PRIOR_RATIO has z fitted from its nearest
# by FIT_STEPS Levenberg steps, and its ratio is the distance that remains.
# Measured with the parameters of the skeleton's run on the grader's subset
# (1,000,000 samples in 40,000 figures) and of seven other runs, 250,000 each
# (60, 100 and 300 epochs on the 300 images, 10 on 1000, 20 on 10,000, the
# skeleton's run from seeds 1 and 2): 17,493 of the 2,750,000 samples needed
# the fit and it left none beyond 1.63, so none of the 110,000 correct figures
# failed (fewer than 1 in 36,000 at 95% confidence; 1 in 13,000 from the
# skeleton's run alone) with a limit 3 times the largest seen. Forged figures,
# 100 of each, the least of their largest ratios (each figure caught at 5):
#                         noise  untrained  training  10,000 images  seed 1  same run
#   skeleton's, 60 steps    776     69        2320        1110          34      140
#   120 steps (60 epochs)   480     60        1410         649          64       60
#   600 steps (300 epochs)   39     31          62          27          18      9.5
# untrained: the skeleton's initial parameters, 0.5 everywhere; training: the
# first 300 training images; 10,000 images: a better-trained model, 20 epochs
# on them, seed 1; seed 1: the skeleton's run from seed 1; same run: its
# parameters after the nearest other of 30, 60 and 100 epochs (from 300
# epochs, 5% of them are within 10). Decodings of other z pass: z ~ N(0, 4 I)
# (0 of 100 beyond 5), or z ~ U(0, 1) unless too alike (below).
PRIOR_SEED = 1
PRIOR_BANK = 4000
PRIOR_FRESH = 500
FIT_STEPS = 30
PRIOR_MIN_SCALE = 1e-4  # logits: floor of the scale, for a decoder that ignores z
PRIOR_RATIO = 5.0
# The 25 must be 25 samples, not one repeated: no two the same (to SAME), and
# their mean rms logit distance apart, over that of PRIOR_FRESH decodings of
# the model, at least PRIOR_SPREAD. The 110,000 correct figures above: at
# least 0.41 (0.01%: 0.48); in 74,000 of them the closest two images of a
# figure differed by 5.6e-4 or more in some pixel. One decoding repeated, the
# decoded mean z = 0 among them, is 0; z ~ N(0, 0.1^2 I), all near z = 0,
# 0.11 to 0.23 (96% caught after 60 steps); z ~ U(0, 1), 0.12 to 0.59 (77%
# caught after 60 steps); z ~ N(0, 0.3^2 I) passes.
PRIOR_SPREAD = 0.2


def decoder_jacobian(gen_params, z):
    """Logits of the ReLU decoder, as vae.neural_net_predict computes them, and
    their derivatives: z (n, L) -> logits (n, D), d logits / d z (n, L, D)."""
    h = z
    jacobian = np.broadcast_to(np.eye(z.shape[1]), (len(z), z.shape[1], z.shape[1]))
    for W, b in gen_params[:-1]:
        pre_activation = h @ W + b
        active = pre_activation > 0
        h = pre_activation * active
        jacobian = (jacobian @ W) * active[:, None, :]
    W, b = gen_params[-1]
    return h @ W + b, jacobian @ W


def rms(residual):
    """Root mean square over pixels: (..., D) -> (...)."""
    return np.sqrt(np.mean(residual ** 2, axis=-1))


def fitted_distance(gen_params, target, z):
    """How near the decoder comes to target logits: the rms residual of
    clip(decoder(z)) - target after FIT_STEPS Levenberg steps from z (fit).
    target (n, D), z (n, L) -> (n,)."""
    return fit(gen_params, target, z)[1]


def fit(gen_params, target, z):
    """z fitted to target logits by FIT_STEPS Levenberg steps from z, each
    image with its own damping, a step taken only if it lowers the residual
    clip(decoder(z)) - target (Levenberg 1944; damping by the mean curvature,
    as Marquardt's per-axis scaling stalled on these decoders).
    target (n, D), z (n, L) -> (z (n, L), rms residual (n,))."""
    def residual(z):
        out, jacobian = decoder_jacobian(gen_params, z)
        inside = np.abs(out) < LOGIT_CLIP    # clipped pixels do not move
        return np.clip(out, -LOGIT_CLIP, LOGIT_CLIP) - target, jacobian * inside[:, None, :]

    r, jacobian = residual(z)
    loss, damping = np.sum(r ** 2, axis=1), np.full(len(z), 1e-3)
    eye = np.eye(z.shape[1])
    for _ in range(FIT_STEPS):
        jtj = jacobian @ np.swapaxes(jacobian, 1, 2)                  # (n, L, L)
        curvature = np.trace(jtj, axis1=1, axis2=2) / z.shape[1] + 1e-12
        step = -np.linalg.solve(jtj + (damping * curvature)[:, None, None] * eye,
                                jacobian @ r[:, :, None])[:, :, 0]
        r_new, jacobian_new = residual(z + step)
        loss_new = np.sum(r_new ** 2, axis=1)
        better = loss_new < loss                                      # False for NaN
        z = np.where(better[:, None], z + step, z)
        r = np.where(better[:, None], r_new, r)
        jacobian = np.where(better[:, None, None], jacobian_new, jacobian)
        loss = np.where(better, loss_new, loss)
        damping = np.where(better, damping / 3, damping * 4)
    return z, np.sqrt(loss / target.shape[1])


class Prior:
    """The trained decoder's own prior samples: PRIOR_BANK decodings of
    z ~ N(0, I) in logits, the median rms distance of PRIOR_FRESH more from
    their nearest in the bank (scale), and their mean distance apart (spread)."""

    def __init__(self, gen_params, reference):
        self.gen_params = [(np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64))
                           for W, b in gen_params]
        latent_dim = self.gen_params[0][0].shape[0]
        rs = np.random.RandomState(PRIOR_SEED)   # a stream of its own (graded in threads)

        def decoded_logits(z):
            """logits(sigmoid(decoder(z))), clipped as an image's are: (n, L) -> (n, D)."""
            out = np.asarray(reference.neural_net_predict(self.gen_params, z), dtype=np.float64)
            if not np.all(np.isfinite(out)):
                raise ValueError("they decode to NaN or inf")
            return np.clip(out, -LOGIT_CLIP, LOGIT_CLIP)

        self.z = rs.randn(PRIOR_BANK, latent_dim)
        self.bank = decoded_logits(self.z)
        if self.bank.shape != (PRIOR_BANK, DATA_DIM):
            raise ValueError(f"decoded images of shape {self.bank.shape[1:]}, not ({DATA_DIM},)")
        fresh = decoded_logits(rs.randn(PRIOR_FRESH, latent_dim))
        self.scale = max(float(np.median(self.nearest(fresh)[0])), PRIOR_MIN_SCALE)
        self.spread = spread(fresh)

    def nearest(self, image_logits):
        """rms logit distance (n,) to the nearest decoding in the bank, and its index."""
        squared = (np.sum(image_logits ** 2, axis=1)[:, None] - 2 * image_logits @ self.bank.T
                   + np.sum(self.bank ** 2, axis=1)[None])
        index = np.argmin(squared, axis=1)
        return rms(image_logits - self.bank[index]), index

    def ratios(self, images):
        """(ratios (n,), k): each image's rms logit distance from the nearest
        decoding sigmoid(decoder(z)) found, over scale. The nearest in the bank
        first; images beyond PRIOR_RATIO, farthest first, then have z fitted
        from there, until one stays beyond: k, or None if none does."""
        target = logits(images)
        distance, index = self.nearest(target)
        ratios = distance / self.scale
        for k in np.argsort(-ratios):
            if ratios[k] <= PRIOR_RATIO:
                break
            fitted = fitted_distance(self.gen_params, target[[k]], self.z[index[[k]]])[0]
            ratios[k] = min(ratios[k], fitted / self.scale)
            if ratios[k] > PRIOR_RATIO:
                return ratios, int(k)
        return ratios, None


def spread(image_logits):
    """Mean rms logit distance between all pairs of images: (n, D) -> scalar."""
    squared = np.sum(image_logits ** 2, axis=1)
    pairs = np.maximum(squared[:, None] - 2 * image_logits @ image_logits.T + squared[None], 0)
    n = len(image_logits)
    return float(np.sum(np.sqrt(pairs / image_logits.shape[1])) / (n * (n - 1)))


def distinct(images):
    """The number of different images (to SAME) among them."""
    return sum(not any(same(image, earlier) for earlier in images[:k])
               for k, image in enumerate(images))


def prior_problem(images, prior):
    """None if the 25 images are decodings of the model's prior samples, else why not."""
    ratios, k = prior.ratios(images)
    if k is not None:
        return (f"the 25 images are not decodings of your trained model: image {k} is "
                f"{ratios[k]:.0f} times as far, in logits, from any decoding sigmoid(decoder(z)) "
                f"as the model's own samples are from the nearest of {PRIOR_BANK} decodings of "
                f"z ~ N(0, I) (at most {PRIOR_RATIO:g} passes); were they drawn as noise, "
                f"before training or with other parameters?")
    if prior.spread <= PRIOR_MIN_SCALE:   # a decoder that ignores z: one image, no spread
        return None
    n, alike = distinct(images), spread(logits(images)) / prior.spread
    if n == len(images) and alike >= PRIOR_SPREAD:
        return None
    why = ("all 25 are one image" if n == 1 else f"only {n} of the 25 differ" if n < len(images)
           else f"they are on average {alike:.2f} times as far apart, in logits, as its "
                f"decodings of z ~ N(0, I) are (at least {PRIOR_SPREAD:g} passes)")
    return (f"the 25 images are decodings of your trained model but not 25 samples: {why}; "
            "draw a new z ~ N(0, I) for each image")
