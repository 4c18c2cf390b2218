"""Networks and their sizes: layer sizes from a configuration, initial
parameters (the skeleton's init_net_params is vae.py's contract function and
is passed in), casts and counts."""
import autograd.numpy as anp
import autograd.numpy.random as npr

from data import DATA_DIM
from vaelib import runs

INITS = ("normal", "glorot")   # --init: the skeleton's N(0, 0.01^2), or Glorot's


def layer_sizes(config):
    """(generator sizes, recognition sizes) for a configuration dict."""
    hidden = [config["hidden_units"]] * config["hidden_layers"]
    return ([config["latent_dim"]] + hidden + [DATA_DIM],
            [DATA_DIM] + hidden + [2 * config["latent_dim"]])


def count_params(config):
    return runs.count_params(layer_sizes(config))


def cast_params(params, dtype):
    return [(W.astype(dtype), b.astype(dtype)) for W, b in params]


def init_glorot_params(layer_sizes):
    """[(W, b), ...] as Glorot and Bengio (2010, Eq. 16) initialise them, the
    heuristic Burda et al. (2016) used: W ~ U(-a, a), a = sqrt(6 / (m + n)),
    from the global stream layer by layer; b = 0."""
    return [(npr.uniform(-anp.sqrt(6 / (m + n)), anp.sqrt(6 / (m + n)), (m, n)), anp.zeros(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def initial_params(config, dtype, seed, init_net_params):
    """(gen_params, rec_params) as the skeleton initialises them with
    init_net_params (vae.py's), or Glorot's if config["init"] says "glorot":
    the global stream seeded with `seed`, generator first, then cast to dtype."""
    npr.seed(seed)
    init = init_glorot_params if config.get("init", "normal") == "glorot" else init_net_params
    return tuple(cast_params(init(sizes), dtype) for sizes in layer_sizes(config))
