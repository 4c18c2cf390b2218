"""Long runs: `--resume` continues a run exactly (both loops, both dtypes),
refuses what it cannot continue in one line; the literature's options
(`--init glorot`, `--adam-eps`, `--lr-schedule burda`) do what they say and
are recorded."""
import errno
import json
import math
import os
import re
import sys
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from vaelib import runs
import plotting
from vaelib import checkpoints, fastgrad, networks, training
import loops
from data import DATA_DIM
import vae
from holding import hold_lock


def initial_params(config, dtype, seed):
    """networks.initial_params with the skeleton's init_net_params, as vae.py passes it."""
    return networks.initial_params(config, dtype, seed, vae.init_net_params)

SMALL = ["--n-train", "300", "--batch-size", "100", "--hidden-units", "20",
         "--latent-dim", "3", "--no-progress"]   # 3 Adam steps per epoch


# ---------------------------------------------------------------- the loop itself

def small_problem(dtype):
    images = np.random.RandomState(0).rand(60, DATA_DIM).astype(dtype)
    config = {"latent_dim": 3, "hidden_units": 10, "hidden_layers": 2}
    return images, initial_params(config, dtype, seed=1)


def train_small(step, dtype, epochs, resume=None, params=None, rate=3e-3):
    """train on 60 random grey images, batch 25 (a short last batch); returns
    the parameters and the state after every epoch."""
    images, initial = small_problem(dtype)
    (gen, rec), ends = loops.train(step, *(params or initial), images, epochs, 25, rate,
                                   seed=7, activation="tanh", adam_eps=1e-4, resume=resume)
    return (gen, rec), [(end.epoch, (end.gen_params, end.rec_params), end.train_elbo, end.state)
                        for end in ends]


def flat(params):
    return np.concatenate([np.ravel(a) for net in params for layer in net for a in layer])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("step", [loops.SKELETON, loops.FAST])
def test_two_epochs_then_a_resume_to_four_equal_four_epochs_in_one_go(step, dtype):
    schedule = partial(training.burda_learning_rate, base=3e-3)   # changes at epochs 2 and 5
    whole, whole_states = train_small(step, dtype, 4, rate=schedule)
    _, first_states = train_small(step, dtype, 2, rate=schedule)
    np.random.seed(12345)   # whatever happened to the global stream in between
    epoch, params, _, state = first_states[-1]
    resumed, resumed_states = train_small(step, dtype, 4, resume=state, params=params,
                                          rate=schedule)
    assert epoch == 2 and [s[0] for s in resumed_states] == [3, 4]
    assert flat(resumed).dtype == dtype
    np.testing.assert_array_equal(flat(resumed), flat(whole))
    assert [s[2] for s in resumed_states] == [s[2] for s in whole_states[2:]]   # train ELBOs
    for key in ("adam_m", "adam_v"):
        np.testing.assert_array_equal(resumed_states[-1][3][key], whole_states[-1][3][key])
    assert resumed_states[-1][3]["adam_t"] == whole_states[-1][3]["adam_t"] == 4 * 3


def test_the_state_is_a_copy_that_later_steps_do_not_change():
    _, states = train_small(loops.FAST, "float64", 2)
    assert not np.array_equal(states[0][3]["adam_m"], states[1][3]["adam_m"])
    assert states[0][3]["adam_t"] == 3 and states[1][3]["adam_t"] == 6


def test_without_its_state_a_restart_differs():
    """The property the state exists for: restarting from the parameters alone
    (Adam's moments at zero, the stream reseeded) does not give the same run."""
    whole, _ = train_small(loops.FAST, "float64", 4)
    _, states = train_small(loops.FAST, "float64", 2)
    restarted, _ = train_small(loops.FAST, "float64", 2, params=states[-1][1])
    assert not np.allclose(flat(restarted), flat(whole))


# ---------------------------------------------------------------- the schedule

@pytest.mark.parametrize("epoch, stage", [(1, 0), (2, 1), (4, 1), (5, 2), (13, 2), (14, 3),
                                          (40, 3), (41, 4), (121, 4), (122, 5), (364, 5),
                                          (365, 6), (1093, 6), (1094, 7), (3280, 7), (5000, 7)])
def test_the_burda_schedule_gives_stage_i_for_3_to_the_i_passes(epoch, stage):
    # Burda et al. (2016), Sec. 5: 3^i passes at 0.001 * 10^(-i/7), i = 0..7.
    assert training.burda_learning_rate(epoch) == pytest.approx(1e-3 * 10 ** (-stage / 7), rel=1e-15)
    assert training.burda_learning_rate(epoch, base=2e-3) == pytest.approx(
        2e-3 * 10 ** (-stage / 7), rel=1e-15)


def test_the_burda_stages_last_3_to_the_i_epochs_and_3280_in_all():
    rates = [training.burda_learning_rate(e) for e in range(1, 3281)]
    lengths = [sum(1 for r in rates if r == value) for value in sorted(set(rates), reverse=True)]
    assert lengths == [3 ** i for i in range(8)] and sum(lengths) == 3280
    assert training.burda_learning_rate(3280) == pytest.approx(1e-4)   # 10^(-7/7)


def test_the_loop_uses_the_rate_of_each_epoch(monkeypatch):
    seen = []
    original = fastgrad.adam_step
    monkeypatch.setattr(fastgrad, "adam_step", lambda *a, **k: (
        seen.append(a[5]), original(*a, **k))[1])
    train_small(loops.FAST, "float64", 3, rate=lambda epoch: 10.0 ** -epoch)
    assert seen == [0.1] * 3 + [0.01] * 3 + [0.001] * 3


# ---------------------------------------------------------------- init and Adam's eps

def test_glorot_weights_are_uniform_within_their_bound_and_biases_zero():
    np.random.seed(0)
    params = networks.init_glorot_params([784, 200, 50])
    for (W, b), (m, n) in zip(params, [(784, 200), (200, 50)]):
        bound = math.sqrt(6 / (m + n))
        assert W.shape == (m, n) and np.all(np.abs(W) <= bound) and np.all(b == 0)
        # U(-a, a): variance a^2 / 3 = 2 / (m + n); that of W's sample variance
        # is about (a^4 / 5 - a^4 / 9) / size.
        se = math.sqrt((bound ** 4 / 5 - bound ** 4 / 9) / W.size)
        assert abs(W.var() - bound ** 2 / 3) < 4 * se
        assert abs(W.max() - bound) < 1e-3 * bound   # the draws reach the bound


def test_glorot_init_draws_from_the_seeded_global_stream():
    config = {"latent_dim": 3, "hidden_units": 10, "hidden_layers": 1, "init": "glorot"}
    a, b = (initial_params(config, "float64", seed=4) for _ in range(2))
    np.testing.assert_array_equal(flat(a), flat(b))
    normal = initial_params({**config, "init": "normal"}, "float64", seed=4)
    assert np.std(flat(normal)) < 0.02 < np.std(flat(a))


def test_adam_uses_its_eps():
    params, gradient = np.zeros(3), np.array([1e-3, 1e-6, 1.0])
    for eps in (1e-8, 1e-4):
        training.in_place_adam()(params, gradient, np.zeros(3), np.zeros(3), 1, 1e-3, eps=eps)
        expected, _, _ = vae.adam_step(np.zeros(3), gradient, np.zeros(3), np.zeros(3), 1,
                                       1e-3, eps=eps)
        np.testing.assert_allclose(params, expected, rtol=1e-12)
        params[:] = 0
    # eps 1e-4 damps the step of a 1e-6 gradient: 1e-3 * 1e-6 / (1e-6 + 1e-4).
    assert expected[1] == pytest.approx(1e-3 * 1e-6 / (1e-6 + 1e-4), rel=1e-9)


# ---------------------------------------------------------------- the command line

@pytest.fixture(scope="module")
def four_epochs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    out = {}
    for loop in ("skeleton", "fast"):
        out[loop] = tmp / loop
        assert vae.main(SMALL + ["--epochs", "4", "--loop", loop, "--lr-schedule", "burda",
                                 "--init", "glorot", "--adam-eps", "1e-4", "--activation",
                                 "tanh", "--output-dir", str(out[loop])]) == 0
    return out


def two_epochs(folder, loop, *extra):
    assert vae.main(SMALL + ["--epochs", "2", "--loop", loop, "--lr-schedule", "burda",
                             "--init", "glorot", "--adam-eps", "1e-4", "--activation", "tanh",
                             "--output-dir", str(folder), *extra]) == 0
    return folder / runs.CHECKPOINT_NAME


def arrays(path):
    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files
                if name not in ("history", "state", "config")}


@pytest.mark.parametrize("loop", ["skeleton", "fast"])
def test_the_command_line_resume_equals_the_uninterrupted_run(four_epochs, tmp_path, loop,
                                                              capsys):
    checkpoint = two_epochs(tmp_path / "r", loop)
    capsys.readouterr()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "4", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"Resuming {checkpoint} after epoch 2, to epoch 4" in printed
    resumed, whole = arrays(checkpoint), arrays(four_epochs[loop] / runs.CHECKPOINT_NAME)
    assert resumed.keys() == whole.keys() and "state_adam_m" in whole
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)
    a, b = (json.loads((folder / runs.METRICS_NAME).read_text())
            for folder in (tmp_path / "r", four_epochs[loop]))
    assert a["status"] == b["status"] == "complete" and a["config"] == b["config"]
    keep = ("epoch", "train_elbo", "test_elbo", "learning_rate")
    assert [{k: r[k] for k in keep} for r in a["epochs"]] == [
        {k: r[k] for k in keep} for r in b["epochs"]]
    figures = {p.name: p.read_bytes() for p in sorted((tmp_path / "r").glob("*.png"))}
    assert figures and figures == {
        p.name: p.read_bytes() for p in sorted(four_epochs[loop].glob("*.png"))}


def test_the_sittings_are_recorded(tmp_path):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    assert vae.main(["--resume", str(checkpoint), "--epochs", "3", "--no-progress"]) == 0
    assert vae.main(["--resume", str(checkpoint), "--epochs", "4", "--no-progress"]) == 0
    sittings = checkpoints.load_state(checkpoint)["sittings"]
    assert [(s["first_epoch"], s["last_epoch"]) for s in sittings] == [(1, 2), (3, 3), (4, 4)]
    metrics = json.loads((tmp_path / "r" / runs.METRICS_NAME).read_text())
    assert metrics["wall_seconds"] >= sum(s["wall_seconds"] for s in sittings) > 0


def test_the_new_options_are_recorded_in_metrics_and_checkpoint(four_epochs):
    folder = four_epochs["fast"]
    config = json.loads((folder / runs.METRICS_NAME).read_text())["config"]
    assert checkpoints.load_model(folder / runs.CHECKPOINT_NAME)[2] == config
    assert (config["init"], config["lr_schedule"], config["adam_eps"]) == ("glorot", "burda", 1e-4)
    rates = [r["learning_rate"] for r in
             json.loads((folder / runs.METRICS_NAME).read_text())["epochs"]]
    assert rates == [training.burda_learning_rate(e) for e in (1, 2, 3, 4)]


def test_the_defaults_are_the_assignment_s(tmp_path):
    args = vae.parse_args([])
    assert (args.init, args.lr_schedule, args.adam_eps) == ("normal", "constant", 1e-8)


def test_a_checkpoint_from_before_resuming_existed_loads_and_says_it_cannot_resume(
        four_epochs, tmp_path, capsys):
    old = tmp_path / "old" / runs.CHECKPOINT_NAME
    gen, rec, config, history = checkpoints.load_model(four_epochs["fast"] / runs.CHECKPOINT_NAME)
    for key in ("init", "lr_schedule", "adam_eps"):
        del config[key]
    config["adam"] = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
    checkpoints.save_model(old, gen, rec, config, history)   # no state, as before
    loaded = checkpoints.load_model(old)[2]
    assert (loaded["init"], loaded["lr_schedule"], loaded["adam_eps"]) == (
        "normal", "constant", 1e-8)
    assert vae.main(["--from-checkpoint", str(old)]) == 0
    capsys.readouterr()
    assert vae.main(["--resume", str(old), "--epochs", "9"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be continued exactly" in err


@pytest.mark.parametrize("change, says", [
    (["--dtype", "float64"], "--dtype float64 (the run has float32)"),
    (["--hidden-units", "30"], "--hidden-units 30 (the run has 20)"),
    (["--loop", "skeleton"], "--loop skeleton (the run has fast)"),
    (["--lr-schedule", "constant"], "--lr-schedule constant (the run has burda)"),
])
def test_a_resume_that_would_change_the_run_is_refused_in_one_line(tmp_path, capsys, change,
                                                                   says):
    checkpoint = two_epochs(tmp_path / "r", "fast", "--dtype", "float32")
    before = checkpoint.read_bytes()
    capsys.readouterr()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "4", *change]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "keeps the settings" in err
    assert checkpoint.read_bytes() == before


def test_restating_the_run_s_own_settings_is_accepted(tmp_path):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    assert vae.main(["--resume", str(checkpoint), "--epochs", "3", "--loop", "fast",
                     "--hidden-units", "20", "--no-progress"]) == 0


def test_a_resume_to_no_more_epochs_is_refused_in_one_line(tmp_path, capsys):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    capsys.readouterr()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds 2 epochs" in err


@pytest.mark.parametrize("extra", [["--output-dir", "x"], ["--overwrite"],
                                   ["--from-checkpoint", "README.md"]])
def test_resume_takes_no_output_dir_overwrite_or_from_checkpoint(extra, capsys):
    with pytest.raises(SystemExit) as stop:
        vae.parse_args(["--resume", "README.md", *extra])
    assert stop.value.code == 2
    assert "--resume continues the run in the checkpoint's folder" in capsys.readouterr().err


def test_an_inconsistent_state_is_refused(tmp_path, capsys):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    gen, rec, config, history = checkpoints.load_model(checkpoint)
    state = checkpoints.load_state(checkpoint)
    state["adam_m"] = state["adam_m"][:-1]
    checkpoints.save_model(checkpoint, gen, rec, config, history, state)
    capsys.readouterr()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "4"]) == 1
    assert "inconsistent training state" in capsys.readouterr().err


def test_an_interrupted_resume_keeps_the_last_epoch_and_says_how_to_continue(
        tmp_path, monkeypatch, capsys):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    original = checkpoints.save_model

    def interrupt_in_epoch_4(path, gen, rec, config, history, state=None):
        if history[-1]["epoch"] == 4:
            raise KeyboardInterrupt
        original(path, gen, rec, config, history, state)
    monkeypatch.setattr(checkpoints, "save_model", interrupt_in_epoch_4)
    capsys.readouterr()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "5", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"--resume {checkpoint} --epochs 5" in err
    assert checkpoints.load_state(checkpoint)["epoch"] == 3
    metrics = json.loads((tmp_path / "r" / runs.METRICS_NAME).read_text())
    assert metrics["status"] == "interrupted" and len(metrics["epochs"]) == 3


def test_the_checkpoint_state_is_plain_arrays_and_json(tmp_path):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    with zipfile.ZipFile(checkpoint) as z:
        names = set(z.namelist())
    assert {"state.npy", "state_adam_m.npy", "state_adam_v.npy", "state_global_key.npy"} <= names
    with np.load(checkpoint, allow_pickle=False) as archive:   # no pickles needed
        state = json.loads(str(archive["state"]))
    assert state["epoch"] == 2 and state["adam_t"] == 6


@pytest.mark.parametrize("report", ["evaluation_test_sample.json", "conditional_top.png"])
def test_a_resume_beside_reports_on_the_current_checkpoint_is_refused(tmp_path, capsys, report):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    (tmp_path / "r" / report).write_text("a report on epoch 2")
    before = checkpoint.read_bytes()
    capsys.readouterr()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and report in err and "move them elsewhere" in err
    assert checkpoint.read_bytes() == before


# ---------------------------------------------------------------- one writer per run

@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_a_run_that_another_process_is_writing_is_refused_and_then_resumes_when_it_ends(
        tmp_path, capsys):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    before = checkpoint.read_bytes()
    holder = hold_lock(tmp_path / "r")
    try:
        capsys.readouterr()
        assert vae.main(["--resume", str(checkpoint), "--epochs", "3", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "another process is writing a run into" in err
        assert checkpoint.read_bytes() == before
        # a fresh run into the same folder is refused by the same lock
        assert vae.main(SMALL + ["--epochs", "1", "--output-dir", str(tmp_path / "r"),
                                 "--overwrite"]) == 2
        assert checkpoint.read_bytes() == before
    finally:
        holder.kill()   # however the holder ends, the kernel releases its lock
        holder.wait()
    assert vae.main(["--resume", str(checkpoint), "--epochs", "3", "--no-progress"]) == 0
    assert checkpoints.load_state(checkpoint)["epoch"] == 3


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl")
def test_the_lock_is_held_while_a_run_trains_and_released_after(tmp_path, monkeypatch):
    seen = []
    original = checkpoints.save_model

    def try_the_lock(path, *args, **kwargs):
        with pytest.raises(runs.RunError, match="another process is writing"):
            with runs.locked(path.parent, "vae.py"):
                pass
        seen.append(path)
        original(path, *args, **kwargs)
    monkeypatch.setattr(checkpoints, "save_model", try_the_lock)
    two_epochs(tmp_path / "r", "fast")
    assert len(seen) == 2
    with runs.locked(tmp_path / "r", "vae.py"):   # free again
        pass


def test_a_folder_that_cannot_be_opened_for_its_lock_is_said_in_one_line(tmp_path):
    with pytest.raises(runs.RunError, match="cannot open .* to lock it"):
        with runs.locked(tmp_path / "missing", "vae.py"):
            pass


# ---------------------------------------------------------------- a disk that fills

def fill_the_disk(monkeypatch, when, also=lambda path: True):
    """From the first write for which when(path) holds, every write for which
    also(path) holds fails as on a full disk (ENOSPC), as the writers' open or
    fsync would; every file of a run is written through runs.atomic_write or,
    for a figure, plotting's own atomic writer."""
    full = []

    def failing(real):
        def atomic_write(path, write):
            path = Path(path)
            if full or when(path):
                full.append(path)
                if also(path):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return real(path, write)
        return atomic_write
    monkeypatch.setattr(runs, "atomic_write", failing(runs.atomic_write))
    monkeypatch.setattr(plotting, "_write_png", failing(plotting._write_png))
    return full


def suggested_resume(err):
    """The arguments of the `python vae.py --resume ...` command in a message."""
    return re.search(r"`python vae\.py (--resume \S+ --epochs \d+)`", err).group(1).split()


@pytest.mark.parametrize("metrics_too", [False, True], ids=["checkpoint", "every file"])
def test_a_full_disk_stops_in_one_line_and_the_resume_it_gives_continues_exactly(
        four_epochs, tmp_path, monkeypatch, capsys, metrics_too):
    checkpoint = two_epochs(tmp_path / "r", "fast")
    kept = checkpoint.read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as patch:   # epoch 3's checkpoint does not fit
        full = fill_the_disk(patch, lambda path: path.name == runs.CHECKPOINT_NAME,
                             also=lambda path: metrics_too or path.name != runs.METRICS_NAME)
        assert vae.main(["--resume", str(checkpoint), "--epochs", "4", "--no-progress"]) == 1
    assert full and checkpoint.read_bytes() == kept                # epoch 2, intact
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]   # no .tmp
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"Training stopped: the disk is full (No space left on device) in "
                          f"{tmp_path / 'r'}; {checkpoint} holds epoch 2: continue with "
                          f"`python vae.py --resume {checkpoint} --epochs 4`")
    metrics = json.loads((tmp_path / "r" / runs.METRICS_NAME).read_text())
    if metrics_too:   # metrics.json could not be written: as the last write left it
        assert metrics["status"] == "running" and "could not be updated" in err
    else:
        assert metrics["status"] == "stopped: disk full" and len(metrics["epochs"]) == 2
    assert vae.main([*suggested_resume(err), "--no-progress"]) == 0
    resumed, whole = arrays(checkpoint), arrays(four_epochs["fast"] / runs.CHECKPOINT_NAME)
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


def test_a_disk_that_fills_while_the_figures_are_drawn_says_the_training_is_complete(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    with monkeypatch.context() as patch:
        fill_the_disk(patch, lambda path: path.suffix == ".png",
                      also=lambda path: path.name != runs.METRICS_NAME)
        assert vae.main(SMALL + ["--epochs", "2", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    checkpoint = out / runs.CHECKPOINT_NAME
    assert err.count("\n") == 1 and "all 2 epochs: training is complete" in err
    assert f"`python vae.py --from-checkpoint {checkpoint}`" in err
    assert json.loads((out / runs.METRICS_NAME).read_text())["status"] == "stopped: disk full"
    assert vae.main(["--from-checkpoint", str(checkpoint)]) == 0


def test_a_disk_full_before_the_first_epoch_ends_leaves_the_folder_free(tmp_path, monkeypatch,
                                                                       capsys):
    out = tmp_path / "r"
    with monkeypatch.context() as patch:
        fill_the_disk(patch, lambda path: path.name == runs.CHECKPOINT_NAME)
        assert vae.main(SMALL + ["--epochs", "2", "--output-dir", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no epoch was completed, nothing was saved" in err
    assert runs.run_files(out, runs.RUN_FILES) == []
