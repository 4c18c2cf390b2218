"""The autoencoder's prior: a Gaussian mixture (scikit-learn) fitted to the
codes of the training images after training, its samples, its latent space as
write_figures sees it, and its file beside the checkpoint. vaelib/models.py's
autoencoder entry uses these as its hooks."""
from pathlib import Path

import numpy as np

from vaelib import fastgrad, runs
from vaelib.training import TEST_BINARIZATION_SEED, binarize_once

MIXTURE_NAME = "mixture.npz"   # the autoencoder's mixture, beside its checkpoint


def fit_mixture(codes, components, seed):
    """scikit-learn's GaussianMixture with full covariances on the codes (N, L).
    -> {"weights" (K,), "means" (K, L), "covariances" (K, L, L)}."""
    from sklearn.mixture import GaussianMixture
    mixture = GaussianMixture(n_components=components, covariance_type="full",
                              random_state=seed).fit(codes)
    return {"weights": mixture.weights_, "means": mixture.means_,
            "covariances": mixture.covariances_}


def sample_mixture(mixture, rs, n):
    """n draws from the mixture with RandomState rs: a component by its
    weight, then its Gaussian through the Cholesky factor. -> (n, L)."""
    k = rs.choice(len(mixture["weights"]), size=n, p=mixture["weights"])
    chol = np.linalg.cholesky(mixture["covariances"])
    eps = rs.randn(n, mixture["means"].shape[1])
    return mixture["means"][k] + np.einsum("nij,nj->ni", chol[k], eps)


class MixtureLatent:
    """write_figures' view of an autoencoder's codes: the mixture as prior,
    the code itself as the posterior's location and sample, and quantiles of
    the training codes (pooled over coordinates) for the manifold."""

    def __init__(self, mixture, codes):
        self.mixture, self.codes = mixture, codes

    def sample_prior(self, rs, shape):
        return sample_mixture(self.mixture, rs, shape[0])

    def ppf(self, p):
        return np.quantile(self.codes, p)

    @staticmethod
    def reparameterize(codes, eps):
        return codes

    @staticmethod
    def locations(codes):
        return codes


def check_components(config, n_images):
    """More mixture components than the codes it is fitted to: refused before training."""
    if config["components"] > n_images:
        raise runs.RunError(f"--components {config['components']} but the mixture is fitted to "
                            f"the codes of {n_images} training images; choose at most "
                            f"{n_images} components, or a larger --n-train", exit_code=2)


def fit_code_mixture(trained):
    """The mixture fitted to the codes of the training images (binarised once),
    written beside the checkpoint. -> (MixtureLatent, metrics extras)."""
    config, out = trained.config, trained.out
    binary = binarize_once(trained.train_images)
    codes = fastgrad.neural_net_predict(trained.rec_params, binary, config["activation"])
    mixture = fit_mixture(codes, config["components"], config["seed"])
    runs.atomic_write(out / MIXTURE_NAME, lambda f: np.savez(f, **mixture))
    return MixtureLatent(mixture, codes), {"mixture": {
        "components": config["components"], "fitted_to": (
            f"the codes of the {len(binary)} training images, binarised once with "
            f"RandomState({TEST_BINARIZATION_SEED})"), "file": str(out / MIXTURE_NAME)}}


def load_mixture(folder):
    """The autoencoder's mixture beside its checkpoint. Raises runs.RunError."""
    path = Path(folder) / MIXTURE_NAME
    try:
        with np.load(path, allow_pickle=False) as f:
            return {key: f[key] for key in ("weights", "means", "covariances")}
    except (OSError, KeyError, ValueError) as e:
        raise runs.RunError(f"{path}, the autoencoder's mixture, cannot be read "
                            f"({type(e).__name__}: {e})") from None


def mixture_figure(trained, latent):
    """For 2-D codes: the codes coloured by digit, with the mixture's ellipses."""
    if trained.config["latent_dim"] != 2:
        return {}, []
    import plotting
    path = trained.out / "mixture.png"
    plotting.save_mixture(latent.codes, np.argmax(trained.train_labels, axis=1),
                          latent.mixture["means"], latent.mixture["covariances"], path)
    return {}, [path]
