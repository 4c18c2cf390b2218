"""Seconds per epoch of `python vae.py`'s training loop beside the time that
the same epoch's matrix multiplications alone take, measured in one run.

    python bench.py                    # default model, one epoch of 60,000 images
    python bench.py --epochs 2 --repeats 3

The matrix-multiply floor replays, on random arrays of the right shapes and
dtype, every GEMM that one training step performs: the forward pass of the
encoder and decoder, the backward pass (dW = X^T G for every layer, dX = G W^T
for every layer but the first, whose input is the data), and the forward pass
of the skeleton's second ELBO evaluation after each update. The ratio of the
epoch time to that floor is what the rest of the step costs: autograd's
bookkeeping, elementwise work, random numbers, Adam. Only ratios measured in
the same run are comparable; these machines are shared and noisy.
"""
import argparse
import time

import numpy as np

import vae


def gemm_shapes(batch_size, layer_sizes, input_is_data):
    """(m, k, n) of the products of one network in one gradient evaluation:
    forward (X W) and backward (dW = X^T G, dX = G W^T). autograd skips dX of
    the first layer when its input is the data, which nothing differentiates."""
    forward = [(batch_size, m, n) for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]
    backward = [(m, batch_size, n) for _, m, n in forward]
    backward += [(batch_size, n, m) for _, m, n in forward[input_is_data:]]
    return forward, backward


def gemm_seconds(shapes, repeats, dtype, rng):
    """Seconds to compute every product in shapes `repeats` times (best of 3)."""
    operands = [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
                for m, k, n in shapes]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            for a, b in operands:
                a @ b
        best = min(best, time.perf_counter() - start)
    return best


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--epochs", type=vae.positive_int, default=2,
                        help="epochs per repeat (the first one includes warm-up)")
    parser.add_argument("--repeats", type=vae.positive_int, default=1,
                        help="training runs; the best seconds per epoch is reported")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = vars(vae.parse_args([]))   # the assignment's defaults
    _, train_images, _, _, _ = vae.load_data(None)
    train_images = train_images.astype(args.dtype)
    gen_sizes, rec_sizes = vae.layer_sizes(config)
    batch, steps = config["batch_size"], -(-len(train_images) // config["batch_size"])

    epoch_seconds = []
    for repeat in range(args.repeats):
        vae.npr.seed(config["seed"] + repeat)
        gen = vae.cast_params(vae.init_net_params(gen_sizes), args.dtype)
        rec = vae.cast_params(vae.init_net_params(rec_sizes), args.dtype)
        vae.train(gen, rec, train_images, args.epochs, batch, config["learning_rate"],
                  on_epoch_end=lambda epoch, g, r, elbo, seconds: epoch_seconds.append(seconds))
    per_epoch = min(epoch_seconds)

    rng = np.random.default_rng(0)
    # Encoder then decoder; the last batch of an epoch is full for 60,000 / 200.
    (rec_forward, rec_backward), (gen_forward, gen_backward) = (
        gemm_shapes(batch, rec_sizes, input_is_data=True),
        gemm_shapes(batch, gen_sizes, input_is_data=False))
    forward, backward = rec_forward + gen_forward, rec_backward + gen_backward
    gradient_floor = gemm_seconds(forward + backward, steps, args.dtype, rng)
    skeleton_floor = gradient_floor + gemm_seconds(forward, steps, args.dtype, rng)

    print(f"Default model (encoder {'-'.join(map(str, rec_sizes))}, decoder "
          f"{'-'.join(map(str, gen_sizes))}), {len(train_images)} images, batch {batch}, "
          f"{steps} steps per epoch, {args.dtype}")
    print(f"  training loop (skeleton), seconds per epoch   {per_epoch:7.2f}   "
          f"({steps / per_epoch:.0f} steps/s, best of {len(epoch_seconds)} epochs)")
    print(f"  GEMM floor of the same epoch                  {skeleton_floor:7.2f}   "
          f"({len(forward) * 2 + len(backward)} products per step)")
    print(f"    of which the gradient pass alone            {gradient_floor:7.2f}   "
          f"({len(forward) + len(backward)} products per step)")
    print(f"  ratio epoch / GEMM floor                      {per_epoch / skeleton_floor:7.2f}")


if __name__ == "__main__":
    main()
