"""classifier.py: the MLP digit classifier and the scores of generated digits."""
import json

import numpy as np
import pytest
from autograd.test_util import check_grads

import classifier
import variants


@pytest.fixture(scope="module")
def small_classifier(tmp_path_factory):
    """Trained on 3000 images for 2 epochs (a few seconds)."""
    out = tmp_path_factory.mktemp("classifier")
    assert classifier.main(["--n-train", "3000", "--epochs", "2", "--hidden-units", "100",
                            "--output-dir", str(out), "--no-progress"]) == 0
    return out / "checkpoint.npz"


def test_the_objective_s_gradient_matches_finite_differences(mnist_train_subset, mnist):
    params = classifier.init_params([784, 7, 10], np.random.RandomState(0))
    check_grads(lambda p: classifier.mean_log_likelihood(p, mnist_train_subset[:6],
                                                         mnist[2][:6]),
                modes=["rev"], order=1)(params)


def test_log_probabilities_are_normalised():
    params = classifier.init_params([784, 7, 10], np.random.RandomState(0))
    log_p = classifier.log_probabilities(params, np.random.RandomState(1).uniform(size=(5, 784)))
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0, rtol=1e-12)


def test_a_small_run_beats_chance_by_far(small_classifier, mnist):
    params, config, history = classifier.load_classifier(small_classifier)
    assert history[-1]["test_accuracy"] > 0.85     # chance: 0.10
    assert classifier.accuracy(params, mnist[3], mnist[4]) == history[-1]["test_accuracy"]


def test_real_digits_score_high_and_noise_and_one_digit_score_low(small_classifier, mnist):
    params, _, _ = classifier.load_classifier(small_classifier)
    test_images, test_labels = mnist[3][:1000], mnist[4][:1000]
    real = classifier.score(params, test_images)
    noise = classifier.score(params, np.random.RandomState(0).uniform(size=(1000, 784)))
    ones = classifier.score(params, test_images[np.argmax(test_labels, axis=1) == 1])
    assert real["digit_entropy_nats"] > 2.1          # log 10 = 2.30: every digit, evenly
    assert noise["digit_entropy_nats"] < 1.0         # noise looks like one or two digits
    assert ones["digit_entropy_nats"] < 0.3 and np.argmax(ones["digit_histogram"]) == 1
    assert sum(real["digit_histogram"]) == pytest.approx(1.0)


def test_scoring_prints_and_writes_the_scores_of_each_model(small_classifier, tmp_path,
                                                            capsys):
    model = tmp_path / "laplace"
    assert variants.main(["laplace", "--n-train", "300", "--epochs", "1", "--latent-dim", "2",
                          "--hidden-units", "20", "--no-progress", "--output-dir",
                          str(model)]) == 0
    report = tmp_path / "scores.json"
    assert classifier.main(["--score", str(model / "checkpoint.npz"), "--classifier",
                            str(small_classifier), "--samples", "200", "--json",
                            str(report)]) == 0
    out = capsys.readouterr().out
    assert "MNIST test images" in out and "uniform noise" in out and "(laplace)" in out
    scores = json.loads(report.read_text())["scores"]
    assert scores[f"{model / 'checkpoint.npz'} (laplace)"]["model"] == "laplace"
    assert classifier.main(["--score", str(model / "checkpoint.npz"), "--classifier",
                            str(small_classifier), "--json", str(report)]) == 2


def test_scoring_without_a_classifier_says_how_to_train_one(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "model.npz"
    fake.write_text("x")
    monkeypatch.chdir(tmp_path)     # no output/classifier/ here
    assert classifier.main(["--score", str(fake)]) == 1
    err = capsys.readouterr().err
    assert "train one with `python classifier.py`" in err and err.count("\n") == 1


def test_a_second_training_run_into_the_same_folder_is_refused(small_classifier, capsys):
    assert classifier.main(["--n-train", "100", "--epochs", "1", "--output-dir",
                            str(small_classifier.parent)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_scoring_samples_that_cannot_fit_are_refused_before_any_work(tmp_path, capsys,
                                                                    monkeypatch):
    fake = tmp_path / "model.npz"
    fake.write_text("x")
    monkeypatch.setattr(classifier.runs, "available_memory", lambda: 16 * 2 ** 30)
    monkeypatch.setattr(classifier, "load_classifier", lambda *a: pytest.fail("loaded"))
    assert classifier.main(["--score", str(fake), "--classifier", str(fake),
                            "--samples", "100000000"]) == 2
    assert capsys.readouterr().err == (
        "classifier.py: error: --samples 100000000 would need about 2336.5 GiB of memory "
        "and 16.0 GiB is available; choose a smaller --samples\n")


def test_a_json_that_is_a_folder_is_refused_before_scoring_even_with_overwrite(tmp_path,
                                                                              capsys):
    fake = tmp_path / "model.npz"
    fake.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        classifier.main(["--score", str(fake), "--classifier", str(fake), "--json",
                         str(tmp_path), "--overwrite"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument --json: {tmp_path} is a folder" in err
    assert err.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_the_forms_before_the_subcommands_are_the_subcommands(tmp_path):
    assert classifier.with_command([]) == ["train"]
    assert classifier.with_command(["--epochs", "2"]) == ["train", "--epochs", "2"]
    assert classifier.with_command(["--samples", "5", "--score", "a", "b"]) == [
        "score", "--samples", "5", "a", "b"]
    assert classifier.with_command(["--score=a", "--json", "j"]) == ["score", "a", "--json", "j"]
    for argv in (["score", "a"], ["train"], ["--help"], ["trian"]):
        assert classifier.with_command(argv) == argv
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.write_text("x")
    b.write_text("x")
    old = classifier.parse_args(["--samples", "5", "--score", str(a), str(b), "--overwrite"])
    new = classifier.parse_args(["score", str(a), str(b), "--samples", "5", "--overwrite"])
    assert vars(old) == vars(new) and new.score == [a, b] and new.command == "score"
    assert vars(classifier.parse_args(["--epochs", "3"])) == vars(
        classifier.parse_args(["train", "--epochs", "3"]))


@pytest.mark.parametrize("argv, message", [
    (["score", "{fake}", "--epochs", "3"], "error: unrecognized arguments: --epochs 3"),
    (["--score", "{fake}", "--seed", "1"], "unrecognized arguments: --seed 1"),
    (["--n-train", "5", "--samples", "3"], "unrecognized arguments: --samples 3"),
    (["score"], "the following arguments are required: CHECKPOINT"),
    (["trian"], "invalid choice: 'trian'")])
def test_options_of_the_other_mode_are_refused_in_one_line(argv, message, tmp_path, capsys):
    fake = tmp_path / "model.npz"
    fake.write_text("x")
    with pytest.raises(SystemExit) as exit_:
        classifier.main([a.format(fake=fake) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_score_prints_what_the_form_before_it_prints(small_classifier, tmp_path, capsys):
    model = tmp_path / "binary"
    assert variants.main(["binary", "--n-train", "300", "--epochs", "1", "--latent-dim", "2",
                          "--hidden-units", "20", "--no-progress", "--output-dir",
                          str(model)]) == 0
    capsys.readouterr()
    common = [str(model / "checkpoint.npz"), "--classifier", str(small_classifier),
              "--samples", "100"]
    assert classifier.main(["--score", *common]) == 0
    old = capsys.readouterr().out
    assert classifier.main(["score", *common]) == 0
    assert capsys.readouterr().out == old and "(binary)" in old
