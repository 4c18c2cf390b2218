"""Speed of the training loops of vae.py beside the matrix-multiply floor of
the same epoch, measured in one run (ratios cancel the machine's noise).

    python bench.py                          # about two minutes
    python bench.py --epochs 2 --repeats 3 --json bench.json
    python bench.py --threads 1              # BLAS threads (before NumPy loads)

For the default model and data (60,000 MNIST images, batch 200, encoder
784-200-200-100, decoder 50-200-200-784) it times one or more epochs of

- the skeleton loop in float64 (`python vae.py`, stream-compatible with the
  course skeleton: a gradient pass and a second ELBO evaluation per step), and
- the fast loop in float32 (`python vae.py --loop fast --dtype float32`: one
  value-and-gradient pass per step),

and replays, on random arrays of the same shapes and dtype, every matrix
product those steps perform: the forward pass of encoder and decoder, the
backward pass (dW = X^T G for every layer, dX = G W^T for every layer but the
encoder's first, whose input is the data), and for the skeleton loop the
forward pass of its second evaluation. That replay is the floor: no
implementation of these steps can be faster than its matrix products.
"""
import os
import sys
import time

LOOPS = (("skeleton", "float64", 3.0), ("fast", "float32", 1.8))   # loop, dtype, target ratio


def parse_args(argv=None):
    from vaelib import arguments, runs   # imports no NumPy: --threads must be set before NumPy loads
    parser = arguments.OneLineErrorParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=arguments.positive_int, default=1,
                        help="timed epochs per repeat")
    parser.add_argument("--repeats", type=arguments.positive_int, default=4,
                        help="timed trainings per loop, each after a timing of the floor; "
                             "the best of each is reported")
    parser.add_argument("--threads", type=arguments.positive_int, default=None,
                        help="BLAS threads (default: the environment's setting)")
    parser.add_argument("--json", metavar="PATH", type=arguments.output_path, default=None,
                        help="also write the figures here (after printing them)")
    args = parser.parse_args(argv)
    if args.json is not None:
        try:
            runs.check_writable(args.json.parent, what="the folder of --json")
        except runs.RunError as e:
            parser.exit(1, f"{parser.prog}: error: {e}\n")
    return args


def gemm_shapes(batch_size, layer_sizes, input_is_data):
    """(m, k, n) of the products of one network in one gradient pass: forward
    X W, backward dW = X^T G and dX = G W^T (skipped where X is the data)."""
    forward = [(batch_size, m, n) for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]
    backward = [(m, batch_size, n) for _, m, n in forward]
    backward += [(batch_size, n, m) for _, m, n in forward[input_is_data:]]
    return forward, backward


def gemm_operands(np, shapes, dtype):
    rng = np.random.default_rng(0)
    return [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
            for m, k, n in shapes]


def gemm_seconds(operands, steps):
    """Seconds to compute every product of operands `steps` times."""
    start = time.perf_counter()
    for _ in range(steps):
        for a, b in operands:
            a @ b
    return time.perf_counter() - start


def interleaved_seconds(vae, np, images, config, loop, dtype, shapes, steps, epochs, repeats):
    """(loop, floor): the best seconds per epoch of the loop and of its
    matrix products, timed in turn `repeats` times (the floor, then a fresh
    training of `epochs` epochs), so that both see the same machine: on a
    shared one, other tenants slow some trials, and the best of each is the
    least disturbed."""
    images, operands = images.astype(dtype), gemm_operands(np, shapes, dtype)
    loop_seconds, floor_seconds = [], []
    for repeat in range(repeats + 1):   # the first, on 10 batches, warms up
        floor_seconds.append(gemm_seconds(operands, steps if repeat else 10))
        data = images if repeat else images[:10 * config["batch_size"]]
        for end in train(vae, config, loop, dtype, data, epochs if repeat else 1,
                         config["seed"] + repeat, seed=repeat):
            if repeat:
                loop_seconds.append(end.seconds)
    return min(loop_seconds), min(floor_seconds[1:])


def train(vae, config, loop, dtype, images, epochs, init_seed, seed=0):
    """The training loop as `python vae.py --loop <loop>` runs it (vae.py's
    loop or the fast one, with the fused bound and the in-place Adam), from
    parameters drawn after npr.seed(init_seed). -> its EpochEnds."""
    from vaelib import networks, training
    gen, rec = networks.initial_params(config, dtype, init_seed, vae.init_net_params)
    settings = training.Settings(epochs, config["batch_size"], config["learning_rate"], seed=seed)
    return (vae.train if loop == "skeleton" else training.fast_train)(
        gen, rec, images, settings, training.fused_objective((gen, rec)),
        training.in_place_adam())


def peak_megabytes(vae, images, config, loop, dtype, steps=5):
    """Peak memory that NumPy allocates while training `steps` batches (tracemalloc)."""
    import tracemalloc
    data = images[:steps * config["batch_size"]].astype(dtype)
    tracemalloc.start()
    for _ in train(vae, config, loop, dtype, data, 1, config["seed"]):
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:   # read by OpenBLAS / MKL / OpenMP when NumPy loads
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")   # as vae.py sets it
    import numpy as np

    import data
    from vaelib import networks, runs
    import vae
    config = vars(vae.parse_args([]))   # the assignment's defaults
    _, images, _, _, _ = data.load_data()
    gen_sizes, rec_sizes = networks.layer_sizes(config)
    batch, steps = config["batch_size"], -(-len(images) // config["batch_size"])
    rec_forward, rec_backward = gemm_shapes(batch, rec_sizes, input_is_data=True)
    gen_forward, gen_backward = gemm_shapes(batch, gen_sizes, input_is_data=False)
    gradient_pass = rec_forward + gen_forward + rec_backward + gen_backward
    products = {"skeleton": gradient_pass + rec_forward + gen_forward, "fast": gradient_pass}

    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"{len(images)} images, batch {batch}, {steps} steps per epoch; encoder "
          f"{'-'.join(map(str, rec_sizes))}, decoder {'-'.join(map(str, gen_sizes))}; "
          f"BLAS threads: {threads}; best of {args.repeats} x {args.epochs} epoch(s)")
    print(f"{'loop':<9} {'dtype':<8} {'s/epoch':>8} {'steps/s':>8} {'GEMM floor s':>13} "
          f"{'ratio':>6} {'target':>7} {'peak MiB':>9}")
    results = []
    for loop, dtype, target in LOOPS:
        seconds, floor = interleaved_seconds(vae, np, images, config, loop, dtype,
                                             products[loop], steps, args.epochs, args.repeats)
        peak = peak_megabytes(vae, images, config, loop, dtype)
        results.append({"loop": loop, "dtype": dtype, "seconds_per_epoch": seconds,
                        "steps_per_second": steps / seconds, "gemm_floor_seconds": floor,
                        "products_per_step": len(products[loop]), "ratio": seconds / floor,
                        "target_ratio": target, "peak_mib": peak})
        r = results[-1]
        print(f"{loop:<9} {dtype:<8} {seconds:8.2f} {r['steps_per_second']:8.1f} {floor:13.2f} "
              f"{r['ratio']:6.2f} {'<= ' + str(target):>7} {peak:9.1f}", flush=True)
    if args.json:
        runs.write_json(args.json, {
            "threads": threads, "epochs": args.epochs, "repeats": args.repeats,
            "images": len(images), "batch_size": batch, "results": results,
            "versions": runs.library_versions(), "python": sys.version})
        print(f"Wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
