"""figures_check.judge_figures on the save_images calls of a run: the reference's
figures pass, each common mistake fails the check of its figure.

The parameters are those of the skeleton's run on the grader's subset (the
first 300 training images, 30 epochs of batches of 200: 60 Adam steps), the
calls are built as vae.write_figures builds them, with noise from
numpy.random.RandomState.
"""
import re

import autograd.numpy.random as npr
import numpy as np
import pytest

from grader import figures as figures_check
from grader import pixels, prior
import loops
import vae

TRAIN_IMAGES, TEST_IMAGES, EPOCHS, BATCH_SIZE, LEARNING_RATE = 300, 100, 30, 200, 1e-3
LATENT_DIM = 50
GEN_SIZES, REC_SIZES = [LATENT_DIM, 200, 200, 784], [784, 200, 200, 2 * LATENT_DIM]
PAIRS = figures_check.INTERPOLATION_PAIRS
PRIOR, RECONSTRUCTIONS, INTERPOLATIONS = ("25 prior samples",
                                          "10 test images and their reconstructions",
                                          "five interpolations")


@pytest.fixture(scope="module")
def model(mnist):
    """(gen_params, rec_params, test_images) after the skeleton's run on the subset."""
    npr.seed(0)
    gen_params = vae.init_net_params(GEN_SIZES)
    rec_params = vae.init_net_params(REC_SIZES)
    (gen_params, rec_params), _ = loops.train(loops.SKELETON, gen_params, rec_params,
                                              mnist[1][:TRAIN_IMAGES], EPOCHS, BATCH_SIZE,
                                              LEARNING_RATE)
    return gen_params, rec_params, mnist[3][:TEST_IMAGES]


@pytest.fixture(scope="module")
def longer_run(mnist):
    """gen_params of the same run trained for 60 epochs instead of 30: the same
    model after 60 more Adam steps, better trained, nearest to the student's."""
    npr.seed(0)
    gen_params = vae.init_net_params(GEN_SIZES)
    rec_params = vae.init_net_params(REC_SIZES)
    return loops.train(loops.SKELETON, gen_params, rec_params, mnist[1][:TRAIN_IMAGES],
                       2 * EPOCHS, BATCH_SIZE, LEARNING_RATE)[0][0]


# ---- The reference's figures (vae.write_figures), piece by piece ------------------

def decode(model, z):
    return vae.sigmoid(vae.neural_net_predict(model[0], z))


def encoder(model, images):
    """-> mean, log_std of q(z|x) for each image."""
    return vae.unpack_gaussian_params(vae.neural_net_predict(model[1], images))


def prior_call(model, rs):
    images = decode(model, rs.randn(25, LATENT_DIM))
    return images, "samples_from_prior.png", {"vmin": 0, "vmax": 1}


def posterior_reconstructions(model, rs):
    """Encode the first 10 test images, sample z, decode: (10, 784)."""
    mean, log_std = encoder(model, model[2][:10])
    return decode(model, mean + np.exp(log_std) * rs.randn(*mean.shape))


def reconstruction_call(originals, reconstructions):
    return (np.concatenate([originals, reconstructions]), "reconstructions.png",
            {"ims_per_row": len(originals), "vmin": 0, "vmax": 1})


def interpolation(model, a, b, steps=25, ends=None):
    """Frames (1 - s) z_a + s z_b decoded; z_a, z_b the encoder means unless given."""
    z_a, z_b = encoder(model, model[2][[a, b]])[0] if ends is None else ends
    s = np.linspace(0, 1, steps)[:, None]
    return decode(model, (1 - s) * z_a + s * z_b)


def interpolation_calls(model, pairs=PAIRS, **options):
    return [(interpolation(model, a, b, **options), f"interpolation_{a}_{b}.png",
             {"vmin": 0, "vmax": 1}) for a, b in pairs]


def correct_calls(model, seed=0):
    rs = np.random.RandomState(seed)
    prior = prior_call(model, rs)   # drawn first, as write_figures does
    return ([prior, reconstruction_call(model[2][:10], posterior_reconstructions(model, rs))]
            + interpolation_calls(model))


def judged(calls, model, check):
    results = figures_check.judge_figures(calls, model[0], model[1], model[2], vae)
    return next(r for r in results if r["check"] == check)


def replaced(calls, index, images):
    calls = list(calls)
    calls[index] = (images,) + calls[index][1:]
    return calls


# ---- The reference's figures pass --------------------------------------------------

def test_the_reference_figures_pass_all_three_checks(model):
    results = figures_check.judge_figures(correct_calls(model), *model, vae)
    assert [(r["function"], r["check"], r["status"]) for r in results] == [
        ("(figures)", check, "pass") for check in (PRIOR, RECONSTRUCTIONS, INTERPOLATIONS)]


def test_images_of_28_by_28_in_float32_pass(model):
    calls = [(np.asarray(images, dtype=np.float32).reshape(-1, 28, 28), filename, kwargs)
             for images, filename, kwargs in correct_calls(model)]
    results = figures_check.judge_figures(calls, *model, vae)
    assert [r["status"] for r in results] == ["pass"] * 3


# ---- 1. Samples from the prior -------------------------------------------------------

def test_binarised_prior_samples_fail(model):
    calls = correct_calls(model)
    means = calls[0][0]
    binary = (means > np.random.RandomState(1).uniform(size=means.shape)).astype(float)
    verdict = judged(replaced(calls, 0, binary), model, PRIOR)
    assert verdict["status"] == "fail"
    assert "binary (0/1)" in verdict["message"] and "Bernoulli means" in verdict["message"]


def test_logits_instead_of_means_fail(model):
    calls = correct_calls(model)
    logits = vae.neural_net_predict(model[0], np.random.RandomState(1).randn(25, LATENT_DIM))
    verdict = judged(replaced(calls, 0, logits), model, PRIOR)
    assert verdict["status"] == "fail"
    assert "values outside [0, 1]: these are logits: apply the sigmoid" in verdict["message"]


def test_no_prior_figure_fails_though_interpolations_have_25_frames(model):
    verdict = judged(correct_calls(model)[1:], model, PRIOR)
    assert verdict["status"] == "fail"
    assert "no save_images call with 25 images" in verdict["message"]


def test_test_images_shown_as_prior_samples_fail(model):
    calls = replaced(correct_calls(model), 0, model[2][10:35])
    verdict = judged(calls, model, PRIOR)
    assert verdict["status"] == "fail" and "test images" in verdict["message"]


# ---- 1b. Prior samples are decodings of the trained model -----------------------------

def reported_ratio(message):
    """The N of "image k is N times as far" in a verdict."""
    return float(re.search(r"image \d+ is (\d+) times as far", message).group(1))


def prior_verdict(model, images):
    return judged(replaced(correct_calls(model), 0, images), model, PRIOR)


def decodings_of(gen_params, seed=1):
    """25 images sigmoid(decoder(z)) of any generator, z ~ N(0, I)."""
    z = np.random.RandomState(seed).randn(25, LATENT_DIM)
    return vae.sigmoid(vae.neural_net_predict(gen_params, z))


def assert_not_decodings(verdict):
    assert verdict["status"] == "fail"
    assert "the 25 images are not decodings of your trained model" in verdict["message"]
    assert ("were they drawn as noise, before training or with other parameters?"
            in verdict["message"])
    assert reported_ratio(verdict["message"]) > prior.PRIOR_RATIO


def assert_copies(verdict, copies):
    assert verdict["status"] == "fail"
    assert ("decodings of your trained model but not 25 samples: " + copies) in verdict["message"]
    assert "draw a new z ~ N(0, I) for each image" in verdict["message"]


@pytest.mark.parametrize("seed", range(1, 6))
def test_prior_samples_pass_whatever_the_noise(model, seed):
    images = prior_call(model, np.random.RandomState(seed))[0]
    verdict = prior_verdict(model, images)
    assert verdict["status"] == "pass"
    assert verdict["message"].endswith("25 Bernoulli means, decodings of your trained model")


def test_a_sample_far_from_every_bank_decoding_passes_by_the_fit(model):
    # About 1 prior sample in 140 is more than PRIOR_RATIO scales from its
    # nearest of the 4000 decodings (z far out in 50 dimensions); fitting z
    # from there brings it back (this one from 101 to 0.5; the numbers are at
    # grader/prior.py's PRIOR_RATIO).
    bank = prior.Prior(model[0], vae)
    z = np.random.RandomState(0).randn(3000, LATENT_DIM)
    nearest = bank.nearest(pixels.logits(decode(model, z)))[0] / bank.scale
    far = z[np.argmax(nearest)]
    assert nearest.max() > prior.PRIOR_RATIO
    others = np.random.RandomState(1).randn(24, LATENT_DIM)
    images = decode(model, np.concatenate([far[None], others]))
    assert prior_verdict(model, images)["status"] == "pass"


def test_uniform_noise_fails(model):
    assert_not_decodings(prior_verdict(model, np.random.RandomState(1).uniform(size=(25, 784))))


def test_decodings_of_the_untrained_model_fail(model):
    npr.seed(0)     # the skeleton's initialisation: generator first, scale 1e-2
    initial = vae.init_net_params(GEN_SIZES)
    images = decodings_of(initial)
    assert np.abs(images - 0.5).max() < 0.05    # about 0.5 everywhere
    assert_not_decodings(prior_verdict(model, images))


def test_training_images_fail(model, mnist):
    assert_not_decodings(prior_verdict(model, mnist[1][:25]))


def test_decodings_of_a_better_trained_model_fail(model, longer_run):
    assert_not_decodings(prior_verdict(model, decodings_of(longer_run)))


def test_one_decoding_repeated_fails(model):
    images = np.repeat(decode(model, np.random.RandomState(1).randn(1, LATENT_DIM)), 25, axis=0)
    assert_copies(prior_verdict(model, images), "all 25 are one image")


def test_the_decoded_mean_image_repeated_fails(model):
    images = np.repeat(decode(model, np.zeros((1, LATENT_DIM))), 25, axis=0)
    assert_copies(prior_verdict(model, images), "all 25 are one image")


def test_without_parameters_prior_samples_are_not_compared_with_the_model(model):
    noise = np.random.RandomState(1).uniform(size=(25, 784))
    calls = replaced(correct_calls(model), 0, noise)
    verdict = figures_check.judge_figures(calls, None, None, model[2], vae)[0]
    assert verdict["status"] == "pass"
    assert verdict["message"].endswith("the trained parameters were not found, so the samples "
                                       "could not be compared with the model")


def test_parameters_that_decode_to_nan_leave_the_samples_unjudged(model):
    gen_params = [(W.copy(), b.copy()) for W, b in model[0]]
    gen_params[-1][1][0] = np.nan
    verdict = figures_check.judge_figures(correct_calls(model), gen_params, model[1], model[2],
                                          vae)[0]
    assert verdict["status"] == "pass"
    assert verdict["message"].endswith("the trained parameters do not decode (ValueError: they "
                                       "decode to NaN or inf), so the samples could not be "
                                       "compared with the model")


def test_decoder_jacobian_equals_the_network_and_central_differences(model):
    z = np.random.RandomState(0).randn(3, LATENT_DIM)
    logits, jacobian = prior.decoder_jacobian(model[0], z)
    assert np.allclose(logits, vae.neural_net_predict(model[0], z), rtol=0, atol=1e-12)
    h = 1e-6     # the network is piecewise linear: only round-off, about 1e-16 / h
    steps = h * np.eye(LATENT_DIM)
    central = np.stack([(vae.neural_net_predict(model[0], z + step)
                         - vae.neural_net_predict(model[0], z - step)) / (2 * h)
                        for step in steps], axis=1)
    assert np.allclose(jacobian, central, rtol=0, atol=1e-7)


def test_judging_leaves_the_global_random_stream_alone(model):
    # check.py grades files in parallel threads: the grader's draws are private
    before = np.random.get_state()
    figures_check.judge_figures(correct_calls(model), *model, vae)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1])
    assert before[2:] == after[2:]


# ---- 2. Reconstructions --------------------------------------------------------------

def test_missing_originals_fail(model):
    calls = correct_calls(model)
    calls = replaced(calls, 1, calls[1][0][10:])    # the reconstructions only
    verdict = judged(calls, model, RECONSTRUCTIONS)
    assert verdict["status"] == "fail"
    assert verdict["message"] == "the first 10 test images were not found in any call"


def test_missing_reconstructions_fail(model):
    calls = correct_calls(model)
    calls = replaced(calls, 1, calls[1][0][:10])    # the originals only
    verdict = judged(calls, model, RECONSTRUCTIONS)
    assert verdict["status"] == "fail"
    assert "no reconstructions after them or in a call of 10" in verdict["message"]


def test_reconstructions_in_a_call_of_their_own_pass(model):
    calls = correct_calls(model)
    images = calls[1][0]
    calls = ([calls[0], (images[:10], "originals.png", {}), (images[10:], "rec.png", {})]
             + calls[2:])
    assert judged(calls, model, RECONSTRUCTIONS)["status"] == "pass"


def test_reconstructions_in_reversed_order_fail(model):
    # T = 2.1 for this draw, limit 2.0: about 1 reversed order in 10 passes
    # after this short training (the numbers are at RECONSTRUCTION_RATIO).
    calls = correct_calls(model)
    images = calls[1][0]
    calls = replaced(calls, 1, np.concatenate([images[:10], images[10:][::-1]]))
    verdict = judged(calls, model, RECONSTRUCTIONS)
    assert verdict["status"] == "fail"
    assert "does not decode test image" in verdict["message"]


def test_originals_shown_twice_fail(model):
    calls = replaced(correct_calls(model), 1, np.concatenate([model[2][:10]] * 2))
    verdict = judged(calls, model, RECONSTRUCTIONS)
    assert verdict["status"] == "fail" and "originals shown again" in verdict["message"]


def test_prior_samples_instead_of_reconstructions_fail(model):
    prior = decode(model, np.random.RandomState(1).randn(10, LATENT_DIM))
    calls = replaced(correct_calls(model), 1, np.concatenate([model[2][:10], prior]))
    verdict = judged(calls, model, RECONSTRUCTIONS)
    assert verdict["status"] == "fail" and "does not decode test image" in verdict["message"]


@pytest.mark.parametrize("seed", range(1, 6))
def test_posterior_sample_reconstructions_pass_whatever_the_noise(model, seed):
    reconstructions = posterior_reconstructions(model, np.random.RandomState(seed))
    calls = replaced(correct_calls(model), 1,
                     np.concatenate([model[2][:10], reconstructions]))
    assert judged(calls, model, RECONSTRUCTIONS)["status"] == "pass"


def test_decoded_means_as_reconstructions_pass(model):
    means = decode(model, encoder(model, model[2][:10])[0])
    calls = replaced(correct_calls(model), 1, np.concatenate([model[2][:10], means]))
    assert judged(calls, model, RECONSTRUCTIONS)["status"] == "pass"


# ---- 3. Interpolations -----------------------------------------------------------------

def test_interpolating_posterior_samples_fails(model):
    rs = np.random.RandomState(1)
    calls = correct_calls(model)[:2]
    for a, b in PAIRS:
        mean, log_std = encoder(model, model[2][[a, b]])
        z_a, z_b = mean + np.exp(log_std) * rs.randn(*mean.shape)   # fresh noise at each end
        calls += interpolation_calls(model, [(a, b)], ends=(z_a, z_b))
    verdict = judged(calls, model, INTERPOLATIONS)
    assert verdict["status"] == "fail"
    assert "it looks like posterior samples were interpolated" in verdict["message"]


def test_only_one_interpolation_fails(model):
    verdict = judged(correct_calls(model)[:3], model, INTERPOLATIONS)
    assert verdict["status"] == "fail"
    assert verdict["message"] == ("found interpolations for (0, 1) only; "
                                  "missing (2, 3), (4, 5), (6, 7), (8, 9)")


def test_30_steps_fail(model):
    calls = correct_calls(model)[:2] + interpolation_calls(model, steps=30)
    verdict = judged(calls, model, INTERPOLATIONS)
    assert verdict["status"] == "fail"
    assert "(0, 1), (2, 3), (4, 5), (6, 7), (8, 9): 30 frames instead of 25" in verdict["message"]


def test_frames_off_the_line_between_the_means_fail(model):
    frames = interpolation(model, 0, 1)
    s = np.linspace(0, 1, 25)[:, None]
    in_pixel_space = (1 - s) * frames[0] + s * frames[-1]   # a cross-fade, not the decoder
    calls = replaced(correct_calls(model), 2, in_pixel_space)
    verdict = judged(calls, model, INTERPOLATIONS)
    assert verdict["status"] == "fail"
    assert ("missing (0, 1); (0, 1): the end frames are the decoded means, but the frames "
            "between them are not sigmoid(decoder((1 - s) z_a + s z_b)) for s = linspace(0, 1, "
            "25): frames 1 to 23 are not on the straight line between the two encoder means ("
            in verdict["message"])


def test_reversed_direction_passes(model):
    calls = correct_calls(model)
    calls = calls[:2] + [(images[::-1], name, kwargs) for images, name, kwargs in calls[2:]]
    assert judged(calls, model, INTERPOLATIONS)["status"] == "pass"


def test_all_five_in_one_call_of_125_frames_pass(model):
    calls = correct_calls(model)
    frames = np.concatenate([images for images, _, _ in calls[2:]])
    verdict = judged(calls[:2] + [(frames, "interpolations.png", {})], model, INTERPOLATIONS)
    assert verdict["status"] == "pass"


# ---- Odd input -----------------------------------------------------------------------------

def test_odd_calls_are_ignored_and_never_raise(model):
    odd = [None, (), ("not images", "a.png", {}), ([[1, 2], [3]], "ragged.png", {}),
           (np.zeros((3, 5)), "small.png", {}), (np.full((25, 784), np.nan), "nan.png", {}),
           (np.full((10, 784), np.inf), "inf.png", {}), (object(), "object.png", {})]
    results = figures_check.judge_figures(odd + correct_calls(model), *model, vae)
    assert [r["status"] for r in results] == ["pass"] * 3


def test_without_parameters_the_model_checks_are_warnings(model):
    results = figures_check.judge_figures(correct_calls(model), None, None, model[2], vae)
    assert [r["status"] for r in results] == ["pass", "warning", "warning"]
    assert "the trained parameters were not found" in results[2]["message"]


def test_parameters_of_another_layout_give_warnings_not_errors(model):
    wrong = [(np.zeros((3, 4)), np.zeros(4))]
    results = figures_check.judge_figures(correct_calls(model), wrong, wrong, model[2], vae)
    assert [r["status"] for r in results] == ["pass", "warning", "warning"]
    assert "do not decode" in results[2]["message"]
