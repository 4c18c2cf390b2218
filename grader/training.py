"""The training part of check.py: did the student's script train the model?

check.py runs the script as __main__ on the first TRAIN_IMAGES training and
TEST_IMAGES test images of MNIST (check_worker.run_script) and receives the
1-D arrays of the model's size that the script ends with (the skeleton calls
its own `flattened_current_params`; a vector that autograd's `flatten` made
and the script updated in place counts too). This module judges them with
the reference's functions on fixed noise, and replays the skeleton's run on
the same images, seed and random stream, with the right Adam step and with
the wrong ones students write, to say which one the script took.
"""
import autograd.numpy as np
import autograd.numpy.random as npr
from autograd import grad
from autograd.misc import flatten

TRAIN_IMAGES, TEST_IMAGES = 300, 100
EPOCHS, BATCH_SIZE, SEED = 30, 200, 0                    # the skeleton's run
MIN_RISE = 50.0    # nats per image; the skeleton's run on the subset rises by about 300
ELBO_SEED = 7      # fixed binarisation and posterior noise of the judging ELBO
SKELETON_NAME = "flattened_current_params"


def adam(params, g, m, v, t, descend=False, moment_power=2, t_offset=0, lr=1e-3):
    """Kingma & Ba's step, and the variants students write by mistake."""
    t = t + t_offset
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g ** moment_power
    step = lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return (params - step if descend else params + step), m, v


# name: (what it does, the Adam step it takes)
VARIANTS = {
    "correct": ("", adam),
    "descends": ("the Adam step descends the ELBO (params - step); the ELBO is maximised, so "
                 "it must ascend (params + step)", lambda *a: adam(*a, descend=True)),
    "fourth power": ("Adam's second moment is built from g**4; it is the running mean of g**2",
                     lambda *a: adam(*a, moment_power=4)),
    "t from 2": ("the bias correction starts at t = 2; t counts the steps from 1",
                 lambda *a: adam(*a, t_offset=1)),
}


def assignment_config(reference):
    """The assignment's settings, as the reference's command line defaults them."""
    return vars(reference.parse_args([]))


def initial_params(reference):
    """The skeleton's initialisation: the global stream seeded, generator first."""
    return reference.initial_params(assignment_config(reference), "float64", SEED)


def skeleton_run(reference, images, step):
    """The skeleton's training loop with a given Adam step: binarise inside the
    objective, gradient, step, and a second objective call per batch, drawing
    from the global stream as a skeleton-shaped script does. -> flat params."""
    flat, unflatten = flatten(initial_params(reference))

    def objective(flat_params, batch):
        x = images[batch * BATCH_SIZE:(batch + 1) * BATCH_SIZE]
        binary = (x > npr.uniform(size=x.shape)).astype(float)
        return reference.vae_lower_bound(*unflatten(flat_params), binary)

    gradient = grad(objective)
    m, v, t = np.zeros(len(flat)), np.zeros(len(flat)), 1
    for _ in range(EPOCHS):
        for batch in range(-(-len(images) // BATCH_SIZE)):
            flat, m, v = step(flat, gradient(flat, batch), m, v, t)
            objective(flat, batch)
            t += 1
    return flat


def judging_elbo(reference, flat, images):
    """The bound on the training images with fixed binarisation and noise."""
    _, unflatten = flatten(initial_params(reference))
    rs = np.random.RandomState(ELBO_SEED)
    binary = (images > rs.uniform(size=images.shape)).astype(float)
    return reference.evaluate_elbo(*unflatten(flat), binary, seed=ELBO_SEED)["elbo"]


def choose(candidates, initial):
    """The trained vector among the candidates: the script's own globals before
    what autograd's flatten made; among them the skeleton's name first, then
    the last one that moved away from the initial parameters, then any.
    -> (name, vector) or (None, None)."""
    named = {name: flat for name, flat in candidates.items() if not name.startswith("(")}
    pool = named or candidates
    if SKELETON_NAME in pool:
        return SKELETON_NAME, pool[SKELETON_NAME]
    moved = [(name, flat) for name, flat in pool.items() if not np.array_equal(flat, initial)]
    return moved[-1] if moved else next(iter(pool.items()), (None, None))


def result(check, status, message=""):
    return {"function": "(training)", "check": check, "status": status, "message": message}


def judge_training(candidates, images, reference, replays):
    """candidates: {name: 1-D array}; replays: {variant: flat params} from
    skeleton_run. -> (results, (gen_params, rec_params) or None)."""
    initial, unflatten = flatten(initial_params(reference))
    size = len(initial)
    name, flat = choose(candidates, initial)
    if flat is None:
        return [result("trained parameters found", "fail",
                       f"no 1-D array of {size:,} numbers (the networks' parameters) was "
                       f"in the script's globals at its end (the skeleton calls it "
                       f"{SKELETON_NAME}) or made by autograd's flatten")], None
    results = [result("trained parameters found", "pass", f"{name}")]
    if not np.all(np.isfinite(flat)):
        # A diverged run says little about its cause: name the usual ones.
        results.append(result("the ELBO rises", "fail", "the parameters became NaN or infinite. "
                              "Usual causes: a bias correction from t = 0 (a division by zero at "
                              "the first step), a second moment built from g**4 instead of g**2, "
                              "or a step that descends the ELBO until it overflows"))
        return results, None
    match = next((variant for variant, replay in replays.items()
                  if np.allclose(flat, replay, rtol=1e-7, atol=1e-9)), None)
    if np.array_equal(flat, initial):
        results.append(result("the ELBO rises", "fail", "the parameters never changed: the "
                                                        "loop does not update them"))
        return results, unflatten(flat)
    before, after = judging_elbo(reference, initial, images), judging_elbo(reference, flat, images)
    rose = after - before
    if rose >= MIN_RISE:
        results.append(result("the ELBO rises", "pass",
                              f"from {before:.1f} to {after:.1f} nats per image"))
    else:
        results.append(result("the ELBO rises", "fail", f"the ELBO {'fell' if rose < 0 else 'rose only'} "
                              f"from {before:.1f} to {after:.1f} nats per image (expected a rise of "
                              f"at least {MIN_RISE:g})"
                              + ("; the Adam step descends: the ELBO is maximised" if rose < 0 else "")))
    if match == "correct":
        results.append(result("Adam and the loop", "pass", "the same parameters as the "
                              "reference's run: your numbers are comparable with the reference table"))
    elif match is not None:
        results.append(result("Adam and the loop", "fail", VARIANTS[match][0]))
    else:
        results.append(result("Adam and the loop", "pass", "not the reference's parameters "
                              "(another order of random draws, another loop, or a function "
                              "above that differs): fine, but compare your test ELBO with the "
                              "band, not number for number"))
    return results, unflatten(flat)


def replays(reference, images):
    """{variant: final flat parameters} of the skeleton's run with each Adam step."""
    with np.errstate(all="ignore"):     # the wrong steps overflow
        return {variant: skeleton_run(reference, images, step)
                for variant, (_, step) in VARIANTS.items()}
