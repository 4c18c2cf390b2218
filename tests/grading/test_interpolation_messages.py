"""The messages of the figure checks for interpolations that are not the
assignment's (issue 26, cases 2 and 6): what was found (frames, how they were
saved, which decoded means are at the ends, which frames are on the line
between the encoder means and at which s), and a cause only where its own
signature is measured (logits whose sigmoid is the figure, posterior samples
at the ends, fresh posterior noise in each frame).

The model is the skeleton's run on the grader's subset, as in
test_figures_check.py, whose helpers build the calls; two files are graded
end to end as check.py grades them."""
from pathlib import Path

import numpy as np
import pytest

from graded import graded
from test_figures_check import (INTERPOLATIONS, LATENT_DIM, PAIRS, PRIOR, RECONSTRUCTIONS,
                                correct_calls, decode, encoder, interpolation,
                                interpolation_calls, judged, model, replaced)
import vae

__all__ = ["model"]   # the trained model, a fixture of test_figures_check.py
STUDENT = (Path(__file__).resolve().parents[1] / "student_vae.py").read_text()
LOOP = ("        z = np.array([s * ends[0] + (1 - s) * ends[1] "
        "for s in np.linspace(0, 1, 25)])\n")
SAMPLES = "posterior samples"


def logits_of(model, z):
    return vae.neural_net_predict(model[0], z)


def interpolations_verdict(model, calls):
    return judged(correct_calls(model)[:2] + calls, model, INTERPOLATIONS)


# ---- Case 2: files that use the means, told what was found --------------------------

def test_one_call_per_frame_of_30_steps_says_so(model):
    frames = interpolation(model, 0, 1, steps=30)
    verdict = interpolations_verdict(model, [(f[None], "interpolation.png", {}) for f in frames])
    assert verdict["status"] == "fail"
    assert verdict["message"] == (
        "found no interpolation; missing (0, 1), (2, 3), (4, 5), (6, 7), (8, 9); "
        "(0, 1): 30 frames instead of 25 (interpolation.png, saved by 30 calls of one image "
        "each): all 30 on the line between the two encoder means, at s = linspace(0, 1, 30)")


def test_frames_saved_inside_the_loop_are_read_as_the_last_call(model):
    # each call holds the frames so far: the 25th is near, not at, a decoded
    # mean, which was taken for posterior samples at the ends
    frames = interpolation(model, 0, 1, steps=30)
    calls = [(frames[:k], "interpolation.png", {}) for k in range(1, 31)]
    verdict = interpolations_verdict(model, calls)
    assert verdict["status"] == "fail"
    assert SAMPLES not in verdict["message"]
    assert verdict["message"].endswith(
        "(0, 1): 30 frames instead of 25 (interpolation.png, saved 30 times, each call "
        "repeating the frames before): all 30 on the line between the two encoder means, "
        "at s = linspace(0, 1, 30)")


def test_the_right_frames_one_per_call_are_named_but_fail(model):
    frames = interpolation(model, 0, 1)
    calls = [(f[None], f"frame_{k}.png", {}) for k, f in enumerate(frames)]
    verdict = interpolations_verdict(model, calls + interpolation_calls(model, PAIRS[1:]))
    assert verdict["status"] == "fail"
    assert verdict["message"] == (
        "found interpolations for (2, 3), (4, 5), (6, 7), (8, 9); missing (0, 1); (0, 1): "
        "the 25 frames are right but saved by 25 calls of one image each (frame_0.png): save "
        "each interpolation in one call")


def index_instead_of_s(model, a, b):
    """s z_a + (1 - i) z_b, i the frame's index: the student's loop variable."""
    z_a, z_b = encoder(model, model[2][[a, b]])[0]
    return decode(model, np.array([s * z_a + (1 - i) * z_b
                                   for i, s in enumerate(np.linspace(0, 1, 25))]))


def test_the_loop_index_instead_of_s_is_described_not_called_posterior_samples(model):
    calls = [(index_instead_of_s(model, a, b), f"interpolation_{a}_{b}.png", {})
             for a, b in PAIRS]
    verdict = interpolations_verdict(model, calls)
    assert verdict["status"] == "fail"
    assert SAMPLES not in verdict["message"]
    assert verdict["message"].startswith(
        "found no interpolation; missing (0, 1), (2, 3), (4, 5), (6, 7), (8, 9); "
        "(0, 1), (2, 3), (4, 5), (6, 7), (8, 9): 25 frames; the first frame is the decoded "
        "mean of the pair's second image, the last frame is near, not at, a decoded mean; "
        "frames 1 to 24 are not on the straight line between the two encoder means (")
    assert "times the posterior spread from the nearest decoding of it)" in verdict["message"]


def test_frames_on_the_line_at_other_steps_say_where(model):
    # the first 25 of 30 steps, in one call: s from 0 to 24/29
    frames = interpolation(model, 0, 1, steps=30)[:25]
    verdict = interpolations_verdict(model, [(frames, "interpolation.png", {})])
    assert SAMPLES not in verdict["message"]
    assert verdict["message"].endswith(
        "(0, 1): 25 frames; the first frame is the decoded mean of the pair's first image, the "
        "last frame is near, not at, a decoded mean; all 25 on the line between the two "
        "encoder means, at s from 0 to 0.828 in steps of 0.0345")


def test_posterior_samples_at_the_ends_are_still_named(model):
    rs = np.random.RandomState(1)
    calls = []
    for a, b in PAIRS:
        mean, log_std = encoder(model, model[2][[a, b]])
        ends = mean + np.exp(log_std) * rs.randn(*mean.shape)
        calls += interpolation_calls(model, [(a, b)], ends=ends)
    verdict = interpolations_verdict(model, calls)
    assert verdict["message"].endswith(
        "(0, 1), (2, 3), (4, 5), (6, 7), (8, 9) in interpolation_0_1.png, interpolation_2_3.png, "
        "interpolation_4_5.png, interpolation_6_7.png, interpolation_8_9.png: the end frames "
        "are not the decoded encoder means: it looks like posterior samples were interpolated "
        "(use the recognition model's means)")


# ---- Case 6: fresh posterior noise in each frame; logits ------------------------------

def fresh_noise(model, a, b, rs):
    """Each frame decoded from a sample of q interpolated: mean and log-std."""
    (m_a, m_b), (l_a, l_b) = encoder(model, model[2][[a, b]])
    s = np.linspace(0, 1, 25)[:, None]
    mean, log_std = (1 - s) * m_a + s * m_b, (1 - s) * l_a + s * l_b
    return decode(model, mean + np.exp(log_std) * rs.randn(*mean.shape))


@pytest.mark.parametrize("seed", range(3))
def test_fresh_posterior_noise_in_each_frame_is_named(model, seed):
    rs = np.random.RandomState(seed)
    calls = [(fresh_noise(model, a, b, rs), f"interpolation_{a}_{b}.png", {}) for a, b in PAIRS]
    verdict = interpolations_verdict(model, calls)
    assert verdict["status"] == "fail"
    assert verdict["message"].startswith(
        "found no interpolation; missing (0, 1), (2, 3), (4, 5), (6, 7), (8, 9); (0, 1), (2, 3), "
        "(4, 5), (6, 7), (8, 9) in interpolation_0_1.png, ")
    assert ("times the posterior spread from the decoded line between the encoder means, as "
            "posterior samples are, but consecutive frames differ as much as separate samples: "
            "each frame is decoded from a fresh posterior sample: decode the interpolated means "
            "themselves") in verdict["message"]


def test_the_prior_samples_figure_is_not_taken_for_fresh_noise(model):
    verdict = interpolations_verdict(model, [])
    assert verdict["message"] == ("found no interpolation; "
                                  "missing (0, 1), (2, 3), (4, 5), (6, 7), (8, 9)")


def test_interpolations_saved_as_logits_are_named(model):
    calls = []
    for a, b in PAIRS:
        z_a, z_b = encoder(model, model[2][[a, b]])[0]
        s = np.linspace(0, 1, 25)[:, None]
        calls.append((logits_of(model, (1 - s) * z_a + s * z_b), f"i_{a}_{b}.png", {}))
    verdict = interpolations_verdict(model, calls)
    assert verdict["message"] == (
        "found no interpolation; missing (0, 1), (2, 3), (4, 5), (6, 7), (8, 9); (0, 1), (2, 3), "
        "(4, 5), (6, 7), (8, 9): values outside [0, 1]: these are logits: apply the sigmoid "
        "(the Bernoulli means)")


def test_prior_samples_saved_as_logits_are_named(model):
    logits = logits_of(model, np.random.RandomState(1).randn(25, LATENT_DIM))
    verdict = judged(replaced(correct_calls(model), 0, logits), model, PRIOR)
    assert verdict["status"] == "fail"
    assert verdict["message"] == ("samples_from_prior.png: values outside [0, 1]: these are "
                                  "logits: apply the sigmoid (the Bernoulli means)")


def test_values_outside_the_unit_interval_that_are_not_logits_are_described(model):
    images = 2 * correct_calls(model)[0][0]
    verdict = judged(replaced(correct_calls(model), 0, images), model, PRIOR)
    assert verdict["status"] == "fail"
    assert "values outside [0, 1] (from " in verdict["message"]
    assert "not Bernoulli means, and their sigmoid does not pass either" in verdict["message"]


def test_reconstructions_saved_as_logits_are_named(model):
    mean, log_std = encoder(model, model[2][:10])
    z = mean + np.exp(log_std) * np.random.RandomState(1).randn(*mean.shape)
    images = np.concatenate([model[2][:10], logits_of(model, z)])
    verdict = judged(replaced(correct_calls(model), 1, images), model, RECONSTRUCTIONS)
    assert verdict["status"] == "fail"
    assert verdict["message"] == ("reconstructions.png (after the originals): reconstructions "
                                  "with values outside [0, 1]: these are logits: apply the "
                                  "sigmoid (the Bernoulli means)")


# ---- End to end: the message a student reads ------------------------------------------

def test_a_script_saving_inside_its_loop_is_told_what_was_found(tmp_path):
    loop = ("    for a, b in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]:\n"
            "        ends = neural_net_predict(rec_params, test_images[[a, b]])[:, :50]\n"
            + LOOP +
            "        save_images(sigmoid(neural_net_predict(gen_params, z)), "
            "f\"interpolation_{a}_{b}.png\")\n")
    saving_inside = ("    ends = neural_net_predict(rec_params, test_images[[0, 1]])[:, :50]\n"
                     "    frames = []\n"
                     "    for s in np.linspace(0, 1, 30):\n"
                     "        frames.append(sigmoid(neural_net_predict(gen_params, "
                     "s * ends[0] + (1 - s) * ends[1])))\n"
                     "        save_images(np.array(frames), \"interpolation.png\")\n")
    assert STUDENT.count(loop) == 1
    path = tmp_path / "saves_inside_the_loop.py"
    path.write_text(STUDENT.replace(loop, saving_inside))
    report = graded(path, [])
    figures = {r["check"]: r for r in report["results"] if r["function"] == "(figures)"}
    assert [figures[c]["status"] for c in (PRIOR, RECONSTRUCTIONS)] == ["pass", "pass"]
    assert figures[INTERPOLATIONS]["status"] == "fail"
    assert figures[INTERPOLATIONS]["message"] == (
        "found no interpolation; missing (0, 1), (2, 3), (4, 5), (6, 7), (8, 9); (0, 1): 30 "
        "frames instead of 25 (interpolation.png, saved 30 times, each call repeating the "
        "frames before): all 30 on the line between the two encoder means, at "
        "s = linspace(0, 1, 30)")
    assert report["parts"]["training"] == "pass" and report["parts"]["functions"] == "pass"


def test_a_script_using_the_loop_index_is_told_what_was_found(tmp_path):
    assert STUDENT.count(LOOP) == 1
    path = tmp_path / "loop_index.py"
    path.write_text(STUDENT.replace(LOOP, LOOP.replace(
        "(1 - s) * ends[1] for s in", "(1 - i) * ends[1] for i, s in enumerate(").replace(
        "25)])", "25))])")))
    report = graded(path, [])
    message = next(r["message"] for r in report["results"] if r["check"] == INTERPOLATIONS)
    assert SAMPLES not in message
    assert ("(0, 1), (2, 3), (4, 5), (6, 7), (8, 9): 25 frames; the first frame is the decoded "
            "mean of the pair's second image") in message
    assert "frames 1 to 24 are not on the straight line between the two encoder means" in message


def test_every_frame_saved_by_a_call_of_its_own_is_recorded(tmp_path):
    # 125 calls of one image for the five interpolations, after the two other figures:
    # all are recorded (the recorder's budget is in numbers, not calls), so all five
    # pairs are named, not the first 98 frames' four.
    assert STUDENT.count(LOOP) == 1
    one_per_call = LOOP + ("        for k, frame in enumerate(sigmoid(neural_net_predict("
                           "gen_params, z))):\n"
                           "            save_images(frame[None], f\"frame_{a}_{b}_{k}.png\")\n"
                           "        continue\n")
    path = tmp_path / "one_frame_per_call.py"
    path.write_text(STUDENT.replace(LOOP, one_per_call))
    report = graded(path, [])
    message = next(r["message"] for r in report["results"] if r["check"] == INTERPOLATIONS)
    for a, b in PAIRS:
        assert (f"the 25 frames are right but saved by 25 calls of one image each "
                f"(frame_{a}_{b}_0.png)") in message
