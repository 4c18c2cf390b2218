"""`python vae.py` end to end on small data: the files it writes, determinism,
checkpoints, interruption (Ctrl-C and SIGTERM), divergence, the guard on
output folders and the refusal of bad arguments, sizes and files."""
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from vaelib import fastgrad
from vaelib import runs
from vaelib import checkpoints, cli, networks, training
import loops
from data import DATA_DIM
import vae

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--n-train", "200", "--epochs", "2", "--batch-size", "100", "--hidden-units", "20",
         "--latent-dim", "5", "--no-progress"]   # 2 Adam steps per epoch
FIGURES = ["samples_from_prior.png", "reconstructions.png", "learning_curve.png",
           "figures_explained.png"] + [
    f"interpolation_{a}_{b}.png" for a, b in vae.INTERPOLATION_PAIRS]
# What a one-epoch run on the 7 training and 3 test images of idx_folder writes:
# with 3 test images, only the first interpolation pair exists.
TINY_RUN_FILES = {"samples_from_prior.png", "reconstructions.png", "learning_curve.png",
                  "interpolation_0_1.png", "figures_explained.png", runs.CHECKPOINT_NAME,
                  runs.METRICS_NAME}


def run(tmp_path, name, *extra):
    out = tmp_path / name
    code = vae.main(SMALL + ["--output-dir", str(out), *extra])
    return code, out


def tiny_run(idx_folder, out, *extra):
    """vae.main on idx_folder's 7 images, one epoch: well under a second."""
    return vae.main(["--data-dir", str(idx_folder), "--epochs", "1", "--batch-size", "3",
                     "--hidden-units", "4", "--latent-dim", "3", "--no-progress",
                     "--output-dir", str(out), *extra])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One small run shared by the tests that only read its output."""
    tmp = tmp_path_factory.mktemp("small")
    code, out = run(tmp, "a")
    assert code == 0
    return out


def pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def snapshot(folder):
    """Every file of folder with its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def one_line(err):
    return len(err.strip().splitlines()) == 1


def test_main_writes_every_file(small_run):
    assert sorted(p.name for p in small_run.iterdir()) == sorted(
        FIGURES + [runs.CHECKPOINT_NAME, runs.METRICS_NAME])


def test_metrics_record_the_run(small_run):
    metrics = json.loads((small_run / runs.METRICS_NAME).read_text())
    assert metrics["status"] == "complete"
    assert metrics["config"]["epochs"] == 2 and metrics["seed"] == 0
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    last = metrics["epochs"][-1]
    assert metrics["final_test_elbo"] == last["test_elbo"]
    # ELBO = reconstruction term - KL, and it is a (negative) log-probability bound.
    assert last["test_elbo"] == pytest.approx(last["test_log_px_given_z"] - last["test_kl"])
    assert last["test_elbo"] < 0 and last["test_kl"] > 0
    assert set(metrics["versions"]) >= {"numpy", "autograd", "python"}
    assert "RandomState(1234)" in metrics["binarization"]["test"]
    assert metrics["checkpoint"].endswith(runs.CHECKPOINT_NAME)


def test_checkpoint_holds_the_trained_parameters_and_config(small_run):
    gen, rec, config, history = checkpoints.load_model(small_run / runs.CHECKPOINT_NAME)
    assert [W.shape for W, _ in gen] == [(5, 20), (20, 20), (20, DATA_DIM)]
    assert [W.shape for W, _ in rec] == [(DATA_DIM, 20), (20, 20), (20, 10)]
    assert config["latent_dim"] == 5 and len(history) == 2


def test_the_test_set_evaluation_leaves_the_training_stream_alone(small_run, mnist):
    # The run evaluates the test ELBO after every epoch; training alone, with the
    # same seed and data, must end at the same parameters.
    vae.npr.seed(0)
    gen = vae.init_net_params([5, 20, 20, DATA_DIM])
    rec = vae.init_net_params([DATA_DIM, 20, 20, 10])
    (gen, rec), _ = loops.train(loops.SKELETON, gen, rec, mnist[1][:200], 2, 100, 1e-3)
    saved = checkpoints.load_model(small_run / runs.CHECKPOINT_NAME)
    for ours, theirs in zip(gen + rec, saved[0] + saved[1], strict=True):
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_the_run_prints_units_and_one_line_per_epoch(tmp_path, capsys):
    code, _ = run(tmp_path, "out")
    printed = capsys.readouterr().out
    assert code == 0
    assert "nats per image" in printed and "higher is better" in printed
    epoch_lines = [line for line in printed.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(epoch_lines) == 2 and all(len(line.split()) == 6 for line in epoch_lines)


def test_same_seed_gives_identical_outputs(small_run, tmp_path):
    code, again = run(tmp_path, "b")
    assert code == 0
    first, second = (np.load(d / runs.CHECKPOINT_NAME) for d in (small_run, again))
    for key in first.files:
        if key not in ("history", "state"):   # they hold the seconds each epoch took
            np.testing.assert_array_equal(first[key], second[key])
    states = [checkpoints.load_state(d / runs.CHECKPOINT_NAME) for d in (small_run, again)]
    for state in states:
        del state["sittings"]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        np.testing.assert_array_equal(states[0][key], states[1][key])
    assert pngs(small_run) == pngs(again)
    strip = lambda m: [{k: v for k, v in e.items() if k != "seconds"} for e in m["epochs"]]  # noqa: E731
    assert strip(json.loads((small_run / runs.METRICS_NAME).read_text())) == strip(
        json.loads((again / runs.METRICS_NAME).read_text()))


def test_the_graded_figures_are_save_images_of_the_assignment_s_arrays(small_run, mnist,
                                                                       tmp_path):
    """The course's format, byte for byte: each graded PNG is what save_images
    writes for the arrays the assignment describes (../shared/ASSIGNMENT.md)."""
    import plotting
    gen, rec, config, _ = checkpoints.load_model(small_run / runs.CHECKPOINT_NAME)
    test_images, rs, steps = mnist[3], np.random.RandomState(config["seed"]), 25
    decode = lambda z: vae.sigmoid(vae.neural_net_predict(gen, z))          # noqa: E731
    encode = lambda x: vae.unpack_gaussian_params(vae.neural_net_predict(rec, x))  # noqa: E731
    expected = {"samples_from_prior.png": (decode(rs.randn(25, config["latent_dim"])), {})}
    mean, log_std = encode(test_images[:10])
    expected["reconstructions.png"] = (np.concatenate([
        test_images[:10], decode(mean + np.exp(log_std) * rs.randn(*mean.shape))]),
        {"ims_per_row": 10})
    s = np.linspace(0, 1, steps)[:, None]
    for a, b in vae.INTERPOLATION_PAIRS:
        z_a, z_b = encode(test_images[[a, b]])[0]
        expected[f"interpolation_{a}_{b}.png"] = (decode((1 - s) * z_a + s * z_b), {})
    for name, (images, options) in expected.items():
        plotting.save_images(images, tmp_path / name, vmin=0, vmax=1, **options)
        assert (tmp_path / name).read_bytes() == (small_run / name).read_bytes(), name


def test_the_explained_figure_names_the_test_images_and_their_digits(small_run, mnist,
                                                                    tmp_path, monkeypatch):
    import plotting
    figures = {}
    monkeypatch.setattr(plotting, "_save", lambda figure, f: figures.setdefault(Path(f).name,
                                                                                 figure))
    gen, rec, config, history = checkpoints.load_model(small_run / runs.CHECKPOINT_NAME)
    vae.write_figures(gen, rec, mnist[3], mnist[4], history, tmp_path, config["seed"])
    titles = [axes.get_title() for axes in figures["figures_explained.png"].axes]
    # The first ten MNIST test images are 7 2 1 0 4 1 4 9 5 9.
    assert titles[0].startswith("reconstructions.png: the first 10 test images")
    assert titles[1:] == ["samples_from_prior.png\n25 samples z from the prior, decoded"] + [
        f"interpolation_{a}_{b}.png\ntest image {a} (a {x}) \u2192 test image {b} (a {y})"
        for (a, b), (x, y) in zip(vae.INTERPOLATION_PAIRS,
                                  [(7, 2), (1, 0), (4, 1), (4, 9), (5, 9)])]
    assert figures["learning_curve.png"].axes[0].get_ylabel().startswith("ELBO ")


def test_another_seed_gives_other_parameters(small_run, tmp_path):
    code, other = run(tmp_path, "c", "--seed", "1")
    assert code == 0
    a, b = (np.load(d / runs.CHECKPOINT_NAME)["gen_W0"] for d in (small_run, other))
    assert not np.allclose(a, b)


def test_latent_dim_2_adds_scatter_and_manifold(tmp_path):
    code, out = run(tmp_path, "two", "--latent-dim", "2", "--epochs", "1")
    assert code == 0
    assert {"latent_scatter.png", "latent_manifold.png"} <= set(pngs(out))


@pytest.fixture(scope="module")
def tanh_run(tmp_path_factory):
    code, out = run(tmp_path_factory.mktemp("tanh"), "tanh", "--activation", "tanh",
                    "--latent-dim", "2")
    assert code == 0
    return out


def test_a_tanh_run_records_its_activation_and_trains_with_it(tanh_run, small_run, mnist):
    gen, rec, config, history = checkpoints.load_model(tanh_run / runs.CHECKPOINT_NAME)
    assert config["activation"] == "tanh"
    assert json.loads((tanh_run / runs.METRICS_NAME).read_text())["config"]["activation"] == "tanh"
    assert checkpoints.load_model(small_run / runs.CHECKPOINT_NAME)[2]["activation"] == "relu"
    # The recorded test ELBO is the tanh network's, not the relu network's.
    test_binary = vae.binarize(mnist[3], np.random.RandomState(training.TEST_BINARIZATION_SEED))
    tanh_elbo = training.evaluate_elbo(gen, rec, test_binary, activation="tanh")["elbo"]
    assert history[-1]["test_elbo"] == pytest.approx(tanh_elbo, rel=1e-12)
    assert abs(training.evaluate_elbo(gen, rec, test_binary)["elbo"] - tanh_elbo) > 0.1


def test_from_checkpoint_draws_a_tanh_model_with_tanh(tanh_run, tmp_path):
    out = tmp_path / "regenerated"
    assert vae.main(["--from-checkpoint", str(tanh_run / runs.CHECKPOINT_NAME),
                     "--output-dir", str(out)]) == 0
    assert pngs(out) == pngs(tanh_run)


def test_a_checkpoint_from_before_activation_existed_loads_as_relu(small_run, tmp_path):
    old = tmp_path / "old.npz"
    with np.load(small_run / runs.CHECKPOINT_NAME) as f:
        arrays = dict(f)
    config = json.loads(str(arrays["config"]))
    del config["activation"]
    arrays["config"] = np.array(json.dumps(config))
    np.savez(old, **arrays)
    assert checkpoints.load_model(old)[2]["activation"] == "relu"


def test_a_checkpoint_with_an_unknown_activation_is_refused_in_one_line(small_run, tmp_path):
    bad = tmp_path / "bad.npz"
    with np.load(small_run / runs.CHECKPOINT_NAME) as f:
        arrays = dict(f)
    arrays["config"] = np.array(json.dumps({**json.loads(str(arrays["config"])),
                                            "activation": "swish"}))
    np.savez(bad, **arrays)
    with pytest.raises(runs.RunError, match=r"'swish'; this vae.py knows relu, tanh$"):
        checkpoints.load_model(bad)


def test_float32_run_keeps_float32_parameters(tmp_path):
    code, out = run(tmp_path, "f32", "--dtype", "float32", "--epochs", "1")
    assert code == 0
    gen, rec, _, history = checkpoints.load_model(out / runs.CHECKPOINT_NAME)
    assert {W.dtype for W, _ in gen + rec} == {np.dtype("float32")}
    assert np.isfinite(history[0]["test_elbo"])


def test_fast_loop_run_writes_every_file_and_records_its_stream(tmp_path):
    code, out = run(tmp_path, "fast", "--loop", "fast", "--dtype", "float32")
    assert code == 0
    assert set(FIGURES) <= set(pngs(out))
    metrics = json.loads((out / runs.METRICS_NAME).read_text())
    assert metrics["config"]["loop"] == "fast"
    assert "default_rng(0)" in metrics["binarization"]["train"]
    assert metrics["epochs"][-1]["test_elbo"] > metrics["epochs"][0]["test_elbo"]


def test_data_dir_trains_on_another_mnist_format_folder(tmp_path, idx_folder, capsys):
    code, out = run(tmp_path, "other", "--data-dir", str(idx_folder), "--n-train", "7",
                    "--batch-size", "3")
    assert code == 0
    assert "7 training and 3 test images" in capsys.readouterr().out
    assert json.loads((out / runs.METRICS_NAME).read_text())["config"]["data_dir"] == str(idx_folder)


def test_a_diverging_run_stops_with_a_message_and_writes_no_figures(tmp_path, capsys):
    with np.errstate(all="ignore"):
        code, out = run(tmp_path, "diverged", "--learning-rate", "1e3")
    assert code == 1
    message = capsys.readouterr().err
    assert "ELBO became nan" in message and "--learning-rate" in message
    assert not out.exists() or not list(out.glob("*.png"))


# ---------------------------------------------------------------- Ctrl-C and SIGTERM

Stopped = namedtuple("Stopped", "kind code out err")
EXIT_CODE = {"ctrl-c": 130, "sigterm": 143}          # 128 + SIGINT, 128 + SIGTERM
STATUS = {"ctrl-c": "interrupted", "sigterm": "terminated"}


def stop_run(out, kind, at_step):
    """vae.main(SMALL) stopped at Adam step at_step (counted from 1, 2 per
    epoch) by Ctrl-C or by a SIGTERM sent to this process."""
    real_step, steps = fastgrad.adam_step, []

    def adam_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == at_step:
            if kind == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    def escaped(signum, frame):   # instead of pytest being killed
        raise AssertionError("vae.py left SIGTERM to the handler it found")

    previous = signal.signal(signal.SIGTERM, escaped)
    try:
        with pytest.MonkeyPatch.context() as patch, \
                contextlib.redirect_stderr(io.StringIO()) as err:
            patch.setattr(fastgrad, "adam_step", adam_step)
            code = vae.main(SMALL + ["--output-dir", str(out)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return Stopped(kind, code, out, err.getvalue())


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory):
    code, out = run(tmp_path_factory.mktemp("one"), "one", "--epochs", "1")
    assert code == 0
    return out


@pytest.fixture(scope="module", params=["ctrl-c", "sigterm"])
def stopped_in_epoch_2(request, tmp_path_factory):
    return stop_run(tmp_path_factory.mktemp("epoch2") / "out", request.param, at_step=3)


@pytest.fixture(scope="module", params=["ctrl-c", "sigterm"])
def stopped_in_epoch_1(request, tmp_path_factory):
    return stop_run(tmp_path_factory.mktemp("epoch1") / "out", request.param, at_step=1)


def test_a_stopped_run_exits_with_128_plus_the_signal_number(stopped_in_epoch_2):
    assert stopped_in_epoch_2.code == EXIT_CODE[stopped_in_epoch_2.kind]


def test_a_stopped_run_records_why_in_its_metrics(stopped_in_epoch_2):
    metrics = json.loads((stopped_in_epoch_2.out / runs.METRICS_NAME).read_text())
    assert metrics["status"] == STATUS[stopped_in_epoch_2.kind]


def test_a_stopped_run_keeps_the_checkpoint_of_the_last_completed_epoch(stopped_in_epoch_2,
                                                                         one_epoch_run):
    gen, rec, _, history = checkpoints.load_model(stopped_in_epoch_2.out / runs.CHECKPOINT_NAME)
    assert [e["epoch"] for e in history] == [1]
    gen_1, rec_1, _, _ = checkpoints.load_model(one_epoch_run / runs.CHECKPOINT_NAME)
    for ours, theirs in zip(gen + rec, gen_1 + rec_1, strict=True):
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_a_stopped_run_writes_no_figures_and_leaves_no_temporary_file(stopped_in_epoch_2):
    assert sorted(p.name for p in stopped_in_epoch_2.out.iterdir()) == [
        runs.CHECKPOINT_NAME, runs.METRICS_NAME]


def test_a_stopped_run_says_how_to_regenerate_its_figures(stopped_in_epoch_2):
    assert "--from-checkpoint" in stopped_in_epoch_2.err


def test_a_run_stopped_in_its_first_epoch_leaves_the_folder_free(stopped_in_epoch_1):
    assert runs.run_files(stopped_in_epoch_1.out, runs.RUN_FILES) == []


def test_a_run_stopped_in_its_first_epoch_says_nothing_was_saved(stopped_in_epoch_1):
    assert "nothing was saved" in stopped_in_epoch_1.err


# ---------------------------------------------------------------- output folders

def test_a_second_run_into_a_finished_run_s_folder_is_refused_in_one_line(small_run, capsys):
    assert vae.main(SMALL + ["--output-dir", str(small_run)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(small_run) in err
    assert "status complete, 2 of 2 epochs" in err and "--overwrite" in err


def test_a_refused_second_run_leaves_the_first_run_s_files_untouched(small_run):
    before = snapshot(small_run)
    assert vae.main(SMALL + ["--output-dir", str(small_run)]) == 2
    assert snapshot(small_run) == before


@pytest.mark.parametrize("name", [
    runs.CHECKPOINT_NAME, runs.METRICS_NAME, "samples_from_prior.png", "interpolation_8_9.png",
    "latent_manifold.png", "evaluation_test_sample.json", "evaluation_train_k10.npz"])
def test_any_file_of_a_run_makes_its_folder_refused(tmp_path, idx_folder, capsys, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"from an earlier run")
    assert tiny_run(idx_folder, out) == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(out) in err and name in err


def test_a_folder_holding_only_other_files_is_accepted(tmp_path, idx_folder):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "checkpoint.npz.bak").write_text("a backup")
    assert tiny_run(idx_folder, out) == 0


def test_overwrite_deletes_exactly_the_run_s_files_then_trains(tmp_path, idx_folder):
    out = tmp_path / "out"
    out.mkdir()
    for name in (runs.CHECKPOINT_NAME, runs.METRICS_NAME, "interpolation_8_9.png",
                 "evaluation_test_sample.json", "notes.txt"):
        (out / name).write_bytes(b"from an earlier run")
    assert tiny_run(idx_folder, out, "--overwrite") == 0
    assert {p.name for p in out.iterdir()} == TINY_RUN_FILES | {"notes.txt"}
    assert (out / "notes.txt").read_bytes() == b"from an earlier run"


def test_an_empty_output_dir_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        vae.main(["--output-dir", ""])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(err) and "--output-dir" in err


def refuse_training(monkeypatch):
    def train(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(vae, "train", train)


def test_an_output_dir_that_cannot_be_created_is_refused_before_training(
        tmp_path, idx_folder, monkeypatch, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "out"
    refuse_training(monkeypatch)
    assert tiny_run(idx_folder, out) == 1
    err = capsys.readouterr().err
    assert one_line(err) and str(out) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_dir_is_refused_before_training(tmp_path, idx_folder, monkeypatch,
                                                           capsys):
    (tmp_path / "ro").mkdir(mode=0o500)
    out = tmp_path / "ro" / "out"
    refuse_training(monkeypatch)
    assert tiny_run(idx_folder, out) == 1
    err = capsys.readouterr().err
    assert one_line(err) and str(out) in err


def test_a_full_disk_is_refused_before_training(tmp_path, idx_folder, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: usage(2 ** 40, 2 ** 40, 0))
    refuse_training(monkeypatch)
    assert tiny_run(idx_folder, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert one_line(err) and "0 MiB free" in err


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("size", [["--hidden-units", "100000000"],
                                  ["--latent-dim", "100000000"],
                                  ["--hidden-units", "30000"]])   # about 115 GiB
def test_sizes_that_cannot_fit_are_refused_before_allocating(tmp_path, monkeypatch, capsys,
                                                             size):
    # As on a machine with 32 GiB available; loading the data would be the
    # first allocation, so the refusal must come before it.
    monkeypatch.setattr(runs, "available_memory", lambda: 32 * 2 ** 30)

    def load_data(data_dir):
        raise AssertionError("the data were loaded before the memory check")

    monkeypatch.setattr(cli, "load_data", load_data)   # where the run loads them
    assert vae.main(size + ["--output-dir", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and re.search(r"need about [0-9.]+ GiB", err)
    assert "32.0 GiB is available" in err and not (tmp_path / "never").exists()


# ---------------------------------------------------------------- --from-checkpoint

def test_from_checkpoint_writes_the_run_s_figures_beside_the_checkpoint(small_run, tmp_path):
    checkpoint = tmp_path / "copy" / runs.CHECKPOINT_NAME
    checkpoint.parent.mkdir()
    shutil.copy(small_run / runs.CHECKPOINT_NAME, checkpoint)
    assert vae.main(["--from-checkpoint", str(checkpoint)]) == 0
    assert pngs(checkpoint.parent) == pngs(small_run)


def test_from_checkpoint_writes_the_run_s_figures_into_output_dir(small_run, tmp_path):
    out = tmp_path / "regenerated"
    code = vae.main(["--from-checkpoint", str(small_run / runs.CHECKPOINT_NAME),
                     "--output-dir", str(out)])
    assert code == 0
    assert pngs(out) == pngs(small_run)


@pytest.mark.parametrize("option", [
    ["--epochs", "3"], ["--epochs=3"], ["--batch-size", "10"], ["--latent-dim", "2"],
    ["--hidden-units", "20"], ["--hidden-layers", "1"], ["--learning-rate", "0.01"],
    ["--activation", "tanh"],
    ["--seed", "1"], ["--seed", "0"], ["--n-train", "5"], ["--dtype", "float32"],
    ["--loop", "fast"], ["--data-dir", str(REPO)]])
def test_from_checkpoint_refuses_training_options_it_would_ignore(small_run, tmp_path, capsys,
                                                                  option):
    with pytest.raises(SystemExit) as exit_:
        vae.main(["--from-checkpoint", str(small_run / runs.CHECKPOINT_NAME),
                  "--output-dir", str(tmp_path / "never"), *option])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and one_line(err)
    assert option[0].split("=")[0] in err and not (tmp_path / "never").exists()


def another_run(folder):
    folder.mkdir()
    (folder / runs.METRICS_NAME).write_text(json.dumps({"status": "complete", "epochs": []}))
    (folder / runs.CHECKPOINT_NAME).write_bytes(b"another run's checkpoint")
    return folder


def test_from_checkpoint_into_another_run_s_folder_is_refused(small_run, tmp_path, capsys):
    other = another_run(tmp_path / "other")
    before = snapshot(other)
    assert vae.main(["--from-checkpoint", str(small_run / runs.CHECKPOINT_NAME),
                     "--output-dir", str(other)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(other) in err and snapshot(other) == before


def test_from_checkpoint_with_overwrite_replaces_another_run_s_files(small_run, tmp_path):
    other = another_run(tmp_path / "other")
    assert vae.main(["--from-checkpoint", str(small_run / runs.CHECKPOINT_NAME),
                     "--output-dir", str(other), "--overwrite"]) == 0
    assert sorted(p.name for p in other.iterdir()) == sorted(FIGURES)


def damage_checkpoint(good, path, damage):
    """Writes at path a copy of the checkpoint good with one kind of damage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = good.read_bytes()
    if damage in ("text", "garbage", "truncated"):
        path.write_bytes({"text": b"epoch,test_elbo\n1,-120.5\n", "garbage": os.urandom(4096),
                          "truncated": content[:len(content) // 2]}[damage])
        return path
    with np.load(good) as archive:
        arrays = dict(archive)
    if damage == "wrong shape":
        arrays["gen_W1"] = arrays["gen_W1"][:, :-1]
    elif damage == "NaN":
        arrays["rec_W0"] = np.full_like(arrays["rec_W0"], np.nan)
    elif damage == "missing entry":
        del arrays["rec_b2"]
    elif damage == "history without ELBO":
        arrays["history"] = np.array(json.dumps([{"epoch": 1}]))
    np.savez(path, **arrays)
    return path


DAMAGES = ["text", "garbage", "truncated", "wrong shape", "NaN", "missing entry",
           "history without ELBO"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_exits_with_code_1(small_run, tmp_path, damage):
    damaged = damage_checkpoint(small_run / runs.CHECKPOINT_NAME, tmp_path / "d" / "ckpt.npz",
                                damage)
    assert vae.main(["--from-checkpoint", str(damaged)]) == 1


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_is_named_in_one_line_without_numpy_s_hints(small_run, tmp_path,
                                                                         capsys, damage):
    damaged = damage_checkpoint(small_run / runs.CHECKPOINT_NAME, tmp_path / "d" / "ckpt.npz",
                                damage)
    vae.main(["--from-checkpoint", str(damaged)])
    err = capsys.readouterr().err
    assert one_line(err) and f"{damaged} is not a checkpoint written by vae.py" in err
    assert "allow_pickle" not in err


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_writes_no_figures(small_run, tmp_path, damage):
    damaged = damage_checkpoint(small_run / runs.CHECKPOINT_NAME, tmp_path / "d" / "ckpt.npz",
                                damage)
    vae.main(["--from-checkpoint", str(damaged)])
    assert [p.name for p in damaged.parent.iterdir()] == ["ckpt.npz"]


# ---------------------------------------------------------------- the command line

def test_defaults_are_the_assignment_s():
    args = vae.parse_args([])
    assert (args.epochs, args.batch_size, args.latent_dim, args.hidden_units, args.hidden_layers,
            args.learning_rate, args.seed, args.dtype, args.activation) == (
        30, 200, 50, 200, 2, 1e-3, 0, "float64", "relu")
    assert args.n_train is None and args.data_dir is None and args.output_dir is None
    assert networks.layer_sizes(vars(args)) == ([50, 200, 200, 784], [784, 200, 200, 100])


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        vae.parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in (30, 200, 50, 2, 0.001, 0, "float64", "skeleton", "all"):
        assert f"(default: {default})" in text
    assert "(default: output; with --from-checkpoint, the checkpoint's folder)" in text
    assert "(default: None)" not in text


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--epochs", "two"], ["--batch-size", "-5"], ["--latent-dim", "0"],
    ["--hidden-units", "-1"], ["--hidden-layers", "-1"], ["--learning-rate", "0"],
    ["--learning-rate", "nan"], ["--seed", "-1"], ["--n-train", "0"], ["--dtype", "float16"],
    ["--loop", "turbo"], ["--activation", "sigmoid"],
    ["--data-dir", "/no/such/folder"], ["--from-checkpoint", "/no/such/file.npz"],
])
def test_invalid_arguments_are_refused_in_one_line(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        vae.main(argv + ["--output-dir", str(tmp_path / "never")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert one_line(err) and argv[0] in err
    assert not (tmp_path / "never").exists()


def test_n_train_larger_than_the_training_set_is_refused(tmp_path, idx_folder, capsys):
    code = vae.main(["--data-dir", str(idx_folder), "--n-train", "8",
                     "--output-dir", str(tmp_path / "never")])
    assert code == 2
    assert "--n-train 8 but the training set has 7 images" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_importing_vae_runs_nothing_and_writes_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", "import vae, data, plotting"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- messages that say what is true

@pytest.mark.parametrize("argv, says", [
    (["--n-train", "200", "--batch-size", "201"],
     "--batch-size 201 is larger than the 200 training images (--n-train); choose at most 200"),
    (["--batch-size", "8"], "--batch-size 8 is larger than the 7 training images; choose at most 7"),
])
def test_a_batch_larger_than_the_training_set_is_refused_in_one_line(tmp_path, idx_folder, capsys,
                                                                     argv, says):
    data = [] if "--n-train" in argv else ["--data-dir", str(idx_folder)]
    assert vae.main([*data, *argv, "--output-dir", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and says in err
    assert not (tmp_path / "never").exists()


def test_a_batch_of_the_whole_training_set_is_what_runs_and_is_recorded(tmp_path, idx_folder):
    out = tmp_path / "whole"
    assert tiny_run(idx_folder, out, "--batch-size", "7") == 0
    assert json.loads((out / runs.METRICS_NAME).read_text())["config"]["batch_size"] == 7


def stop_after_the_last_epoch(out, kind):
    """vae.main(SMALL) stopped by Ctrl-C or SIGTERM while it draws the figures."""
    def stop(*args, **kwargs):
        if kind == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(io.StringIO()) as err:
        patch.setattr(vae, "write_figures", stop)
        code = vae.main(SMALL + ["--output-dir", str(out)])
    return code, err.getvalue()


@pytest.mark.parametrize("kind", ["ctrl-c", "sigterm"])
def test_a_run_stopped_after_its_last_epoch_says_it_is_complete_and_how_to_go_on(tmp_path, kind):
    out = tmp_path / "done"
    code, err = stop_after_the_last_epoch(out, kind)
    checkpoint = out / runs.CHECKPOINT_NAME
    assert code == EXIT_CODE[kind] and one_line(err)
    assert err.strip() == (
        f"{STATUS[kind].capitalize()}; {checkpoint} holds epoch 2, all 2 epochs: training is "
        f"complete; draw its figures with `python vae.py --from-checkpoint {checkpoint}`, or "
        f"train further with `python vae.py --resume {checkpoint} --epochs 32` (--epochs is the "
        "total to reach)")
    # both commands it gives work: the resume is accepted, the figures are drawn
    args = vae.parse_args(["--resume", str(checkpoint), "--epochs", "32"])
    _, _, config, _, state = checkpoints.load_resumable(args.resume)
    cli.check_resume(args, config, state["epoch"], args.resume)   # raises if refused
    assert vae.main(["--from-checkpoint", str(checkpoint)]) == 0
    assert set(FIGURES) <= set(pngs(out))


def test_a_run_that_diverged_after_an_epoch_offers_no_resume_that_would_diverge_again(
        tmp_path, monkeypatch, capsys):
    real, calls = vae.evaluate_elbo, []

    def nan_after_epoch_1(*args, **kwargs):
        calls.append(1)
        result = real(*args, **kwargs)
        return result if len(calls) == 1 else dict(result, elbo=float("nan"))
    monkeypatch.setattr(vae, "evaluate_elbo", nan_after_epoch_1)
    code, out = run(tmp_path, "nan")
    assert code == 1
    err = capsys.readouterr().err
    checkpoint = out / runs.CHECKPOINT_NAME
    assert one_line(err) and "--resume" not in err
    assert err.strip().endswith(f"{checkpoint} holds epoch 1; regenerate its figures with "
                                f"`python vae.py --from-checkpoint {checkpoint}`")
    assert json.loads((out / runs.METRICS_NAME).read_text())["status"] == "diverged"
