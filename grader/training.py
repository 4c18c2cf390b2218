"""The training part of check.py: did the student's script train the model?

check.py runs the script as __main__ on the first TRAIN_IMAGES training and
TEST_IMAGES test images of MNIST (grader/script.py), and the worker records
every evaluation of autograd's gradient at the model's parameters: how many,
the whole parameter vector at the first and the last, and at every one the
parameters and the gradient on a subset of coordinates that this process
chose at random for the file. Adam works coordinate by coordinate, so the
steps on that subset can be replayed exactly from the recorded gradients.
Judged here: the loop ran; it starts from the skeleton's initialisation; its
steps are Adam's from t = 1 (or one of the wrong steps students write, which
is named); no parameter moved further than Adam's steps can move it; the
parameters the script ends with are where the loop's last step left them;
and the reference's ELBO, on fixed noise, rises from the loop's start to its
end. Only a verified training is passed on to judge the figures.

Nothing here draws from the global NumPy stream (other threads grade other
files): the skeleton's initialisation and run are composed from the
reference's contract functions and private RandomStates (with grader/draws.py's
compositions), which give the same numbers (tests/grading/test_check_script.py). The
run, replayed once per session, says whether the parameters are the reference's.
"""
import math
from typing import NamedTuple

import autograd.numpy as anp
from autograd import grad
from autograd.misc import flatten

from grader.draws import INIT_SCALE, reference_bound, reference_init
from grader.script import traced_width
from vaelib import networks
from vaelib.training import evaluate_elbo

TRAIN_IMAGES, TEST_IMAGES = 300, 100
EPOCHS, BATCH_SIZE, SEED = 30, 200, 0                    # the skeleton's run
# Adam steps of the assignment's run on the subset. At most this many: then no parameter
# moves further than reach(0, MAX_STEPS) = 0.08 from the initialisation, where what no
# gradient tells (output biases towards the pixel means) gains at most 17 nats, measured.
MAX_STEPS = EPOCHS * -(-TRAIN_IMAGES // BATCH_SIZE)
LEARNING_RATE, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8      # the assignment's Adam
MIN_RISE = 50.0    # nats per image; the skeleton's run on the subset rises by about 300
ELBO_SEED = 7      # fixed binarisation and posterior noise of the judging ELBO
SKELETON_NAME = "flattened_current_params"
TRACED = 2048      # coordinates whose parameters and gradients are recorded at every evaluation
# A step is compared where sqrt(v_hat) >= TINY_RMS: there the places students put eps
# (sqrt(v_hat) + eps, sqrt(v_hat + eps), sqrt(v) + eps before the correction) change
# the step by at most eps / TINY_RMS**2 = 4e-4 of itself, below STEP_RTOL, while a bias
# correction from t = 2 (t = 1 and `t += 1` before the update) changes it by 26% at t = 1
# and by 0.117% or more at every t up to 60 (least at t = 12), whatever the gradients.
# Measured on student_vae.py's loop recorded in-process (2,048 coordinates, 3 draws, 100
# or more compared per step): its t-from-2 form is 256 times the tolerance at step 1 and
# at least 1.17 times it at every step; honest loops stay below it: the skeleton's and an
# in-place one at 4e-7 of it, eps inside the square root at 0.20, eps before the
# correction at 0.06, a float32 loop at 0.12 to 0.23 (to 0.96 without m_rounding).
TINY_RMS, STEP_RTOL = 5e-3, 1e-3


# ---- The reference's run, on private streams ------------------------------------------

def assignment_config(reference):
    """The assignment's settings, as the reference's command line defaults them."""
    return vars(reference.parse_args([]))


def initial_params(reference, rs=None):
    """(gen_params, rec_params) as the skeleton draws them after npr.seed(SEED):
    init_net_params' draws, generator first, from a private stream (default: a
    RandomState(SEED), which is the global stream's MT19937 and normal transform)."""
    rs = anp.random.RandomState(SEED) if rs is None else rs
    return tuple(reference_init(rs.randn, sizes, INIT_SCALE)
                 for sizes in networks.layer_sizes(assignment_config(reference)))


def adam_update(g, m, v, t, moment_power=2, t_offset=0, corrected=True, sign=1):
    """Kingma & Ba (2015), Algorithm 1, as the step added to the parameters
    (the ELBO is maximised) and the new moments; the keywords make the wrong
    steps students write. -> (step, m, v)."""
    m = B1 * m + (1 - B1) * g
    v = B2 * v + (1 - B2) * g ** moment_power
    t = t + t_offset
    m_hat, v_hat = (m / (1 - B1 ** t), v / (1 - B2 ** t)) if corrected else (m, v)
    return sign * LEARNING_RATE * m_hat / (anp.sqrt(v_hat) + EPS), m, v


def skeleton_run(reference, images, epochs=EPOCHS):
    """The skeleton's training loop: per batch, binarise, gradient, Adam step,
    and a second objective call (a fresh binarisation and sample), drawing
    uniform then randn from one private RandomState(SEED) continued from the
    initialisation, in the order a skeleton-shaped script draws them from the
    global stream. -> the final flat parameters."""
    rs = anp.random.RandomState(SEED)
    flat, unflatten = flatten(initial_params(reference, rs))   # the stream then goes on

    def objective(flat_params, batch):
        x = images[batch * BATCH_SIZE:(batch + 1) * BATCH_SIZE]
        binary = (x > rs.uniform(size=x.shape)).astype(float)
        return reference_bound(reference, *unflatten(flat_params), binary, rs.randn)

    gradient = grad(objective)
    m, v, t = anp.zeros(len(flat)), anp.zeros(len(flat)), 1
    for _ in range(epochs):
        for batch in range(-(-len(images) // BATCH_SIZE)):
            step, m, v = adam_update(gradient(flat, batch), m, v, t)
            flat = flat + step
            objective(flat, batch)
            t += 1
    return flat


def judging_elbo(reference, flat, images):
    """The bound on the training images with fixed binarisation and noise."""
    _, unflatten = flatten(initial_params(reference))
    rs = anp.random.RandomState(ELBO_SEED)
    binary = (images > rs.uniform(size=images.shape)).astype(float)
    return evaluate_elbo(*unflatten(anp.asarray(flat, dtype=float)), binary,
                         seed=ELBO_SEED)["elbo"]


def parameter_names(reference):
    """-> name(i): which weight or bias the flat vector's entry i is, in the
    order autograd's flatten lays them out (generator first, W row by row, then b)."""
    blocks, offset = [], 0
    for network, sizes in zip(("generator", "recognition network"),
                              networks.layer_sizes(assignment_config(reference))):
        for layer, (m, n) in enumerate(zip(sizes[:-1], sizes[1:]), 1):
            where = f"of the {network}'s layer {layer}"
            blocks += [(offset, n, "W", where), (offset + m * n, n, "b", where)]
            offset += m * n + n

    def name(i):
        start, n, array, where = next(block for block in reversed(blocks) if block[0] <= i)
        index = "%d, %d" % divmod(i - start, n) if array == "W" else i - start
        return f"parameter {i:,} ({array}[{index}] {where})"
    return name


# ---- The loop the worker recorded -----------------------------------------------------

# name: (what it does, adam_update's keywords)
VARIANTS = {
    "correct": ("", {}),
    "descends": ("the Adam step descends the ELBO (params - step); the ELBO is maximised, so "
                 "it must ascend (params + step)", {"sign": -1}),
    "fourth power": ("Adam's second moment is built from g**4; it is the running mean of g**2",
                     {"moment_power": 4}),
    "t from 2": ("the bias correction starts at t = 2 (is t incremented before the update "
                 "and started at 1?); t counts the steps from 1, so the first step must divide "
                 "by 1 - 0.9**1 and 1 - 0.999**1: start at t = 0 and add 1 before the update, or "
                 "start at t = 1 and add 1 after it", {"t_offset": 1}),
    "no bias correction": ("Adam's moments are not bias-corrected: m_hat = m / (1 - 0.9**t) "
                           "and v_hat = v / (1 - 0.999**t), t counting the steps from 1",
                           {"corrected": False}),
}


class Trace(NamedTuple):
    """The worker's record of the gradient evaluations at the model's parameters."""
    count: int             # evaluations
    first: anp.ndarray      # (size,) the parameters at the first
    last: anp.ndarray       # (size,) the parameters at the last
    indices: anp.ndarray    # (K,) the coordinates followed
    points: anp.ndarray     # (count, K) the parameters there, at every evaluation
    gradients: anp.ndarray  # (count, K) the gradient there


def read_trace(record, arrays, indices, size):
    """The "gradients" field of the worker's answer (None if it sent none),
    checked against the request (indices: the coordinates sent). -> Trace, or
    None if the script never evaluated a gradient at the parameters. Raises ValueError."""
    from grader.protocol import decode
    count = 0 if record is None else record["count"]
    if count == 0:
        return None
    first, last, points, gradients = (decode(record[key], arrays)
                                      for key in ("first", "last", "points", "gradients"))
    kept = indices[:traced_width(count, len(indices))]
    if not all(isinstance(a, anp.ndarray) and a.dtype.kind == "f" for a in
               (first, last, points, gradients)):
        raise ValueError("a record of the gradient evaluations that is not float arrays")
    if first.shape != (size,) or last.shape != (size,) \
            or points.shape != (count, len(kept)) or gradients.shape != points.shape:
        raise ValueError(f"a record of {count} gradient evaluations of the wrong shape")
    if not (anp.array_equal(points[0], first[kept], equal_nan=True)
            and anp.array_equal(points[-1], last[kept], equal_nan=True)):
        raise ValueError("a record of the gradient evaluations that contradicts itself")
    return Trace(count, first, last, kept, points, gradients)


def max_step(t):
    """The largest |m_hat| / sqrt(v_hat) of Adam's step t, whatever the
    gradients: by Cauchy-Schwarz, m_hat = sum_i a_i g_i with a_i = (1 - b1) b1^(t-i) /
    (1 - b1^t) and v_hat = sum_i c_i g_i^2 with c_i = (1 - b2) b2^(t-i) / (1 - b2^t)
    give |m_hat| <= sqrt(sum_i a_i^2 / c_i) sqrt(v_hat); 1 at t = 1, 1.8 at t = 60."""
    r = B1 ** 2 / B2
    return math.sqrt((1 - B1) ** 2 / (1 - B1 ** t) ** 2 * (1 - B2 ** t) / (1 - B2)
                     * (1 - r ** t) / (1 - r))


def reach(steps_from, steps_to):
    """How far Adam steps steps_from + 1 .. steps_to can move one coordinate, with
    room for rounding."""
    return LEARNING_RATE * sum(max_step(t) for t in range(steps_from + 1, steps_to + 1)) \
        * (1 + 1e-6)


def rounding(*points):
    """A few units of the last place of the recorded parameters (their own dtype)."""
    return 4 * anp.spacing(anp.max(anp.abs(points), axis=0).astype(points[0].dtype)).astype(float)


class Replay(NamedTuple):
    matches: bool      # every compared step within tolerance
    compared: int      # (step, coordinate) pairs compared
    worst: tuple       # (excess, step, coordinate, moved, predicted, scale or None) or None
    m: anp.ndarray      # the moments after the last step, and the steps taken
    v: anp.ndarray
    v2: anp.ndarray     # the second moment of g**2 (which coordinates are compared)
    steps: int
    g_max: anp.ndarray  # the largest |g| seen per coordinate (float rounding of m)


def groups_of(trace):
    """The loop's distinct parameter values in order, each with the gradients
    evaluated there (a loop may evaluate twice at the same parameters).
    -> [(point (K,), [gradient (K,), ...])]."""
    groups = []
    for point, gradient in zip(trace.points.astype(float), trace.gradients.astype(float)):
        if groups and anp.array_equal(point, groups[-1][0]):
            groups[-1][1].append(gradient)
        else:
            groups.append((point, [gradient]))
    return groups


def m_rounding(g_max, v2, t, dtype):
    """How far rounding in the loop's own dtype moves a step: m kept in it is off
    by about eps * max |g|, which matters only where m has nearly cancelled (an
    honest float32 loop, |m| 2.5e-5 of max |g|, came within 0.955 of the
    tolerance without it; 0.23 with it). Wrong steps (1.17e-3 off on every
    coordinate) still fail; in float64 it is 5e8 times smaller."""
    eps = float(anp.finfo(dtype).eps) if anp.issubdtype(dtype, anp.floating) else 0.0
    return LEARNING_RATE * eps * g_max / (1 - B1 ** t) / anp.maximum(
        anp.sqrt(v2 / (1 - B2 ** t)), TINY_RMS)


def compare(moved, step, v2, t, points, slack=0.0):
    """-> (compared mask, excess over the tolerance) of one step; slack: m_rounding's."""
    compared = (anp.sqrt(v2 / (1 - B2 ** t)) >= TINY_RMS) & anp.isfinite(step)
    excess = anp.abs(moved - step) - (STEP_RTOL * anp.abs(step) + rounding(*points) + slack)
    return compared, anp.where(compared, excess, -anp.inf)


def replay(groups, dtype, variant):
    """Each step between consecutive groups predicted by the variant from the
    gradients recorded before it (trying each gradient of a repeated
    evaluation: the first that fits). -> Replay."""
    options = VARIANTS[variant][1]
    zeros = anp.zeros_like(groups[0][0])
    m, v, v2, g_max, compared, worst = zeros, zeros, zeros, zeros, 0, None
    with anp.errstate(all="ignore"):
        for k in range(len(groups) - 1):
            (point, gradients), after = groups[k], groups[k + 1][0]
            points = (point.astype(dtype), after.astype(dtype))
            tries = []
            for g in gradients:
                step, m_next, v_next = adam_update(g, m, v, k + 1, **options)
                v2_next = B2 * v2 + (1 - B2) * g ** 2
                g_max_next = anp.maximum(g_max, anp.abs(g))
                mask, excess = compare(after - point, step, v2_next, k + 1, points,
                                       m_rounding(g_max_next, v2_next, k + 1, dtype))
                tries.append((int(anp.sum(excess > 0)), mask, excess, step, m_next, v_next,
                              v2_next, g_max_next))
                if tries[-1][0] == 0:
                    break
            _, mask, excess, step, m, v, v2, g_max = min(tries, key=lambda attempt: attempt[0])
            compared += int(anp.sum(mask))
            i = int(anp.argmax(excess))
            if excess[i] > 0 and (worst is None or excess[i] > worst[0]):
                ratios = (after - point)[mask] / step[mask]
                scale = anp.median(ratios)       # every step scale times Adam's: a step size
                uniform = anp.all(anp.abs(ratios - scale) <= STEP_RTOL * abs(scale))
                worst = (excess[i], k + 1, i, after[i] - point[i], step[i],
                         scale if uniform else None)
    return Replay(worst is None and compared > 0, compared, worst, m, v, v2, len(groups) - 1,
                  g_max)


class Loop(NamedTuple):
    trace: Trace
    groups: list
    variant: str            # the step the loop takes (a key of VARIANTS), or None
    replay: Replay          # that variant's, or the correct step's if none fits
    finite: bool            # no recorded parameters are NaN or infinite


def follow(trace):
    """Which Adam step the recorded loop takes, on its finite part. -> Loop."""
    def first_bad(rows):
        return int(anp.argmin(rows)) if not rows.all() else len(rows)
    bad_point = first_bad(anp.all(anp.isfinite(trace.points), axis=1))
    bad_gradient = first_bad(anp.all(anp.isfinite(trace.gradients), axis=1))
    finite = bad_point == bad_gradient == len(trace.points)
    # The steps that can be replayed: up to the last finite parameters (whose gradient
    # may be NaN: only the gradients before a step predict it).
    n = min(bad_point, bad_gradient + 1)
    if n == 0:
        return Loop(trace, [], None, None, finite)
    groups = groups_of(trace._replace(points=trace.points[:n], gradients=trace.gradients[:n]))
    dtype = trace.points.dtype
    replays = {variant: replay(groups, dtype, variant) for variant in VARIANTS}
    variant = next((name for name, r in replays.items() if r.matches), None)
    return Loop(trace, groups, variant, replays[variant or "correct"], finite)


def where_it_ends(loop, flat):
    """Is flat where the loop's last step leaves it? On the followed coordinates
    the step is predicted exactly (or there is none), elsewhere it is at most one
    Adam step from the parameters of the last evaluation. -> None if so, else what differs."""
    trace, r = loop.trace, loop.replay
    flat, last = anp.asarray(flat, dtype=float), trace.last.astype(float)
    t = r.steps + 1
    point, gradients = loop.groups[-1]
    ends = flat[trace.indices]
    with anp.errstate(all="ignore"):
        misfits = []                     # the largest excess of each possible last step
        for g in gradients if not anp.array_equal(ends, point) else ():
            step, _, _ = adam_update(g, r.m, r.v, t, **VARIANTS[loop.variant or "correct"][1])
            v2 = B2 * r.v2 + (1 - B2) * g ** 2
            dtype = trace.last.dtype
            _, excess = compare(ends - point, step, v2, t, (point.astype(dtype), ends.astype(dtype)),
                                m_rounding(anp.maximum(r.g_max, anp.abs(g)), v2, t, dtype))
            misfits.append((anp.max(excess), int(anp.argmax(excess))))
        if misfits and min(misfits)[0] > 0:
            i = min(misfits)[1]
            return int(trace.indices[i]), ends[i] - point[i]
        beyond = anp.abs(flat - last) - (reach(r.steps, t) + rounding(last, flat.astype(last.dtype)))
    i = int(anp.argmax(beyond))
    return None if not beyond[i] > 0 else (i, flat[i] - last[i])


def consistent(loop, flat):
    return bool(loop.groups) and loop.finite and where_it_ends(loop, flat) is None


def choose(candidates, initial, loop):
    """The trained vector: the first candidate where the loop's last step left
    it (the skeleton's name, the script's other globals from the last, then
    what autograd's flatten made); if none is, as before the loop was
    followed: the skeleton's name, the last one that moved away from the
    initial parameters, any. -> (name, vector, where the loop ends) or (None, None, False)."""
    named = [name for name in candidates if not name.startswith("(")]
    order = ([SKELETON_NAME] if SKELETON_NAME in candidates else []) + \
        [name for name in reversed(named) if name != SKELETON_NAME] + \
        [name for name in reversed(list(candidates)) if name.startswith("(")]
    if loop is not None:
        for name in order:
            if anp.all(anp.isfinite(candidates[name])) and consistent(loop, candidates[name]):
                return name, candidates[name], True
    pool = {name: candidates[name] for name in named} or candidates
    if SKELETON_NAME in pool:
        return SKELETON_NAME, pool[SKELETON_NAME], False
    moved = [(name, flat) for name, flat in pool.items() if not anp.array_equal(flat, initial)]
    name, flat = moved[-1] if moved else next(iter(pool.items()), (None, None))
    return name, flat, False


# ---- The verdicts -----------------------------------------------------------------

def shown(name):
    """A candidate's name as the student reads it: grader/script.py names the
    flat vectors autograd's flatten made "(flattened 0)" (the first of the
    model's size) and "(flattened 1)" (the last)."""
    if name.startswith("(flattened"):
        which = "first" if name == "(flattened 0)" else "last"
        return f"the {which} flat vector of the parameters that autograd's flatten made"
    return name


def result(check, status, message=""):
    return {"function": "(training)", "check": check, "status": status, "message": message}


def diverged(loop):
    """The NaN verdict, with the step where it happened and the step the loop
    took before, when the record shows them."""
    message = ("the parameters became NaN or infinite. Usual causes: a bias correction from "
               "t = 0 (a division by zero at the first step), a second moment built from g**4 "
               "instead of g**2, or a step that descends the ELBO until it overflows")
    if loop is not None and not loop.finite:
        steps = len(loop.groups) - 1
        message += (f"; here after Adam step {steps + 1}" if steps >= 0 else
                    "; here before the first gradient evaluation")
        if loop.variant not in (None, "correct"):
            message += f"; the loop's steps are a wrong Adam's: {VARIANTS[loop.variant][0]}"
    return result("the ELBO rises", "fail", message)


def stopped_after(stopped, loop, steps, ends_there):
    """Where the training was when the script stopped (stopped: its error):
    `steps` Adam steps seen; unless the parameters it ended with were found
    (ends_there), the step after the last gradient evaluation may have been taken."""
    return f"the script stopped ({stopped}) after " + (
        f"{steps} of the assignment's {MAX_STEPS} Adam steps" if ends_there else
        f"the loop had evaluated the gradient for {len(loop.groups)} of the assignment's "
        f"{MAX_STEPS} Adam steps")


def loop_problem(loop, initial, name, flat, ends_there, named, stopped=None):
    """What is wrong with the recorded loop besides a wrong Adam step: its
    start, a parameter moved further than Adam moves it, an end that is not
    where its last step left it (for a script that stopped, stopped: its error,
    the training cut short). -> a sentence or None."""
    trace = loop.trace
    start = initial.astype(trace.first.dtype)       # a float32 loop starts from it rounded
    if not anp.array_equal(trace.first, start):
        return (f"the training does not start from the skeleton's initialisation: at the first "
                f"gradient evaluation {int(anp.sum(trace.first != start)):,} of the "
                f"{len(initial):,} parameters differ from it. Seed the global stream with "
                f"npr.seed(0), then draw the generator's and then the recognition network's "
                f"parameters with init_net_params (scale 0.01), and flatten them with "
                f"autograd.misc.flatten")
    steps = len(loop.groups) - 1
    taken = steps + (not anp.array_equal(flat, trace.last))
    if taken > MAX_STEPS:
        return (f"the loop took {taken} steps; the assignment's run takes "
                f"{MAX_STEPS} on the grader's {TRAIN_IMAGES} images ({EPOCHS} epochs of batches "
                f"of {BATCH_SIZE}), and the grader follows no more")
    if loop.variant not in ("correct", "descends"):
        return None                                   # the steps are not Adam's: said already
    moved = anp.abs(trace.last.astype(float) - trace.first) - (
        reach(0, steps) + rounding(trace.first, trace.last))
    i = int(anp.argmax(moved))
    if moved[i] > 0:
        return (f"parameters were changed between the loop's steps: {named(i)} moved by "
                f"{float(trace.last[i]) - float(trace.first[i]):.4g} between the first and the "
                f"last gradient evaluation, and {steps} Adam steps move a parameter by at most "
                f"{reach(0, steps):.3g}")
    if not ends_there and stopped is not None:
        return stopped_after(stopped, loop, steps, ends_there) + (
            ", and the parameters the loop reached are not in the script's globals at its end")
    if not ends_there:
        i, moved = where_it_ends(loop, flat)
        return (f"the parameters were changed after the loop's last step: in {shown(name)}, "
                f"{named(i)} is {moved:.4g} from its value at the last gradient evaluation, "
                f"which one more Adam step cannot explain (it moves a parameter by at most "
                f"{reach(steps, steps + 1):.3g})")
    return None


def adam_verdict(loop, rose, named):
    """(status, message) of the loop's Adam step; rose: did the ELBO rise;
    named: parameter_names' function."""
    r = loop.replay
    if loop.variant == "correct" or (loop.variant == "descends" and rose):
        return "pass", ""                # a loss (the negated ELBO) descended is the same step
    if loop.variant is not None:
        return "fail", VARIANTS[loop.variant][0]
    if r is None or r.steps == 0:
        return "fail", "the loop took no step between its gradient evaluations"
    if r.worst is None:
        return "fail", ("no step could be compared: the recorded gradients are all near zero "
                        f"(sqrt(v_hat) < {TINY_RMS:g})")
    _, step, i, moved, predicted, scale = r.worst
    message = (f"no Adam step matches the loop's: at step {step} "
               f"{named(int(loop.trace.indices[i]))} moved by {moved:.4g}, where Adam (step size "
               f"{LEARNING_RATE:g}, beta1 {B1}, beta2 {B2}, eps {EPS:g}, bias-corrected from "
               f"t = 1) with the gradient the loop evaluated moves it by {predicted:.4g}")
    if scale is not None:
        message += (f"; every parameter moved {scale:.3g} times as far as Adam moves it: the "
                    f"step size is {LEARNING_RATE:g}")
    return "fail", message


def judge_training(candidates, trace, images, reference, reference_run, stopped=None):
    """candidates: {name: 1-D array}; trace: read_trace's Trace, or None (no
    gradient evaluation was recorded); reference_run: skeleton_run's final
    parameters; stopped: the error the script stopped with, or None (it ran to
    its end). -> (results, (gen_params, rec_params) of the verified training or None)."""
    from grader.protocol import text
    stopped = None if stopped is None else text(stopped, 900)
    initial, unflatten = flatten(initial_params(reference))
    size = len(initial)
    loop = follow(trace) if trace is not None else None
    name, flat, ends_there = choose(candidates, initial, loop)
    if flat is None:
        return [result("trained parameters found", "fail",
                       f"no 1-D array of {size:,} numbers (the networks' parameters) was "
                       f"in the script's globals at its end (the skeleton calls it "
                       f"{SKELETON_NAME}) or made by autograd's flatten"
                       + (f"; the script stopped ({stopped})" if stopped else ""))], None
    results = [result("trained parameters found", "pass",
                      shown(name) + " (where the loop's last step left it)" * ends_there)]
    if not anp.all(anp.isfinite(flat)) or (loop is not None and not loop.finite):
        return results + [diverged(loop)], None
    if loop is None or not loop.groups:
        return results + [
            result("the ELBO rises", "skipped", "not judged: no training loop ran"
                   + " before the script stopped" * (stopped is not None)),
            result("Adam and the loop", "fail",
                   (f"the script stopped ({stopped}) before it evaluated autograd's gradient "
                    "at the parameters" if stopped else "the script never evaluated autograd's "
                    "gradient at the parameters") + ": it did not train (the grader follows grad "
                   f"and value_and_grad of a function of the flat vector of {size:,} parameters, "
                   "or of the networks' (W, b) lists)")], None
    end = flat if ends_there else trace.last
    steps = len(loop.groups) - 1 + (ends_there and not anp.array_equal(flat, trace.last))
    stopped_early = stopped is not None and (steps if ends_there else len(loop.groups)) < MAX_STEPS
    if anp.array_equal(end, trace.first):
        evaluations = ("its first gradient evaluation" if trace.count == 1 else
                       f"{trace.count} gradient evaluations at the same parameters")
        return results + [result("the ELBO rises", "fail", (
            f"the training never got past its first Adam step: the script stopped ({stopped}) "
            f"after {evaluations}, so no step could be judged" if stopped_early else
            "the parameters never changed: the loop does not update them"))], None
    before, after = judging_elbo(reference, trace.first, images), judging_elbo(reference, end,
                                                                                images)
    rose = after - before
    if rose >= MIN_RISE:
        results.append(result("the ELBO rises", "pass",
                              f"from {before:.1f} to {after:.1f} nats per image"))
    else:
        why = ("; the Adam step descends: the ELBO is maximised" if loop.variant == "descends"
               else "; the loop ascends the gradient it evaluates: is its objective the ELBO?"
               if loop.variant == "correct" and rose < 0 else "")
        measured = (f"the ELBO {'fell' if rose < 0 else 'rose only'} from {before:.1f} to "
                    f"{after:.1f} nats per image (expected a rise of at least {MIN_RISE:g}")
        results.append(result("the ELBO rises", "fail", (
            f"{stopped_after(stopped, loop, steps, ends_there)}: {measured} over the whole "
            "training)"
            if stopped_early else f"{measured})") + why))
    named = parameter_names(reference)
    status, message = adam_verdict(loop, rose > 0, named)
    problem = loop_problem(loop, initial, name, flat, ends_there, named, stopped)
    if problem is not None:
        status, message = "fail", problem if status == "pass" else f"{message}; {problem}"
    elif status == "pass":
        message = (f"{steps} bias-corrected Adam steps from the skeleton's initialisation "
                   f"(replayed on {len(trace.indices):,} parameters chosen at random); ")
        message += ("the same parameters as the reference's run: your numbers are comparable "
                    "with the reference table" if anp.allclose(flat, reference_run, rtol=1e-7,
                                                              atol=1e-9) else
                    "not the reference's parameters (another order of random draws, another "
                    "loop, or a function above that differs): fine, but compare your test ELBO "
                    "with the band, not number for number")
        message += f"; {stopped_after(stopped, loop, steps, ends_there)}" * stopped_early
    results.append(result("Adam and the loop", status, message))
    verified = status == "pass" and rose >= MIN_RISE       # what the figures are judged with
    return results, unflatten(anp.asarray(flat, dtype=float)) if verified else None
