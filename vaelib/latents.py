"""Latent spaces as vae.write_figures uses them: draws from the prior, its
quantile function, z from the encoder's output and standard normal noise,
and the posterior's location. variants.py's models pass their own."""
from vaelib import fastgrad


class GaussianLatent:
    """The VAE's latent space: prior N(0, I), z = mean + exp(log_std) * eps,
    located at the mean."""

    @staticmethod
    def sample_prior(rs, shape):
        return rs.randn(*shape)

    @staticmethod
    def ppf(p):
        from scipy.stats import norm
        return norm.ppf(p)

    reparameterize = staticmethod(fastgrad.reparameterize)

    @staticmethod
    def locations(encoder_output):
        return fastgrad.unpack_gaussian_params(encoder_output)[0]
