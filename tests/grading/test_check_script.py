"""check.py's second part: the submission runs as a script on a subset of
MNIST, and its training loop and figures are judged. Each script is the
student solution of student_vae.py with one mistake of the assignment's list
(or one forgery of a training); the correct one and the project's own vae.py
must pass. The grader's replays of the reference run on private random
streams, and its replay of a loop's Adam steps, are tested in-process."""
import types
from pathlib import Path

import autograd
import autograd.numpy.random as npr
import numpy as np
import pytest
from autograd.misc import flatten

import check
from vaelib import networks
import vae
from graded import graded
from grader import training
from grader.script import GradientTrace


def initial_params(config, dtype, seed):
    """networks.initial_params with the skeleton's init_net_params, as vae.py passes it."""
    return networks.initial_params(config, dtype, seed, vae.init_net_params)

STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
OPTIONS = ["--import-timeout", "10", "--check-timeout", "10", "--memory", "2048"]
ADAM = "            flat_params = flat_params + 0.001 * mhat / (np.sqrt(vhat) + 1e-8)\n"
START = "    m, v, t = np.zeros(len(flat_params)), np.zeros(len(flat_params)), 1\n"
TRAIN = "    flat_params, elbos, _ = train(train_images)\n"
OUTPUT_BIAS = "207200:207984"      # the generator's last b in the flat vector
INITIALISE = ("    npr.seed(0)\n"
              "    flat_params, _ = flatten((init_net_params([50, 200, 200, 784]),\n"
              "                              init_net_params([784, 200, 200, 100])))\n")
# Binarised once per epoch: a correct loop whose random draws come in another order.
ONCE_PER_EPOCH = [("        on = x > npr.uniform(size=x.shape)\n",
                   "        on = x > uniforms[batch * batch_size:(batch + 1) * batch_size]\n"),
                  ("        elbo_est = 0\n",
                   "        elbo_est = 0\n"
                   "        uniforms = npr.uniform(size=train_images.shape)\n")]


def fake_training(steps):
    """A forgery: correct Adam steps of an objective that only pulls the output
    bias towards the logits of the pixel means (what no gradient of the ELBO tells)."""
    return (INITIALISE + "    means = np.clip(np.mean(train_images, axis=0), 0.01, 0.99)\n"
            "    target = np.log(means / (1 - means))\n"
            "    pull = grad(lambda p: -np.sum((p[207200:207984] - target) ** 2))\n"
            "    m, v, elbos = np.zeros(len(flat_params)), np.zeros(len(flat_params)), []\n"
            f"    for t in range(1, {steps + 1}):\n"
            "        g = pull(flat_params)\n"
            "        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g ** 2\n"
            "        mhat, vhat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)\n"
            "        flat_params = flat_params + 0.001 * mhat / (np.sqrt(vhat) + 1e-8)\n")


# name: (old, new, check, words in the message)
MISTAKES = {
    "adam_descends": (ADAM, ADAM.replace("+ 0.001", "- 0.001"), "the ELBO rises", "descends"),
    "second_moment_from_g4": ("(1 - 0.999) * g ** 2", "(1 - 0.999) * g ** 4",
                              "the ELBO rises", "g**4"),
    "bias_correction_from_t_0": (START, START.replace(", 1\n", ", 0\n"), "the ELBO rises",
                                 "t = 0"),
    "bias_correction_from_t_2": (START, START.replace(", 1\n", ", 2\n"), "Adam and the loop",
                                 "starts at t = 2"),
    "no_bias_correction": ("mhat, vhat = m / (1 - 0.9 ** t), v / (1 - 0.999 ** t)",
                           "mhat, vhat = m, v", "Adam and the loop", "not bias-corrected"),
    "another_initialisation": ("    npr.seed(seed)\n", "    npr.seed(seed + 1)\n",
                               "Adam and the loop", "does not start from the skeleton's "
                                                    "initialisation"),
    "never_updates": (ADAM, ADAM.replace("flat_params = ", "new_params = "), "the ELBO rises",
                      "never changed"),
    "no_prior_samples": ('    save_images(samples, "samples.png")\n', "", "25 prior samples",
                         "no save_images call with 25 images"),
    "no_reconstructions": ('    s_images(np.concatenate([test_images[:10], reconstructions]), '
                           '"reconstructions.png",\n             ims_per_row=10, vmin=0, vmax=1)\n',
                           "", "10 test images and their reconstructions", "not found"),
    "one_interpolation": ("for a, b in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:",
                          "for a, b in [(0, 1)]:", "five interpolations", "missing (2, 3)"),
    "interpolates_samples": ("ends = neural_net_predict(rec_params, test_images[[a, b]])[:, :50]",
                             "ends = sample_latent_variables_from_posterior("
                             "neural_net_predict(rec_params, test_images[[a, b]]))",
                             "five interpolations", "posterior samples"),
    "thirty_steps": ("np.linspace(0, 1, 25)", "np.linspace(0, 1, 30)", "five interpolations",
                     "30 frames instead of 25"),
}

# Trained parameters made without the loop the assignment asks for.
FORGERIES = {
    "output_bias_instead_of_training": (
        TRAIN, INITIALISE + f"    flat_params[{OUTPUT_BIAS}] = -2.0\n    elbos = []\n",
        "Adam and the loop", "never evaluated autograd's gradient at the parameters: it did "
                             "not train"),
    "pixel_mean_logits_instead_of_training": (
        TRAIN, INITIALISE + "    means = np.clip(np.mean(train_images, axis=0), 0.01, 0.99)\n"
                            f"    flat_params[{OUTPUT_BIAS}] = np.log(means / (1 - means))\n"
                            "    elbos = []\n",
        "Adam and the loop", "did not train"),
    "output_bias_set_after_the_loop": (TRAIN, TRAIN + f"    flat_params[{OUTPUT_BIAS}] = -2.0\n",
                                       "Adam and the loop", "changed after the loop's last step"),
    "adam_on_an_objective_that_is_not_the_elbo": (TRAIN, fake_training(60) + "    elbos = []\n",
                                                  "the ELBO rises", "rose only"),
    "more_steps_than_the_assignment": (TRAIN, fake_training(300) + "    elbos = []\n",
                                       "Adam and the loop", "the loop took 300 steps"),
}


def grade(tmp_path, name, source, *extra):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return graded(path, [*OPTIONS, *extra])


def part(report, tag):
    return {r["check"]: r for r in report["results"] if r["function"] == tag}


def edited(source, *changes):
    for old, new in changes:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


def test_a_correct_script_passes_as_a_whole(tmp_path):
    report = grade(tmp_path, "student", STUDENT)
    assert report["parts"] == {"functions": "pass", "script": "pass", "training": "pass",
                               "figures": "pass"}
    assert "comparable with the reference" in part(report, "(training)")["Adam and the loop"]["message"]


def test_the_reference_script_passes_as_a_whole():
    report = graded(check.PROJECT / "vae.py", OPTIONS)
    assert report["verdict"] == "pass", [r for r in report["results"] if r["status"] != "pass"]
    assert "comparable with the reference" in part(report, "(training)")["Adam and the loop"]["message"]


@pytest.mark.parametrize("name", MISTAKES)
def test_each_mistake_fails_with_a_message_naming_it(tmp_path, name):
    old, new, check_name, words = MISTAKES[name]
    report = grade(tmp_path, name, edited(STUDENT, (old, new)))
    results = {**part(report, "(training)"), **part(report, "(figures)")}
    assert results[check_name]["status"] == "fail", results[check_name]
    assert words in results[check_name]["message"]
    assert report["verdict"] == "fail" and report["parts"]["functions"] == "pass"


@pytest.mark.parametrize("name", FORGERIES)
def test_each_forged_training_fails_with_a_message_naming_it(tmp_path, name):
    old, new, check_name, words = FORGERIES[name]
    report = grade(tmp_path, name, edited(STUDENT, (old, new)))
    training_results = part(report, "(training)")
    assert training_results[check_name]["status"] == "fail", training_results[check_name]
    assert words in training_results[check_name]["message"]
    assert report["parts"]["training"] == "fail" and report["parts"]["functions"] == "pass"


def test_a_correct_loop_with_another_order_of_draws_passes_with_a_note(tmp_path):
    report = grade(tmp_path, "once_per_epoch", edited(STUDENT, *ONCE_PER_EPOCH))
    assert report["verdict"] == "pass", [r for r in report["results"] if r["status"] != "pass"]
    message = part(report, "(training)")["Adam and the loop"]["message"]
    assert "60 bias-corrected Adam steps" in message and "not the reference's parameters" in message


def test_a_bias_correction_from_t_2_fails_also_with_another_order_of_draws(tmp_path):
    source = edited(STUDENT, *ONCE_PER_EPOCH, (START, START.replace(", 1\n", ", 2\n")))
    report = grade(tmp_path, "once_per_epoch_from_t_2", source)
    adam = part(report, "(training)")["Adam and the loop"]
    assert adam["status"] == "fail" and "starts at t = 2" in adam["message"]


def test_the_figures_are_judged_with_the_trained_parameters_whatever_their_names(tmp_path):
    """The skeleton's name on an untrained vector that draws the figures: the
    trained one (where the loop ended) is judged, and the figures fail."""
    old = "    gen_params, rec_params = flatten(like)[1](flat_params)\n"
    new = (INITIALISE.replace("flat_params, _", "flattened_current_params, _")
           + "    gen_params, rec_params = flatten(like)[1](flattened_current_params)\n")
    report = grade(tmp_path, "untrained_figures", edited(STUDENT, (old, new)))
    assert report["parts"]["training"] == "pass"
    assert part(report, "(training)")["trained parameters found"]["message"].startswith(
        "flat_params (where the loop's last step left it)")
    figures = part(report, "(figures)")
    assert figures["10 test images and their reconstructions"]["status"] == "fail"
    assert figures["five interpolations"]["status"] == "fail"


def test_a_script_that_cannot_run_on_the_data_gets_one_message_and_its_function_verdicts(tmp_path):
    source = STUDENT.replace("    N, train_images, _, test_images, _ = load_mnist()\n",
                             "    N, train_images, _, test_images, _ = load_mnist()\n"
                             "    extra = open('/data/fashion-mnist.npz', 'rb').read()\n")
    report = grade(tmp_path, "reads_other_files", source)
    ran = part(report, "(script)")["runs as a script"]
    assert ran["status"] == "error" and "the script stopped" in ran["message"]
    assert "without downloading" in ran["message"]
    assert report["parts"]["functions"] == "pass" and report["verdict"] == "fail"


def test_functions_only_skips_the_script(tmp_path):
    report = grade(tmp_path, "student", STUDENT, "--functions-only")
    assert set(report["parts"]) == {"functions"} and report["verdict"] == "pass"


# ---- The reference's run on private streams, bit for bit ----------------------------------

@pytest.fixture(scope="module")
def train_subset(mnist):
    return mnist[1][:training.TRAIN_IMAGES]


def test_the_privately_drawn_initialisation_is_the_skeletons():
    expected = initial_params(training.assignment_config(vae), "float64", training.SEED)
    got = training.initial_params(vae)
    assert all(np.array_equal(a, b) for a, b in zip(flatten(expected)[0], flatten(got)[0]))
    assert [[(W.shape, b.shape) for W, b in net] for net in got] == \
        [[(W.shape, b.shape) for W, b in net] for net in expected]


def test_the_skeleton_run_on_a_private_stream_is_the_global_ones_and_leaves_it(train_subset):
    """One epoch (two steps) of the skeleton's loop drawn from the global
    stream, as a skeleton-shaped script draws, against training.skeleton_run."""
    gen_params, rec_params = initial_params(training.assignment_config(vae), "float64",
                                                training.SEED)
    flat, unflatten = flatten((gen_params, rec_params))

    def objective(flat_params, batch):
        x = train_subset[batch * 200:(batch + 1) * 200]
        binary = (x > npr.uniform(size=x.shape)).astype(float)
        return vae.vae_lower_bound(*unflatten(flat_params), binary)
    m, v = np.zeros(len(flat)), np.zeros(len(flat))
    for t, batch in enumerate((0, 1), 1):
        step, m, v = training.adam_update(autograd.grad(objective)(flat, batch), m, v, t)
        flat = flat + step
        objective(flat, batch)
    state = npr.get_state()[1].copy()
    assert np.array_equal(training.skeleton_run(vae, train_subset, epochs=1), flat)
    assert np.array_equal(npr.get_state()[1], state)


# ---- Following a loop's Adam steps ------------------------------------------------------

def moments(gradients, power=2):
    """Adam's m and v after these gradients, written out as the sums they are."""
    t = len(gradients)
    weights = np.arange(t - 1, -1, -1)
    return (0.1 * 0.9 ** weights @ gradients, 0.001 * 0.999 ** weights @ gradients ** power)


# name: (the step after t gradients, the step follow() names); written here, not from training.py
STEP_RULES = {
    "Kingma & Ba": (lambda gs, t: 1e-3 * (moments(gs)[0] / (1 - 0.9 ** t)) / (
        np.sqrt(moments(gs)[1] / (1 - 0.999 ** t)) + 1e-8), "correct"),
    "eps inside the square root": (lambda gs, t: 1e-3 * (moments(gs)[0] / (1 - 0.9 ** t)) / np.sqrt(
        moments(gs)[1] / (1 - 0.999 ** t) + 1e-8), "correct"),
    "eps before the correction": (lambda gs, t: 1e-3 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
                                  * moments(gs)[0] / (np.sqrt(moments(gs)[1]) + 1e-8), "correct"),
    "descends": (lambda gs, t: -1e-3 * (moments(gs)[0] / (1 - 0.9 ** t)) / (
        np.sqrt(moments(gs)[1] / (1 - 0.999 ** t)) + 1e-8), "descends"),
    "g**4": (lambda gs, t: 1e-3 * (moments(gs)[0] / (1 - 0.9 ** t)) / (
        np.sqrt(moments(gs, 4)[1] / (1 - 0.999 ** t)) + 1e-8), "fourth power"),
    "t from 2": (lambda gs, t: 1e-3 * (moments(gs)[0] / (1 - 0.9 ** (t + 1))) / (
        np.sqrt(moments(gs)[1] / (1 - 0.999 ** (t + 1))) + 1e-8), "t from 2"),
    "no bias correction": (lambda gs, t: 1e-3 * moments(gs)[0] / (np.sqrt(moments(gs)[1]) + 1e-8),
                           "no bias correction"),
    "step size 2e-3": (lambda gs, t: 2e-3 * (moments(gs)[0] / (1 - 0.9 ** t)) / (
        np.sqrt(moments(gs)[1] / (1 - 0.999 ** t)) + 1e-8), None),
}


def synthetic_trace(rule, steps=30, width=256, seed=0):
    """A loop of `steps` steps of rule on `width` parameters, with gradients
    of 0.01 to 1 that drift, as training.Trace (every coordinate followed)."""
    rs = np.random.RandomState(seed)
    scales = 10 ** rs.uniform(-2, 0, width)
    gradients = scales * (rs.randn(steps, width) + 0.5)
    points = [0.01 * rs.randn(width)]
    for t in range(1, steps):
        points.append(points[-1] + rule(gradients[:t], t))
    points = np.array(points)
    return training.Trace(steps, points[0], points[-1], np.arange(width), points, gradients)


@pytest.mark.parametrize("name", STEP_RULES)
def test_the_loops_adam_step_is_named(name):
    rule, expected = STEP_RULES[name]
    loop = training.follow(synthetic_trace(rule))
    assert loop.variant == expected
    if expected is None:
        assert "every parameter moved 2 times as far" in training.adam_verdict(
            loop, True, str)[1]


def test_a_repeated_gradient_evaluation_is_not_a_step():
    """A loop that also evaluates the gradient at the parameters it reached
    (the epoch's estimate) before the next step's gradient."""
    rule = STEP_RULES["Kingma & Ba"][0]
    trace = synthetic_trace(rule)
    twice = np.repeat(trace.points, 2, axis=0)
    noise = np.random.RandomState(5).randn(*twice.shape)
    gradients = np.repeat(trace.gradients, 2, axis=0)
    gradients[0::2] += noise[0::2]                    # the estimate's: another sample
    loop = training.follow(trace._replace(count=len(twice), points=twice, gradients=gradients))
    assert loop.variant == "correct" and loop.replay.steps == len(trace.points) - 1


@pytest.mark.parametrize("t", [1, 2, 10, 60, 1000])
def test_no_adam_step_is_longer_than_max_step_which_is_reached(t):
    rs = np.random.RandomState(t)
    a = 0.1 * 0.9 ** np.arange(t - 1, -1, -1) / (1 - 0.9 ** t)
    c = 0.001 * 0.999 ** np.arange(t - 1, -1, -1) / (1 - 0.999 ** t)

    def ratio(gs):
        return np.abs(gs @ a) / np.sqrt(gs ** 2 @ c)
    heavy_tailed = rs.standard_cauchy((10000, t)) * (rs.uniform(size=(10000, t)) < 0.3)
    heavy_tailed = heavy_tailed[np.any(heavy_tailed != 0, axis=1)]     # sparse, not empty
    assert np.max(ratio(heavy_tailed)) <= training.max_step(t) * (1 + 1e-12)
    # Cauchy-Schwarz is an equality for g_i proportional to a_i / c_i.
    assert ratio((a / c)[None]) == pytest.approx(training.max_step(t), rel=1e-12)


# ---- A real loop, recorded in-process as the worker records it ----------------------------

def recorded_train(train_images, followed, changes=(), **extra):
    """student_vae.train with changes, its gradient evaluations recorded as
    grader/script.py records them. -> (final flat parameters, training.Trace)."""
    size = networks.count_params(training.assignment_config(vae))
    student = types.ModuleType("student")
    student.__dict__.update(extra)
    exec(compile(edited(STUDENT, *changes), "student_vae.py", "exec"), student.__dict__)
    trace = GradientTrace(size, followed, flatten)
    student.grad = trace.operator(autograd.grad, False)
    flat = student.train(train_images)[0]
    out = []
    return flat, training.read_trace(trace.answer(out), out, followed, size)


def test_a_change_between_steps_away_from_the_followed_parameters_is_caught(train_subset):
    """A forger who knows which parameters are followed sets the other output
    biases to -2 half-way: the steps replayed match, the reach does not."""
    followed = np.random.RandomState(0).choice(425284, training.TRACED, replace=False)
    bias = np.arange(207200, 207984)
    change = ("            t += 1\n", "            t += 1\n            if t == 30:\n"
                                      "                flat_params[OTHERS] = -2.0\n")
    flat, trace = recorded_train(train_subset, followed, [change],
                                 OTHERS=bias[~np.isin(bias, followed)])
    state = npr.get_state()[1].copy()
    results, model = training.judge_training({"flat_params": flat}, trace, train_subset, vae,
                                             np.zeros_like(flat))
    adam = {r["check"]: r for r in results}["Adam and the loop"]
    assert adam["status"] == "fail" and "changed between the loop's steps" in adam["message"]
    assert "of the generator's layer 3" in adam["message"] and model is None
    assert np.array_equal(npr.get_state()[1], state)       # the grader's own draws are private


@pytest.mark.parametrize("operator, returns_value", [(autograd.grad, False),
                                                     (autograd.value_and_grad, True)])
@pytest.mark.parametrize("as_lists", [False, True])
def test_gradient_evaluations_at_the_parameters_are_recorded(operator, returns_value, as_lists):
    """Of a function of the flat vector, or of the networks' (W, b) lists; the
    parameters are copied (a loop may update them in place); other calls are not followed."""
    params = training.initial_params(vae)
    flat, unflatten = flatten(params)
    followed = np.random.RandomState(0).choice(len(flat), 64, replace=False)
    trace = GradientTrace(len(flat), followed, flatten)
    weights = np.random.RandomState(1).randn(len(flat))

    def objective(p):
        return np.sum(weights * flatten(p)[0] ** 2) if as_lists else np.sum(weights * p ** 2)
    gradient = trace.operator(operator, returns_value)(objective)
    argument = params if as_lists else flat.copy()
    gradient(argument)
    if not as_lists:
        argument += 1.0                                     # an in-place step
    gradient(argument)
    trace.operator(operator, returns_value)(lambda x: np.sum(x ** 2))(flat[:10])   # not them
    out = []
    recorded = training.read_trace(trace.answer(out), out, followed, len(flat))
    assert recorded.count == 2 and np.array_equal(recorded.first, flat)
    assert np.array_equal(recorded.gradients[0], (2 * weights * flat)[followed])
    assert np.array_equal(recorded.last, flat + (0.0 if as_lists else 1.0))


def test_a_long_loop_keeps_fewer_coordinates_and_the_grader_reads_them(monkeypatch):
    monkeypatch.setattr("grader.script.TRACE_BUDGET", 64)
    size, followed = 100, np.arange(99, 83, -1)              # 16 coordinates asked for
    trace = GradientTrace(size, followed, flatten)
    gradient = trace.operator(autograd.grad, False)(lambda p: np.sum(p ** 3))
    points = [np.full(size, float(k)) + np.arange(size) for k in range(10)]
    for point in points:
        gradient(point)
    out = []
    recorded = training.read_trace(trace.answer(out), out, followed, size)
    assert recorded.points.shape == (10, 4) and np.array_equal(recorded.indices, followed[:4])
    assert np.array_equal(recorded.points, np.array(points)[:, followed[:4]])
