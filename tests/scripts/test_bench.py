"""bench.py: the products it replays and its command line (bench.main itself
trains for minutes and is not run here)."""
import pytest

import bench


def test_bench_counts_the_products_of_a_step():
    # Encoder 784-200-200-100: 3 forward, 3 dW, 2 dX (its input is the data);
    # decoder 50-200-200-784: 3 forward, 3 dW, 3 dX: 17 per gradient pass.
    rec_forward, rec_backward = bench.gemm_shapes(200, [784, 200, 200, 100], input_is_data=True)
    gen_forward, gen_backward = bench.gemm_shapes(200, [50, 200, 200, 784], input_is_data=False)
    assert len(rec_forward + rec_backward + gen_forward + gen_backward) == 17
    assert (784, 200, 200) in rec_backward and (200, 784, 200) in gen_backward


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--threads", "0"]])
def test_parse_args_refuses_a_zero_count_in_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and argv[0] in err, err


def test_parse_args_accepts_a_writable_json_path(tmp_path):
    path = tmp_path / "sub" / "b.json"
    args = bench.parse_args(["--json", str(path)])
    assert args.json == path
    assert path.parent.is_dir() and not path.exists()   # folder probed, nothing written yet
