"""`python vae.py` end to end on small data: the files it writes, determinism,
checkpoints, interruption, divergence and the refusal of bad arguments."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vae

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--n-train", "200", "--epochs", "2", "--batch-size", "100", "--hidden-units", "20",
         "--latent-dim", "5", "--no-progress"]
FIGURES = ["samples_from_prior.png", "reconstructions.png", "learning_curve.png"] + [
    f"interpolation_{a}_{b}.png" for a, b in vae.INTERPOLATION_PAIRS]


def run(tmp_path, name, *extra):
    out = tmp_path / name
    code = vae.main(SMALL + ["--output-dir", str(out), *extra])
    return code, out


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """One small run shared by the tests that only read its output."""
    tmp = tmp_path_factory.mktemp("small")
    code, out = run(tmp, "a")
    assert code == 0
    return out


def pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_main_writes_every_file(small_run):
    assert sorted(p.name for p in small_run.iterdir()) == sorted(
        FIGURES + [vae.CHECKPOINT_NAME, vae.METRICS_NAME])


def test_metrics_record_the_run(small_run):
    metrics = json.loads((small_run / vae.METRICS_NAME).read_text())
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
    assert metrics["checkpoint"].endswith(vae.CHECKPOINT_NAME)


def test_checkpoint_holds_the_trained_parameters_and_config(small_run):
    gen, rec, config, history = vae.load_checkpoint(small_run / vae.CHECKPOINT_NAME)
    assert [W.shape for W, _ in gen] == [(5, 20), (20, 20), (20, vae.DATA_DIM)]
    assert [W.shape for W, _ in rec] == [(vae.DATA_DIM, 20), (20, 20), (20, 10)]
    assert config["latent_dim"] == 5 and len(history) == 2


def test_the_test_set_evaluation_leaves_the_training_stream_alone(small_run, mnist):
    # The run evaluates the test ELBO after every epoch; training alone, with the
    # same seed and data, must end at the same parameters.
    vae.npr.seed(0)
    gen = vae.init_net_params([5, 20, 20, vae.DATA_DIM])
    rec = vae.init_net_params([vae.DATA_DIM, 20, 20, 10])
    gen, rec = vae.train(gen, rec, mnist[1][:200], epochs=2, batch_size=100, learning_rate=1e-3)
    saved = vae.load_checkpoint(small_run / vae.CHECKPOINT_NAME)
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
    first, second = (np.load(d / vae.CHECKPOINT_NAME) for d in (small_run, again))
    for key in first.files:
        if key != "history":   # it holds the seconds each epoch took
            np.testing.assert_array_equal(first[key], second[key])
    assert pngs(small_run) == pngs(again)
    strip = lambda m: [{k: v for k, v in e.items() if k != "seconds"} for e in m["epochs"]]  # noqa: E731
    assert strip(json.loads((small_run / vae.METRICS_NAME).read_text())) == strip(
        json.loads((again / vae.METRICS_NAME).read_text()))


def test_another_seed_gives_other_parameters(small_run, tmp_path):
    code, other = run(tmp_path, "c", "--seed", "1")
    assert code == 0
    a, b = (np.load(d / vae.CHECKPOINT_NAME)["gen_W0"] for d in (small_run, other))
    assert not np.allclose(a, b)


def test_from_checkpoint_regenerates_the_same_figures(small_run, tmp_path):
    out = tmp_path / "regenerated"
    code = vae.main(["--from-checkpoint", str(small_run / vae.CHECKPOINT_NAME),
                     "--output-dir", str(out)])
    assert code == 0
    assert pngs(out) == pngs(small_run)


def test_latent_dim_2_adds_scatter_and_manifold(tmp_path):
    code, out = run(tmp_path, "two", "--latent-dim", "2", "--epochs", "1")
    assert code == 0
    assert {"latent_scatter.png", "latent_manifold.png"} <= set(pngs(out))


def test_float32_run_keeps_float32_parameters(tmp_path):
    code, out = run(tmp_path, "f32", "--dtype", "float32", "--epochs", "1")
    assert code == 0
    gen, rec, _, history = vae.load_checkpoint(out / vae.CHECKPOINT_NAME)
    assert {W.dtype for W, _ in gen + rec} == {np.dtype("float32")}
    assert np.isfinite(history[0]["test_elbo"])


def test_fast_loop_run_writes_every_file_and_records_its_stream(tmp_path):
    code, out = run(tmp_path, "fast", "--loop", "fast", "--dtype", "float32")
    assert code == 0
    assert set(FIGURES) <= set(pngs(out))
    metrics = json.loads((out / vae.METRICS_NAME).read_text())
    assert metrics["config"]["loop"] == "fast"
    assert "default_rng(0)" in metrics["binarization"]["train"]
    assert metrics["epochs"][-1]["test_elbo"] > metrics["epochs"][0]["test_elbo"]


def test_data_dir_trains_on_another_mnist_format_folder(tmp_path, idx_folder, capsys):
    code, out = run(tmp_path, "other", "--data-dir", str(idx_folder), "--n-train", "7",
                    "--batch-size", "3")
    assert code == 0
    assert "7 training and 3 test images" in capsys.readouterr().out
    assert json.loads((out / vae.METRICS_NAME).read_text())["config"]["data_dir"] == str(idx_folder)


def test_ctrl_c_keeps_a_checkpoint_of_the_last_completed_epoch(tmp_path, monkeypatch, capsys):
    code, one_epoch = run(tmp_path, "one", "--epochs", "1")
    assert code == 0
    real_step, steps = vae.adam_step, []

    def interrupted_in_epoch_two(*args, **kwargs):
        steps.append(1)
        if len(steps) == 3:   # 2 batches per epoch: the first step of epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(vae, "adam_step", interrupted_in_epoch_two)
    code, out = run(tmp_path, "interrupted")
    assert code == 130
    assert "--from-checkpoint" in capsys.readouterr().err
    gen, rec, _, history = vae.load_checkpoint(out / vae.CHECKPOINT_NAME)
    assert [e["epoch"] for e in history] == [1]
    expected = np.load(one_epoch / vae.CHECKPOINT_NAME)
    np.testing.assert_array_equal(gen[0][0], expected["gen_W0"])
    assert json.loads((out / vae.METRICS_NAME).read_text())["status"] == "interrupted"
    assert not list(out.glob("*.png")) and not list(out.glob(".*.tmp"))


def test_a_diverging_run_stops_with_a_message_and_writes_no_figures(tmp_path, capsys):
    with np.errstate(all="ignore"):
        code, out = run(tmp_path, "diverged", "--learning-rate", "1e3")
    assert code == 1
    message = capsys.readouterr().err
    assert "ELBO became nan" in message and "--learning-rate" in message
    assert not out.exists() or not list(out.glob("*.png"))


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_broken_checkpoint_is_refused_with_a_message(small_run, tmp_path, capsys, damage):
    broken = tmp_path / "checkpoint.npz"
    good = (small_run / vae.CHECKPOINT_NAME).read_bytes()
    broken.write_bytes(b"not a checkpoint" if damage == "garbage" else good[:len(good) // 2])
    assert vae.main(["--from-checkpoint", str(broken), "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(broken) in err and "not a checkpoint written by vae.py" in err


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        vae.atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


# ---------------------------------------------------------------- the command line

def test_defaults_are_the_assignment_s():
    args = vae.parse_args([])
    assert (args.epochs, args.batch_size, args.latent_dim, args.hidden_units, args.hidden_layers,
            args.learning_rate, args.seed, args.dtype) == (30, 200, 50, 200, 2, 1e-3, 0, "float64")
    assert args.n_train is None and args.data_dir is None and args.output_dir == Path("output")
    assert vae.layer_sizes(vars(args)) == ([50, 200, 200, 784], [784, 200, 200, 100])


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        vae.parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for default in (30, 200, 50, 2, 0.001, 0, "float64", "output"):
        assert f"(default: {default})" in text


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--epochs", "two"], ["--batch-size", "-5"], ["--latent-dim", "0"],
    ["--hidden-units", "-1"], ["--hidden-layers", "-1"], ["--learning-rate", "0"],
    ["--learning-rate", "nan"], ["--seed", "-1"], ["--n-train", "0"], ["--dtype", "float16"],
    ["--loop", "turbo"],
    ["--data-dir", "/no/such/folder"], ["--from-checkpoint", "/no/such/file.npz"],
])
def test_invalid_arguments_are_refused_in_one_line(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        vae.main(argv + ["--output-dir", str(tmp_path / "never")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and argv[0] in err
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
