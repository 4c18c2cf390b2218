"""Checkpoints: the one place that knows their format.

A checkpoint is one .npz readable with plain np.load: each network's layers
as <name>_W0, <name>_b0, ... (vae.py's: gen and rec), the configuration and
the per-epoch history as JSON strings, and, since runs can be resumed, the
training state (state_<name> arrays and one JSON string). Checkpoints
written before an option existed load with that option's old behaviour.
"""
import json
import zipfile
from pathlib import Path

from vaelib import fastgrad, runs
from vaelib.networks import count_params, layer_sizes
from vaelib.runs import RunError
from vaelib.training import ADAM_EPS

HISTORY_KEYS = {"epoch", "train_elbo", "test_elbo"}
DEFAULT_ACTIVATION = "relu"   # of checkpoints written before --activation existed


# ----------------------------------------------------------------------------

def save_checkpoint(path, networks, config, history, state=None):
    """networks: {name: [(W, b), ...]} saved as name_W0, name_b0, ...; config
    and per-epoch history as JSON strings. Readable with plain np.load.
    state (optional): what resuming needs, {name: array or JSON value}; its
    arrays are saved as state_<name>, the rest as one JSON string."""
    import numpy as np   # imported here: bench.py sets BLAS threads before NumPy loads
    arrays = {"config": np.array(json.dumps(config)), "history": np.array(json.dumps(history))}
    for name, params in networks.items():
        for i, (W, b) in enumerate(params):
            arrays[f"{name}_W{i}"], arrays[f"{name}_b{i}"] = W, b
    if state is not None:
        values = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
        arrays["state"] = np.array(json.dumps(values))
        arrays.update({f"state_{k}": v for k, v in state.items() if isinstance(v, np.ndarray)})
    runs.atomic_write(path, lambda f: np.savez(f, **arrays))


def load_state(path):
    """The state save_checkpoint saved in path, or None if it has none (a
    checkpoint written before runs could be resumed). Call after
    load_checkpoint, which validates the file."""
    import numpy as np
    with np.load(path, allow_pickle=False) as archive:
        if "state" not in archive.files:
            return None
        state = json.loads(str(archive["state"]))
        state.update({name[len("state_"):]: archive[name] for name in archive.files
                      if name.startswith("state_")})
    return state


def load_checkpoint(path, layer_sizes, written_by="vae.py"):
    """-> (networks {name: [(W, b), ...]}, config, history), validated:
    layer_sizes(config) gives {name: [size_0, size_1, ...]}, and every W must
    be (size_i, size_i+1), every b (size_i+1,), all finite. Raises RunError."""
    import numpy as np
    def refuse(problem):
        return RunError(f"{path} is not a checkpoint written by {written_by} ({problem}); "
                        f"train again with `python {written_by}`")

    if not zipfile.is_zipfile(path):
        raise refuse("not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = dict(archive)
        config, history = json.loads(str(arrays["config"])), json.loads(str(arrays["history"]))
        sizes = layer_sizes(config)
    except KeyError as e:
        raise refuse(f"no {e} entry") from None
    except ValueError as e:
        raise refuse("it holds Python objects, not plain arrays" if "pickle" in str(e)
                     else f"{type(e).__name__}: {e}") from None
    except (OSError, TypeError, AttributeError, zipfile.BadZipFile) as e:
        raise refuse(f"{type(e).__name__}: {e}") from None
    if not (isinstance(config, dict) and isinstance(history, list)
            and all(isinstance(record, dict) for record in history)):
        raise refuse("its config is not a dict or its history not a list of dicts")
    networks = {}
    for name, layers in sizes.items():
        networks[name] = []
        for i, (m, n) in enumerate(zip(layers[:-1], layers[1:])):
            W, b = arrays.get(f"{name}_W{i}"), arrays.get(f"{name}_b{i}")
            if W is None or b is None:
                raise refuse(f"no {name}_W{i} or {name}_b{i}")
            if W.shape != (m, n) or b.shape != (n,):
                raise refuse(f"{name}_W{i} is {W.shape} and {name}_b{i} {b.shape}, but its "
                             f"configuration says ({m}, {n}) and ({n},)")
            if W.dtype.kind != "f" or b.dtype.kind != "f":
                raise refuse(f"{name}_W{i} holds {W.dtype}, not floating-point numbers")
            if not (np.isfinite(W).all() and np.isfinite(b).all()):
                raise refuse(f"{name}_W{i} or {name}_b{i} holds NaN or infinite values")
            networks[name].append((W, b))
    return networks, config, history


# ---- vae.py's model -------------------------------------------------------------------

def load_model(path):
    """-> (gen_params, rec_params, config, history) of a checkpoint written by
    vae.py, validated (load_checkpoint), with the defaults of options added
    since; raises runs.RunError."""
    def sizes(config):   # another model is named before its shapes are judged
        model = config.get("model", "vae")
        if model != "vae":
            raise RunError(
                f"{path} holds a{'n' * (str(model)[:1] in 'aeiou')} {model} model written by "
                f"variants.py (`python variants.py {model}`), and this script reads vae.py's "
                "model only; that run's figures and metrics.json are beside it, and "
                f"`python classifier.py --score {path}` scores its prior samples")
        return dict(zip(("gen", "rec"), layer_sizes(config)))
    networks, config, history = load_checkpoint(path, sizes)
    if not all(HISTORY_KEYS <= set(record) for record in history):
        raise RunError(f"{path} is not a checkpoint written by vae.py (an epoch of "
                       f"its history lacks one of {', '.join(sorted(HISTORY_KEYS))})")
    config.setdefault("activation", DEFAULT_ACTIVATION)
    config.setdefault("init", "normal")        # as written before these options existed
    config.setdefault("lr_schedule", "constant")
    config.setdefault("adam_eps", config.get("adam", {}).get("eps", ADAM_EPS))
    if config["activation"] not in fastgrad.ACTIVATIONS:
        raise RunError(f"{path} names the activation {config['activation']!r}; this "
                       f"vae.py knows {', '.join(fastgrad.ACTIVATIONS)}")
    return networks["gen"], networks["rec"], config, history


def read_model(path):
    """load_model, for a report on the checkpoint: -> (gen_params, rec_params,
    config, history, note), note a line saying that a run is training into
    the checkpoint's folder right now (runs.being_trained), or None."""
    holder = runs.lock_holder(Path(path).parent)
    gen_params, rec_params, config, history = load_model(path)
    return gen_params, rec_params, config, history, runs.being_trained(
        path, len(history), config.get("epochs"), holder)


def save_model(path, gen_params, rec_params, config, history, state=None):
    save_checkpoint(path, {"gen": gen_params, "rec": rec_params}, config, history, state)


def load_resumable(path):
    """-> (gen_params, rec_params, config, history, state) of a checkpoint of
    vae.py that holds what resuming needs, consistent with its history and
    sizes; raises runs.RunError if it cannot be continued exactly."""
    import numpy as np
    gen_params, rec_params, config, history = load_model(path)
    state = load_state(path)
    if state is None:
        raise RunError(f"{path} was written before checkpoints held what resuming needs "
                       "(Adam's moments, the random streams), so it cannot be continued "
                       "exactly; `python vae.py --from-checkpoint` still draws its figures "
                       "and evaluate.py evaluates it")
    done, size = state.get("epoch"), count_params(config)
    if (done != len(history) or any(np.shape(state.get(k)) != (size,) or
                                     np.asarray(state.get(k)).dtype != config["dtype"]
                                     for k in ("adam_m", "adam_v"))):
        raise RunError(f"{path} holds an inconsistent training state (epoch {done}, "
                       f"{len(history)} epochs of history); it cannot be resumed")
    return gen_params, rec_params, config, history, state
