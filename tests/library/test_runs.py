"""runs.py: the run machinery on its own, without a model: argument types,
atomic files, the output-folder guard, the memory and disk checks, checkpoint
validation, SIGTERM and a training run's records."""
import argparse
import errno
import json
import os
import signal
from collections import namedtuple

import numpy as np
import pytest

from vaelib import arguments, checkpoints, runs
from holding import hold_lock

PATTERNS = ("checkpoint.npz", "metrics.json", "*.png", "evaluation_*.json")


def touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode())


def refusal(excinfo):
    """(message, exit code) of a raised RunError."""
    return str(excinfo.value), excinfo.value.exit_code


# ---------------------------------------------------------------- the command line

def parser_with(*options):
    parser = arguments.OneLineErrorParser(prog="prog")
    for option in options:
        parser.add_argument(option, type=arguments.positive_int, default=1)
    return parser


def test_parser_errors_are_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        parser_with("--epochs").parse_args(["--epochs", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("prog: error:") and "(see --help)" in err


def test_parser_refuses_abbreviated_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        parser_with("--epochs").parse_args(["--epo", "3"])
    assert exit_.value.code == 2 and "--epo" in capsys.readouterr().err


@pytest.mark.parametrize("argv, given", [
    ([], set()),
    (["--epochs", "3"], {"--epochs"}),
    (["--epochs=3"], {"--epochs"}),
    (["--epochs", "1"], {"--epochs"}),          # given even when equal to the default
    (["--epochs", "3", "--seed", "2"], {"--epochs", "--seed"}),
    (["--output-dir", "out", "--overwrite"], {"--output-dir", "--overwrite"}),
])
def test_given_options_are_the_long_options_in_argv(argv, given):
    assert arguments.given_options(argv) == given


def test_output_dir_refuses_an_existing_file():
    with pytest.raises(argparse.ArgumentTypeError, match="exists and is not a folder"):
        arguments.output_dir(__file__)


@pytest.mark.parametrize("parse, text", [
    (arguments.positive_int, "0"), (arguments.positive_int, "-3"), (arguments.positive_int, "1.5"),
    (arguments.positive_int, "two"), (arguments.positive_int, ""),
    (arguments.nonnegative_int, "-1"), (arguments.nonnegative_int, "x"),
    (arguments.seed_int, "-1"), (arguments.seed_int, str(2 ** 32)),
    (arguments.positive_float, "0"), (arguments.positive_float, "-1e-3"), (arguments.positive_float, "nan"),
    (arguments.positive_float, "inf"), (arguments.positive_float, "1e400"), (arguments.positive_float, "x"),
    (arguments.existing_dir, "/no/such/folder"), (arguments.existing_dir, __file__),
    (arguments.existing_file, "/no/such/file.npz"), (arguments.existing_file, os.path.dirname(__file__)),
    (arguments.existing_dir, ""), (arguments.existing_file, ""),
    (arguments.output_path, ""), (arguments.output_path, "   "),
])
def test_argument_types_refuse_bad_values(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


@pytest.mark.parametrize("parse, text, value", [
    (arguments.positive_int, "1", 1), (arguments.nonnegative_int, "0", 0),
    (arguments.seed_int, "0", 0), (arguments.seed_int, str(2 ** 32 - 1), 2 ** 32 - 1),
    (arguments.positive_float, "1e-3", 1e-3),
])
def test_argument_types_accept_good_values(parse, text, value):
    assert parse(text) == value


# ---------------------------------------------------------------- files

def test_output_file_refuses_a_folder_and_a_missing_folder_and_creates_nothing(tmp_path):
    with pytest.raises(argparse.ArgumentTypeError, match="is a folder; name a file"):
        arguments.output_file(str(tmp_path))
    with pytest.raises(argparse.ArgumentTypeError,
                       match=f"the folder {tmp_path / 'missing'} does not exist"):
        arguments.output_file(str(tmp_path / "missing" / "report.json"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(argparse.ArgumentTypeError, match="a_file is not a folder"):
        arguments.output_file(str(tmp_path / "a_file" / "report.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    assert arguments.output_file(str(tmp_path / "report.json")) == tmp_path / "report.json"


def test_check_output_file_refuses_an_existing_file_only_without_overwrite(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("{}")
    with pytest.raises(runs.RunError, match="--json: .*report.json exists; choose another "
                                            "--json or pass --overwrite") as e:
        arguments.check_output_file(path, "--json", overwrite=False)
    assert e.value.exit_code == 2
    arguments.check_output_file(path, "--json", overwrite=True)
    arguments.check_output_file(path, "--json")                    # a script that replaces it
    with pytest.raises(runs.RunError, match="is a folder"):
        arguments.check_output_file(tmp_path, "--json", overwrite=True)


@pytest.mark.parametrize("seconds, text", [(0.2, "about 1 second"), (40, "about 40 seconds"),
                                           (600, "about 10 minutes"), (9000, "about 2.5 hours")])
def test_format_duration(seconds, text):
    assert runs.format_duration(seconds) == text


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_estimates_from_the_pace_after_the_first_update_then_prints_tenths(capsys):
    # The first unit takes 5 s (warm-up), then 1 s each: 80 units take
    # 5 + 79 = 84 s; the estimate comes once a second has been measured.
    clock = FakeClock()
    with runs.Progress(80, "x.py", "work", clock=clock) as progress:
        for unit in range(80):
            clock.now += 5 if unit == 0 else 1
            progress.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "x.py: work: about 84 seconds in all (measured on the first 2.5%)"
    assert lines[1:] == [f"x.py: work: {t}0% done, about {80 - 8 * t} seconds left"
                         for t in range(1, 10)]


def test_progress_of_short_work_prints_nothing_and_no_bar_prints_only_the_estimate(capsys):
    clock = FakeClock()
    with runs.Progress(100, "x.py", "work", clock=clock) as progress:
        for _ in range(100):
            clock.now += 0.05                   # 5 s in all: below LONG_SECONDS
            progress.update(1)
    assert capsys.readouterr().err == ""
    with runs.Progress(100, "x.py", "work", bar=False, clock=clock) as progress:
        for _ in range(100):
            clock.now += 60
            progress.update(1)
    assert capsys.readouterr().err.splitlines() == [
        "x.py: work: about 1.7 hours in all (measured on the first 2.0%)"]


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    runs.atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def fail(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write(path, fail)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_write_json_round_trips(tmp_path):
    content = {"status": "complete", "epochs": [{"epoch": 1, "elbo": -123.456789012345}],
               "none": None, "text": "nats \u00e9"}
    runs.write_json(tmp_path / "a" / "metrics.json", content)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == content


def test_check_writable_creates_the_folder_and_leaves_it_empty(tmp_path):
    runs.check_writable(tmp_path / "new" / "out")
    assert list((tmp_path / "new" / "out").iterdir()) == []


def test_check_writable_refuses_a_folder_under_a_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(runs.RunError) as e:
        runs.check_writable(tmp_path / "file" / "out", what="the output folder")
    message, code = refusal(e)
    assert code == 1 and str(tmp_path / "file" / "out") in message and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(runs.RunError) as e:
        runs.check_writable(tmp_path / "ro" / "out")
    assert refusal(e)[1] == 1


def test_check_writable_refuses_a_full_disk(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda path: usage(2 ** 30, 2 ** 30, 0))
    with pytest.raises(runs.RunError) as e:
        runs.check_writable(tmp_path, need_bytes=3 * 2 ** 20)
    message, code = refusal(e)
    assert code == 1 and "0 MiB free" in message and "3 MiB" in message


def test_run_files_are_the_matching_files_sorted(tmp_path):
    touch(tmp_path, "metrics.json", "b.png", "a.png", "notes.txt")
    (tmp_path / "c.png").mkdir()   # a folder is never a run's file
    assert [p.name for p in runs.run_files(tmp_path, PATTERNS)] == [
        "a.png", "b.png", "metrics.json"]


def test_run_files_of_a_missing_folder_are_none(tmp_path):
    assert runs.run_files(tmp_path / "missing", PATTERNS) == []


def test_describe_run_reads_status_and_epochs_from_metrics(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"status": "complete", "config": {"epochs": 30}, "epochs": [{}, {}]}))
    touch(tmp_path, "checkpoint.npz")
    files = runs.run_files(tmp_path, PATTERNS)
    assert runs.describe_run(tmp_path, files) == (
        "metrics.json: status complete, 2 of 30 epochs; checkpoint.npz")


def test_describe_run_counts_the_files_it_does_not_name(tmp_path):
    touch(tmp_path, *[f"{i}.png" for i in range(6)])
    assert runs.describe_run(tmp_path, runs.run_files(tmp_path, PATTERNS)) == (
        "0.png, 1.png, 2.png, 3.png and 2 more")


def test_describe_run_of_an_unreadable_metrics_file(tmp_path):
    (tmp_path / "metrics.json").write_text("{not json")
    assert runs.describe_run(tmp_path, runs.run_files(tmp_path, PATTERNS)) == (
        "metrics.json (not one of ours)")


def test_describe_run_of_a_metrics_file_of_another_program(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": 30, "lr": 0.001}))
    assert runs.describe_run(tmp_path, runs.run_files(tmp_path, PATTERNS)) == (
        "metrics.json (not one of ours)")


def test_claim_output_dir_says_how_many_files_it_deleted_when_one_cannot_be(tmp_path,
                                                                            monkeypatch):
    touch(tmp_path, "a.png", "b.png", "checkpoint.npz")
    real_unlink = type(tmp_path).unlink

    def unlink(path, *args, **kwargs):
        if path.name == "b.png":
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "unlink", unlink)
    with pytest.raises(runs.RunError) as e:
        runs.claim_output_dir(tmp_path, PATTERNS, overwrite=True, prog="prog")
    message, code = refusal(e)
    assert code == 1 and "cannot delete" in message and "b.png" in message
    assert "1 of the run's 3 files were deleted" in message


def test_claim_output_dir_refuses_a_folder_holding_a_run(tmp_path):
    touch(tmp_path, "evaluation_test.json")
    with pytest.raises(runs.RunError) as e:
        runs.claim_output_dir(tmp_path, PATTERNS, overwrite=False, prog="prog")
    assert refusal(e)[1] == 2


def test_claim_output_dir_names_the_folder_and_its_run_s_files(tmp_path):
    touch(tmp_path, "checkpoint.npz", "samples.png", "notes.txt")
    with pytest.raises(runs.RunError) as e:
        runs.claim_output_dir(tmp_path, PATTERNS, overwrite=False, prog="prog")
    message = refusal(e)[0]
    assert "\n" not in message and str(tmp_path) in message
    assert "checkpoint.npz" in message and "samples.png" in message
    assert "notes.txt" not in message and "--overwrite" in message


def test_claim_output_dir_refusing_touches_nothing(tmp_path):
    touch(tmp_path, "checkpoint.npz", "metrics.json", "notes.txt")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    with pytest.raises(runs.RunError):
        runs.claim_output_dir(tmp_path, PATTERNS, overwrite=False, prog="prog")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_claim_output_dir_with_overwrite_deletes_exactly_the_run_s_files(tmp_path):
    touch(tmp_path, "checkpoint.npz", "metrics.json", "a.png", "evaluation_x.json",
          "notes.txt", "evaluation_x.txt", "checkpoint.npz.bak")
    touch(tmp_path / "sub", "metrics.json")
    runs.claim_output_dir(tmp_path, PATTERNS, overwrite=True, prog="prog")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.npz.bak", "evaluation_x.txt", "notes.txt", "sub"]
    assert (tmp_path / "sub" / "metrics.json").exists()


def test_claim_output_dir_accepts_a_missing_folder_without_creating_it(tmp_path):
    runs.claim_output_dir(tmp_path / "new", PATTERNS, overwrite=False, prog="prog")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- memory

@pytest.mark.parametrize("n, text", [
    (0, "0 MiB"), (5 * 2 ** 20, "5 MiB"), (2 ** 30, "1.0 GiB"), (3 * 2 ** 29, "1.5 GiB")])
def test_format_bytes(n, text):
    assert runs.format_bytes(n) == text


def test_available_memory_is_a_positive_number_of_bytes():
    available = runs.available_memory()
    assert isinstance(available, int) and available > 0


def test_check_memory_refuses_more_than_is_available_and_says_how_much(monkeypatch):
    monkeypatch.setattr(runs, "available_memory", lambda: 2 ** 30)
    with pytest.raises(runs.RunError) as e:
        runs.check_memory(2 ** 31, "this model")
    message, code = refusal(e)
    assert code == 2 and "this model" in message and "2.0 GiB" in message and "1.0 GiB" in message


def test_count_params_counts_weights_and_biases():
    assert runs.count_params([[3, 4, 2], [2, 5]]) == (3 * 4 + 4) + (4 * 2 + 2) + (2 * 5 + 5)


def test_training_memory_counts_parameters_and_activations():
    # 2x3 layer: 9 parameters, drawn in float64 (8 B) and held 7 times in float32
    # (4 B); 10 rows through 2 + 3 units, forward and backward (4 copies, 4 B).
    assert runs.training_memory([[2, 3]], "float32", 10) == 9 * (8 + 7 * 4) + 4 * 10 * 5 * 4


def test_check_memory_accepts_what_is_available(monkeypatch):
    monkeypatch.setattr(runs, "available_memory", lambda: 2 ** 30)
    runs.check_memory(2 ** 30, "this model")


# ---------------------------------------------------------------- checkpoints

CONFIG = {"sizes": [2, 3, 1]}


def sizes(config):
    return {"net": config["sizes"]}


def tiny_networks():
    rs = np.random.RandomState(0)
    return {"net": [(rs.randn(2, 3), rs.randn(3)), (rs.randn(3, 1), rs.randn(1))]}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.npz"
    checkpoints.save_checkpoint(path, tiny_networks(), CONFIG, [{"epoch": 1}])
    return path


def test_checkpoint_round_trips(tiny_checkpoint):
    networks, config, history = checkpoints.load_checkpoint(tiny_checkpoint, sizes)
    assert config == CONFIG and history == [{"epoch": 1}]
    for ours, theirs in zip(networks["net"], tiny_networks()["net"], strict=True):
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_checkpoint_is_readable_without_pickle(tiny_checkpoint):
    with np.load(tiny_checkpoint, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["config", "history", "net_W0", "net_W1",
                                         "net_b0", "net_b1"]


def damaged(path, damage):
    """Rewrites the checkpoint at path with one kind of damage."""
    if damage == "not a zip":
        path.write_text("epoch,elbo\n1,-120\n")
        return
    with np.load(path) as archive:
        arrays = dict(archive)
    if damage == "wrong shape":
        arrays["net_W1"] = np.zeros((3, 2))
    elif damage == "wrong bias shape":
        arrays["net_b0"] = np.zeros(2)
    elif damage == "NaN":
        arrays["net_W0"] = np.where(np.eye(2, 3) > 0, np.nan, arrays["net_W0"])
    elif damage == "infinite":
        arrays["net_b1"] = np.array([np.inf])
    elif damage == "missing weights":
        del arrays["net_W1"]
    elif damage == "missing config":
        del arrays["config"]
    elif damage == "integers":
        arrays["net_W0"] = np.ones((2, 3), dtype=np.int64)
    elif damage == "config not JSON":
        arrays["config"] = np.array("{sizes")
    elif damage == "history not a list":
        arrays["history"] = np.array("5")
    elif damage == "object array":
        arrays["net_W0"] = np.array([{"W": 1}], dtype=object)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage, problem", [
    ("not a zip", "not an .npz archive"),
    ("wrong shape", "net_W1 is (3, 2) and net_b1 (1,), but its configuration says (3, 1)"),
    ("wrong bias shape", "net_b0 (2,), but its configuration says (2, 3) and (3,)"),
    ("NaN", "NaN or infinite"),
    ("infinite", "NaN or infinite"),
    ("missing weights", "no net_W1 or net_b1"),
    ("missing config", "no 'config' entry"),
    ("integers", "net_W0 holds int64, not floating-point"),
    ("config not JSON", "JSONDecodeError"),
    ("history not a list", "history not a list of dicts"),
    ("object array", "it holds Python objects, not plain arrays"),
])
def test_a_damaged_checkpoint_is_refused_saying_what_is_wrong(tiny_checkpoint, damage, problem):
    damaged(tiny_checkpoint, damage)
    with pytest.raises(runs.RunError) as e:
        checkpoints.load_checkpoint(tiny_checkpoint, sizes, written_by="train.py")
    message, code = refusal(e)
    assert code == 1 and "\n" not in message and problem in message
    assert message.startswith(f"{tiny_checkpoint} is not a checkpoint written by train.py")


def test_a_text_file_is_refused_without_numpy_s_allow_pickle_hint(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("these are notes, not arrays\n")
    with pytest.raises(runs.RunError) as e:
        checkpoints.load_checkpoint(path, sizes)
    assert "allow_pickle" not in refusal(e)[0]


# ---------------------------------------------------------------- signals

@pytest.fixture
def sigterm_handler():
    """A Python SIGTERM handler for the test, so a SIGTERM that escapes the
    code under test fails the test instead of killing pytest."""
    def escaped(signum, frame):
        raise AssertionError("SIGTERM reached the handler installed before the block")
    previous = signal.signal(signal.SIGTERM, escaped)
    yield escaped
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_in_the_block_raises_terminated(sigterm_handler):
    with pytest.raises(runs.Terminated):
        with runs.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_as_interrupt_does_nothing_outside_the_main_thread():
    import threading
    errors = []

    def body():
        try:
            with runs.sigterm_as_interrupt():
                pass
        except Exception as e:   # signal.signal raises ValueError outside the main thread
            errors.append(e)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert errors == []


def test_terminated_is_caught_as_a_keyboard_interrupt():
    assert issubclass(runs.Terminated, KeyboardInterrupt)


def test_sigterm_as_interrupt_restores_the_previous_handler(sigterm_handler):
    with runs.sigterm_as_interrupt():
        pass
    assert signal.getsignal(signal.SIGTERM) is sigterm_handler


def test_sigterm_as_interrupt_restores_the_previous_handler_after_an_exception(
        sigterm_handler):
    with pytest.raises(ValueError):
        with runs.sigterm_as_interrupt():
            raise ValueError
    assert signal.getsignal(signal.SIGTERM) is sigterm_handler


@pytest.mark.parametrize("interrupt, expected", [
    (KeyboardInterrupt(), ("interrupted", 130)),     # 128 + SIGINT
    (runs.Terminated(), ("terminated", 143)),        # 128 + SIGTERM
])
def test_interruption_maps_the_signal_to_status_and_exit_code(interrupt, expected):
    assert runs.interruption(interrupt) == expected


def test_run_error_defaults_to_exit_code_1():
    assert runs.RunError("problem").exit_code == 1


def test_library_versions_name_the_libraries():
    assert set(runs.library_versions()) == {"python", "numpy", "autograd", "scipy", "matplotlib"}


# ---------------------------------------------------------------- a training run's records

def metrics_of(history, status, wall_seconds, **extra):
    return {"status": status, "epochs": [r["epoch"] for r in history],
            "wall_seconds": wall_seconds, **extra}


def read_metrics(folder):
    return json.loads((folder / runs.METRICS_NAME).read_text())


def test_an_epoch_is_saved_before_metrics_json_names_it(tmp_path):
    run = runs.TrainingRun(tmp_path, metrics_of, history=[{"epoch": 1}])
    seen = []

    def save(history):   # the checkpoint: metrics.json must not name epoch 2 yet
        seen.append(([r["epoch"] for r in history], read_metrics(tmp_path)["epochs"]))
    run.write_metrics("running")
    run.add_epoch({"epoch": 2}, save)
    assert seen == [([1, 2], [1])]
    assert read_metrics(tmp_path)["epochs"] == [1, 2] and run.history[-1] == {"epoch": 2}


def test_a_failed_save_leaves_the_epoch_out_of_history_and_metrics(tmp_path):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.write_metrics("running")

    def save(history):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run.add_epoch({"epoch": 1}, save)
    assert run.history == [] and read_metrics(tmp_path)["epochs"] == []


def test_wall_seconds_add_up_over_sittings(tmp_path):
    earlier = [{"first_epoch": 1, "last_epoch": 2, "wall_seconds": 100.0},
               {"first_epoch": 3, "last_epoch": 4, "wall_seconds": 50.0}]
    run = runs.TrainingRun(tmp_path, metrics_of, [{"epoch": e} for e in range(1, 5)], earlier)
    assert 150.0 <= run.wall_seconds() < 160.0
    sittings = run.with_this_sitting(6)
    assert sittings[:2] == earlier and run.sittings == earlier   # the run's list is not changed
    assert sittings[2]["first_epoch"] == 5 and sittings[2]["last_epoch"] == 6
    assert 0.0 <= sittings[2]["wall_seconds"] < 10.0


@pytest.mark.parametrize("stop, status, code", [
    (KeyboardInterrupt(), "interrupted", 130),
    (runs.Terminated(), "terminated", 143),
    (runs.TrainingDiverged("the ELBO became nan"), "diverged", 1),
])
def test_a_stopped_run_with_epochs_keeps_them_and_says_how_it_stopped(tmp_path, capsys, stop,
                                                                       status, code):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.add_epoch({"epoch": 1}, lambda history: None)
    assert run.stopped(stop, "Try a smaller rate", ": resume it") == code
    assert read_metrics(tmp_path)["status"] == status
    message = capsys.readouterr().err.strip()
    assert message.endswith(f"{run.checkpoint} holds epoch 1: resume it")
    assert ("Try a smaller rate" in message) == (status == "diverged")


def test_a_run_stopped_before_its_first_epoch_frees_the_folder(tmp_path, capsys):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.write_metrics("running")
    assert run.stopped(KeyboardInterrupt()) == 130
    assert not (tmp_path / runs.METRICS_NAME).exists()
    assert "no epoch was completed, nothing was saved" in capsys.readouterr().err


def test_write_metrics_passes_extra_fields_on(tmp_path):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.write_metrics("complete", figures=["a.png"])
    assert read_metrics(tmp_path)["figures"] == ["a.png"]


def test_write_metrics_returns_the_wall_seconds_it_wrote(tmp_path):
    earlier = [{"first_epoch": 1, "last_epoch": 1, "wall_seconds": 7.0}]
    run = runs.TrainingRun(tmp_path, metrics_of, [{"epoch": 1}], earlier)
    wall = run.write_metrics("complete")
    assert wall == read_metrics(tmp_path)["wall_seconds"] and 7.0 <= wall < 17.0


def no_space(path="x"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_stops_a_run_with_its_status_and_one_line(tmp_path, capsys):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.add_epoch({"epoch": 1}, lambda history: None)
    assert run.stopped(no_space(), "unused", ": resume it") == 1
    assert read_metrics(tmp_path)["status"] == "stopped: disk full"
    assert capsys.readouterr().err == (
        f"Training stopped: the disk is full (No space left on device) in {tmp_path}; "
        f"{run.checkpoint} holds epoch 1: resume it, once some space is free\n")


def test_a_full_disk_that_refuses_metrics_json_too_is_still_one_line(tmp_path, capsys,
                                                                     monkeypatch):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.add_epoch({"epoch": 1}, lambda history: None)

    def full(path, write):
        raise no_space(path)
    monkeypatch.setattr(runs, "atomic_write", full)
    assert run.stopped(no_space(), "", ": resume it") == 1
    assert read_metrics(tmp_path)["status"] == "running"   # the last one it could write
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(
        f"resume it, once some space is free ({run.metrics_path} could not be updated: "
        "No space left on device)\n")


def test_another_write_error_is_named_as_it_is(tmp_path, capsys):
    run = runs.TrainingRun(tmp_path, metrics_of)
    run.add_epoch({"epoch": 1}, lambda history: None)
    assert run.stopped(OSError(errno.EIO, "Input/output error", "f.png"), "", ": go on") == 1
    assert read_metrics(tmp_path)["status"] == "stopped: Input/output error"
    assert capsys.readouterr().err.startswith("Training stopped: Input/output error (f.png); ")


# ---------------------------------------------------------------- the lock, seen by readers

needs_fcntl = pytest.mark.skipif(os.name != "posix", reason="no fcntl")


@needs_fcntl
@pytest.mark.parametrize("proc_locks", [True, False], ids=["/proc/locks", "a shared try"])
def test_lock_holder_names_the_process_that_holds_the_lock(tmp_path, monkeypatch, proc_locks):
    if not proc_locks:   # as where the system lists no locks
        def no_proc(path, *args, **kwargs):
            raise OSError(errno.ENOENT, "No such file", path)
        monkeypatch.setattr(runs, "open", no_proc, raising=False)
    assert runs.lock_holder(tmp_path) is None
    holder = hold_lock(tmp_path)
    try:
        assert runs.lock_holder(tmp_path) == (holder.pid if proc_locks else 0)
        assert runs.lock_holder(tmp_path) == (holder.pid if proc_locks else 0)  # not taken
    finally:
        holder.kill()
        holder.wait()
    assert runs.lock_holder(tmp_path) is None
    with runs.locked(tmp_path, "vae.py"):   # free: asking never took it
        assert runs.lock_holder(tmp_path) == (os.getpid() if proc_locks else 0)


@needs_fcntl
def test_asking_who_holds_the_lock_never_stops_a_run_from_taking_it(tmp_path):
    assert runs.lock_holder(tmp_path) is None
    with runs.locked(tmp_path, "vae.py"):
        assert runs.lock_holder(tmp_path) == os.getpid()
        with pytest.raises(runs.RunError, match="another process is writing"):
            with runs.locked(tmp_path, "vae.py"):
                pass


def test_lock_holder_of_a_missing_folder_is_none(tmp_path):
    assert runs.lock_holder(tmp_path / "missing") is None


@needs_fcntl
def test_being_trained_says_so_in_one_line_only_while_the_lock_is_held(tmp_path):
    checkpoint = tmp_path / "checkpoint.npz"
    assert runs.being_trained(checkpoint, 2, 30) is None
    assert runs.being_trained(checkpoint, 2, 30, holder_before=1234) == (
        f"note: {tmp_path} is being trained right now (pid 1234); this report is of epoch 2 "
        "(of 30 planned) of the checkpoint as it was read")
    with runs.locked(tmp_path, "vae.py"):
        assert runs.being_trained(checkpoint, 3) == (
            f"note: {tmp_path} is being trained right now (pid {os.getpid()}); this report is "
            "of epoch 3 of the checkpoint as it was read")
