"""Does a rising ELBO mean that q(z|x) is getting closer to the true posterior?

The course's true/false question: during joint training of encoder and
decoder, does a rising ELBO imply that KL(q(z|x) || p(z|x)) shrinks? For every x,

    log p(x) - ELBO(x) = KL(q(z|x) || p(z|x))      (Kingma & Welling 2014, Eq. 1)

so the ELBO rises when log p(x) rises (the decoder improves) or when the gap
shrinks (the encoder improves); training moves both. With a 2-dimensional
latent space both sides can be computed almost exactly, and this script tracks
them per epoch for a fixed set of training images:

- log p(x) = log integral p(x|z) p(z) dz by the midpoint rule on a grid that
  starts on [-6, 6]^2 and is widened per image until its outer band holds a
  negligible share of the mass (grid.grid_check), checked at half the points;
- ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)): the KL in closed form, the
  expectation by Gauss-Hermite quadrature over q's two dimensions
  (z = mean + std * node), so no Monte Carlo noise hides a change;
- gap = log p(x) - ELBO, per image and averaged, epoch after epoch. A gap is
  a KL divergence: one below -(GRID_TOLERANCE + the grid's change with half
  its points), or a grid that has not converged, is reported as a problem and
  the conclusions are withheld.

Training is vae.py's, on the same global random stream: tracking draws nothing
from it, so the trained parameters equal those of the equivalent vae.py run.
Units: nats per image. `python posterior_gap.py --help` lists the options.
"""
import sys
import time
from pathlib import Path

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

import data
from vaelib import fastgrad
from vaelib import arguments, runs
from vaelib import cli, grid, importance, training
from vaelib.networks import cast_params, initial_params
import vae

PROG = "posterior_gap.py"
LATENT_DIM = 2                   # the grid integral needs a 2-dimensional z
HERMITE_NODES = 20               # per latent dimension: 400 points per image
JSON_NAME, FIGURE_NAME, ARRAYS_NAME = "posterior_gap.json", "posterior_gap.png", "posterior_gap.npz"
OUTPUT_FILES = (JSON_NAME, FIGURE_NAME, ARRAYS_NAME)
BINARIZATION = ("binarised once, before training: x > uniform(0, 1) drawn from "
                f"numpy.random.RandomState({training.TEST_BINARIZATION_SEED})")
VAE_COMMAND = ("python vae.py --latent-dim 2 --hidden-layers {hidden_layers} --hidden-units "
               "{hidden_units} --activation {activation} --n-train {n_train} --epochs {epochs} "
               "--batch-size {batch_size} --learning-rate {learning_rate} --seed {seed}")


# ---- The two sides of the identity ------------------------------------------

def hermite_rule(nodes=HERMITE_NODES):
    """E[f(eps)], eps ~ N(0, I_2), as sum_s weights_s f(eps_s): the tensor
    product of probabilists' Gauss-Hermite rules. -> eps (S, 2), weights (S,), S = nodes^2."""
    x, w = hermegauss(nodes)
    w = w / np.sqrt(2 * np.pi)             # hermegauss weights sum to sqrt(2 pi)
    eps = np.stack(np.meshgrid(x, x, indexing="ij"), -1).reshape(-1, LATENT_DIM)
    return eps, np.outer(w, w).ravel()


def quadrature_elbo(gen_params, rec_params, binary, activation="relu", nodes=HERMITE_NODES):
    """ELBO per image without sampling: binary (N, D) -> elbo, log_px_given_z, kl, each (N,).
    The decoder runs on N * nodes^2 points, in chunks of about importance.MAX_ROWS rows."""
    eps, weights = hermite_rule(nodes)
    q_means_and_log_stds = fastgrad.neural_net_predict(rec_params, binary, activation)
    mean, log_std = vae.unpack_gaussian_params(q_means_and_log_stds)
    kl = vae.compute_KL(q_means_and_log_stds)
    log_px_given_z = np.empty(len(binary))
    images_per_pass = max(1, importance.MAX_ROWS // len(eps))
    for start in range(0, len(binary), images_per_pass):
        rows = slice(start, start + images_per_pass)
        z = mean[rows, None, :] + np.exp(log_std[rows, None, :]) * eps     # (B, S, 2)
        logits = fastgrad.neural_net_predict(gen_params, z.reshape(-1, LATENT_DIM), activation)
        log_lik = fastgrad.bernoulli_log_prob(binary[rows, None, :],
                                              logits.reshape(*z.shape[:2], -1))  # (B, S)
        log_px_given_z[rows] = log_lik @ weights
    return log_px_given_z - kl, log_px_given_z, kl


def track_images(gen_params, rec_params, binary, activation, grid_points, nodes=HERMITE_NODES):
    """The tracked quantities per image, in float64: {"elbo", "log_px", "gap",
    "log_px_given_z", "kl", "converged" (the grid's spacing and extent),
    "allowance" (GRID_TOLERANCE + |log p(x) - log p(x) with half the points|:
    how far below 0 a gap may lie before it is a violation)}, each (N,).
    Draws no random numbers."""
    gen_params, rec_params = (cast_params(p, np.float64) for p in (gen_params, rec_params))
    elbo, log_px_given_z, kl = quadrature_elbo(gen_params, rec_params, binary, activation, nodes)
    check = grid.grid_check(gen_params, binary, activation, points=grid_points)
    log_px = check["log_px"]
    return {"elbo": elbo, "log_px": log_px, "gap": log_px - elbo,
            "log_px_given_z": log_px_given_z, "kl": kl, "converged": check["converged"],
            "allowance": grid.GRID_TOLERANCE + np.abs(log_px - check["half_points"])}


# ---- Training with tracking --------------------------------------------------

def epoch_record(epoch, train_elbo, seconds, now, before, tracking_seconds):
    """One epoch's summary; before: the previous epoch's tracked arrays (None at epoch 0)."""
    record = {"epoch": epoch, "train_elbo": train_elbo,
              **{key: importance.entry(now[key]) for key in ("elbo", "log_px", "gap", "kl")},
              "images_elbo_rose": None, "images_gap_grew": None,
              "images_elbo_rose_and_gap_grew": None,
              "seconds": seconds, "tracking_seconds": tracking_seconds}
    if before is not None:
        rose, grew = now["elbo"] > before["elbo"], now["gap"] > before["gap"]
        record.update(images_elbo_rose=int(rose.sum()), images_gap_grew=int(grew.sum()),
                      images_elbo_rose_and_gap_grew=int((rose & grew).sum()))
    return record


def train_and_track(config, train_images, binary, grid_points, on_record=None, progress=False):
    """Trains as vae.py does with config (the skeleton loop, float64) and tracks
    the images binary (N, D) at initialisation (epoch 0) and after every epoch:
    on_record(record, tracked arrays). -> (gen_params, rec_params)."""
    activation = config["activation"]
    gen_params, rec_params = initial_params(config, "float64", config["seed"], vae.init_net_params)
    last = {}

    def on_epoch_end(end):
        start = time.perf_counter()
        now = track_images(end.gen_params, end.rec_params, binary, activation, grid_points)
        record = epoch_record(end.epoch, end.train_elbo, end.seconds, now, last.get("arrays"),
                              time.perf_counter() - start)
        last["arrays"] = now
        if on_record is not None:
            on_record(record, now)

    on_epoch_end(training.EpochEnd(0, gen_params, rec_params, None, 0.0, None))
    settings = training.Settings(config["epochs"], config["batch_size"],
                                 config["learning_rate"], seed=config["seed"], progress=progress)
    return training.final_params(vae.train(   # vae.py's loop, as `python vae.py` runs it
        gen_params, rec_params, train_images, settings,
        training.fused_objective((gen_params, rec_params), activation),
        training.in_place_adam()), on_epoch_end)


def summarize(epochs, elbo, log_px, converged=None, allowance=None):
    """The answer, from the tracked epochs (E + 1,) and elbo, log_px (E + 1, N);
    converged (E + 1, N) bool and allowance (E + 1, N) as track_images's
    (default: all converged, allowance GRID_TOLERANCE)."""
    gap = log_px - elbo
    converged = np.ones(gap.shape, bool) if converged is None else np.asarray(converged)
    allowance = (np.full(gap.shape, grid.GRID_TOLERANCE) if allowance is None
                 else np.asarray(allowance))
    negative = gap < -allowance
    elbo_change, gap_change = np.diff(elbo.mean(axis=1)), np.diff(gap.mean(axis=1))
    both = np.flatnonzero((elbo_change > 0) & (gap_change > 0))
    largest = max(both, key=lambda i: gap_change[i], default=None)
    rose, grew = np.diff(elbo, axis=0) > 0, np.diff(gap, axis=0) > 0
    return {"epochs_compared": len(epochs) - 1,
            "epochs_mean_elbo_rose_and_mean_gap_grew": [int(epochs[i + 1]) for i in both],
            "largest_gap_growth_while_elbo_rose": None if largest is None else {
                "epoch": int(epochs[largest + 1]), "gap_change": float(gap_change[largest]),
                "elbo_change": float(elbo_change[largest])},
            "image_epoch_pairs": int(rose.size), "pairs_elbo_rose": int(rose.sum()),
            "pairs_elbo_rose_and_gap_grew": int((rose & grew).sum()),
            "final": {"epoch": int(epochs[-1]), "elbo": importance.entry(elbo[-1]),
                      "log_px": importance.entry(log_px[-1]), "gap": importance.entry(gap[-1])},
            "smallest_gap": float(gap.min()),
            "checks": {"pairs": int(gap.size),
                       "pairs_grid_not_converged": int((~converged).sum()),
                       "pairs_negative_gap": int(negative.sum()),
                       "negative_gap_pairs_image_epoch": [
                           [int(i), int(epochs[e])] for e, i in zip(*np.nonzero(negative))][:20],
                       "rule": "gap >= -(GRID_TOLERANCE + the grid's change with half its "
                               f"points), GRID_TOLERANCE = {grid.GRID_TOLERANCE}"}}


def convergence_check(gen_params, rec_params, binary, activation, grid_points):
    """How much log p(x) moves with half the grid points (as grid.exact_summary)
    and the ELBO with twice the Gauss-Hermite nodes: max and mean over images."""
    def change(a, b):
        return {"max_abs_difference": float(np.max(np.abs(a - b))),
                "mean_abs_difference": float(np.mean(np.abs(a - b)))}
    gen_params, rec_params = (cast_params(p, np.float64) for p in (gen_params, rec_params))
    check = grid.grid_check(gen_params, binary, activation, points=grid_points)
    log_px = [check["log_px"], check["half_points"]]
    elbo = [quadrature_elbo(gen_params, rec_params, binary, activation, nodes)[0]
            for nodes in (HERMITE_NODES, 2 * HERMITE_NODES)]
    return {"grid": {"points": grid_points, "half_points": grid_points // 2, **change(*log_px),
                     **grid.grid_facts(check)},
            "quadrature": {"nodes": HERMITE_NODES, "double_nodes": 2 * HERMITE_NODES,
                           **change(*elbo)}}


# ---- Output ------------------------------------------------------------------

def format_record(r):
    def count(key):
        return "-" if r[key] is None else f"{r[key]}"
    train = "-" if r["train_elbo"] is None else f"{r['train_elbo']:.2f}"
    return (f"{r['epoch']:5d} {train:>10} {r['elbo']['mean']:9.2f} {r['log_px']['mean']:9.2f} "
            f"{r['gap']['mean']:7.3f} {r['gap']['se']:6.3f} {count('images_elbo_rose'):>6} "
            f"{count('images_gap_grew'):>6} {count('images_elbo_rose_and_gap_grew'):>6} "
            f"{r['seconds']:7.1f} {r['tracking_seconds']:7.1f}")


def format_summary(s, check, n):
    epochs = s["epochs_mean_elbo_rose_and_mean_gap_grew"]
    largest, final = s["largest_gap_growth_while_elbo_rose"], s["final"]
    lines = [f"Epochs in which the mean ELBO rose while the mean gap grew: {len(epochs)} of "
             f"{s['epochs_compared']}" + (f" ({', '.join(map(str, epochs))})" if epochs else "")]
    if largest:
        lines.append(f"  largest: the gap grew by {largest['gap_change']:.3f} at epoch "
                     f"{largest['epoch']}, while the ELBO rose by {largest['elbo_change']:.3f}")
    lines += [f"(image, epoch) pairs with the image's ELBO rising and its gap growing: "
              f"{s['pairs_elbo_rose_and_gap_grew']} of the {s['pairs_elbo_rose']} pairs whose "
              f"ELBO rose ({s['image_epoch_pairs']} pairs)",
              f"Epoch {final['epoch']}, {n} images: ELBO {final['elbo']['mean']:.2f} "
              f"+- {final['elbo']['se']:.2f}, log p(x) {final['log_px']['mean']:.2f} +- "
              f"{final['log_px']['se']:.2f}, gap {final['gap']['mean']:.3f} +- "
              f"{final['gap']['se']:.3f}; smallest gap of any image and epoch "
              f"{s['smallest_gap']:.2e}"]
    c = s["checks"]
    problems = []
    if c["pairs_negative_gap"]:
        pairs = ", ".join(f"image {i} epoch {e}" for i, e in c["negative_gap_pairs_image_epoch"][:5])
        problems.append(f"PROBLEM: the gap, a KL divergence, is negative beyond the grid's error "
                        f"for {c['pairs_negative_gap']} of {c['pairs']} (image, epoch) pairs "
                        f"({pairs}{', ...' if c['pairs_negative_gap'] > 5 else ''})")
    if c["pairs_grid_not_converged"]:
        problems.append(f"PROBLEM: the grid did not converge (spacing or extent) for "
                        f"{c['pairs_grid_not_converged']} of {c['pairs']} (image, epoch) pairs; "
                        "their log p(x) is not exact")
    lines += problems or [f"Checks: in all {c['pairs']} (image, epoch) pairs the grid converged "
                          "(spacing and extent) and the gap is >= 0 within the grid's error"]
    if check:
        grid, nodes = check["grid"], check["quadrature"]
        lines.append(f"Convergence: with {grid['half_points']}^2 instead of {grid['points']}^2 "
                     f"grid points, log p(x) moves by at most {grid['max_abs_difference']:.1e}"
                     f"; with {nodes['double_nodes']}^2 instead of {nodes['nodes']}^2 nodes, "
                     f"the ELBO by at most {nodes['max_abs_difference']:.1e}; the box was "
                     f"widened for {grid['widened_images']} of {n} images (to at most "
                     f"[-{grid['largest_half_width']:.3g}, {grid['largest_half_width']:.3g}]^2); "
                     f"converged (spacing and extent) for {grid['converged_images']} of {n}")
    if problems:
        lines.append("No conclusion: the numbers above break the checks that must hold "
                     "(try more --grid-points)")
    else:
        lines.append("So a rising ELBO does not imply a shrinking KL(q(z|x) || p(z|x))."
                     if s["pairs_elbo_rose_and_gap_grew"] else
                     "In this run, the gap never grew where the ELBO rose.")
    return "\n".join(lines)


def save_figure(records, marked, path):
    """Writes gap_figure(records, marked) to path."""
    import plotting
    figure = gap_figure(records, marked)
    runs.atomic_write(path, lambda f: figure.savefig(f, format="png",
                                                     metadata=plotting.PNG_METADATA))


def gap_figure(records, marked):
    """Top: tracked ELBO and log p(x) per epoch; bottom: the gap (+- one se),
    with the epochs `marked` (the mean ELBO rose and the mean gap grew);
    whole epochs on the shared x axis. -> Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    import plotting

    epochs = [r["epoch"] for r in records]
    gap, se = (np.array([r["gap"][key] for r in records]) for key in ("mean", "se"))
    figure = Figure(figsize=(6, 6), dpi=plotting.FIGURE_DPI)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    for key, label in (("log_px", "log p(x) (grid)"), ("elbo", "ELBO (quadrature)")):
        top.plot(epochs, [r[key]["mean"] for r in records], label=label)
    if len(records) > 2:     # the initialisation (epoch 0) would flatten the rest
        trained = [r[key]["mean"] for r in records[1:] for key in ("elbo", "log_px")]
        margin = 0.05 * (max(trained) - min(trained))
        top.set_ylim(min(trained) - margin, max(trained) + margin)
        top.set_title(f"epoch 0, the initialisation: ELBO {records[0]['elbo']['mean']:.0f} "
                      "(off the scale)", fontsize="small")
    bottom.plot(epochs, gap, color="C2", label="gap = KL(q(z|x) || p(z|x))")
    bottom.fill_between(epochs, gap - se, gap + se, color="C2", alpha=0.2, linewidth=0)
    bottom.plot(marked, [gap[epochs.index(e)] for e in marked], "o", color="C3",
                markersize=3, label="the ELBO rose and the gap grew")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for axes in (top, bottom):
        axes.set_ylabel("nats per image\n(mean of the tracked images)")
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.tight_layout()
    return figure


# ---- The command line --------------------------------------------------------

def parse_args(argv=None):
    parser = arguments.OneLineErrorParser(
        description="Train a VAE with a 2-dimensional latent space as vae.py does and track, "
                    "per epoch, log p(x), the ELBO and their gap KL(q(z|x) || p(z|x)).")
    add = parser.add_argument
    cli.add_model_options(parser, skip=("latent_dim",), n_train=10000, epochs=100,
                          hidden_units=500, hidden_layers=1, activation="tanh")
    add("--seed", type=arguments.seed_int, default=0, help="seed of the global numpy random stream")
    add("--track", type=arguments.positive_int, default=200, metavar="N",
        help="track the first N training images")
    add("--grid-points", type=arguments.checked(int, lambda v: v >= 2, "an integer >= 2"),
        default=301, help="grid points per axis on [-6, 6]^2 for log p(x) (the box is "
                          "widened, same spacing, where an image's mass reaches its edge)")
    add("--output-dir", type=arguments.output_dir, default=Path("output/posterior_gap"),
        metavar="DIR", help="where the JSON, the figure and the per-image arrays go")
    add("--overwrite", action="store_true",
        help="if the output folder holds a posterior_gap.py run, delete its files first")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def run(args):
    """Trains and tracks per args, prints, writes the outputs. -> exit code."""
    wall_start = time.perf_counter()
    config = {key: getattr(args, key) for key in cli.TRAINING_OPTIONS if hasattr(args, key)}
    config.update(latent_dim=LATENT_DIM, dtype="float64", loop="skeleton", data_dir=None)
    N, train_images, *_ = data.load_data()
    if args.n_train > N:
        raise runs.RunError(f"--n-train {args.n_train} but the training set has {N} images",
                            exit_code=2)
    if args.track > args.n_train:
        raise runs.RunError(f"--track {args.track} but only {args.n_train} training images "
                            "(--n-train)", exit_code=2)
    out = args.output_dir
    runs.prepare_output_dir(out, OUTPUT_FILES, args.overwrite, PROG, 3 * runs.FIGURE_BYTES)
    train_images = train_images[:args.n_train].astype("float64")
    binary = training.binarize_once(train_images[:args.track])
    records, arrays = [], {"elbo": [], "log_px": [], "converged": [], "allowance": []}
    report = {"status": "running", "config": config, "track": args.track,
              "vae_command": VAE_COMMAND.format(**config), "binarization": BINARIZATION,
              "grid": grid.grid_settings(args.grid_points),
              "elbo_method": f"KL in closed form; E_q[log p(x|z)] by {HERMITE_NODES}x"
                             f"{HERMITE_NODES}-point Gauss-Hermite quadrature",
              "units": "nats per image; se: standard error of the mean over the tracked images",
              "versions": runs.library_versions(), "epochs": records}
    print(f"Tracking {args.track} training images ({BINARIZATION}) while training as\n  "
          f"{report['vae_command']}\nNats per image. ELBO: {report['elbo_method']}; log p(x): "
          f"{args.grid_points}^2-point grid from [-6, 6]^2, widened where the mass reaches its edge; gap = log p(x) - ELBO = "
          "KL(q(z|x) || p(z|x)).\nrose, grew: images whose ELBO rose, gap grew, both, "
          f"since the previous epoch (of {args.track}).")
    print(f"{'epoch':>5} {'train ELBO':>10} {'ELBO':>9} {'log p(x)':>9} {'gap':>7} {'se':>6} "
          f"{'rose':>6} {'grew':>6} {'both':>6} {'seconds':>7} {'track s':>7}")

    def on_record(record, now):
        print(format_record(record), flush=True)
        records.append(record)
        for key in arrays:
            arrays[key].append(now[key])
        runs.write_json(out / JSON_NAME, report)

    check, params, code = None, {}, 0
    try:
        with runs.sigterm_as_interrupt():
            gen_params, rec_params = train_and_track(config, train_images, binary,
                                                     args.grid_points, on_record,
                                                     progress=not args.no_progress)
            check = convergence_check(gen_params, rec_params, binary, args.activation,
                                      args.grid_points)
            params = {f"{name}_{kind}{i}": array for name, net in
                      (("gen", gen_params), ("rec", rec_params))
                      for i, layer in enumerate(net) for kind, array in zip("Wb", layer)}
            report["status"] = "complete"
    except KeyboardInterrupt as e:
        report["status"], code = runs.interruption(e)
        print(f"\n{report['status'].capitalize()} after {len(records)} tracked epochs",
              file=sys.stderr)
    except runs.TrainingDiverged as e:
        report["status"], code = "diverged", 1
        print(f"Training stopped: {e}", file=sys.stderr)
    if len(records) < 2:
        (out / JSON_NAME).unlink(missing_ok=True)
        print("Nothing to report: no epoch was tracked after the initialisation",
              file=sys.stderr)
        return code or 1
    elbo, log_px = np.array(arrays["elbo"]), np.array(arrays["log_px"])
    report.update(summary=summarize([r["epoch"] for r in records], elbo, log_px,
                                    np.array(arrays["converged"]),
                                    np.array(arrays["allowance"])),
                  convergence=check, wall_seconds=time.perf_counter() - wall_start)
    print(format_summary(report["summary"], check, args.track))
    runs.atomic_write(out / ARRAYS_NAME, lambda f: np.savez(
        f, epoch=[r["epoch"] for r in records], elbo=elbo, log_px=log_px,
        grid_converged=np.array(arrays["converged"]), **params))
    save_figure(records, report["summary"]["epochs_mean_elbo_rose_and_mean_gap_grew"],
                out / FIGURE_NAME)
    runs.write_json(out / JSON_NAME, report)
    print(f"Wrote {out / JSON_NAME}, {out / FIGURE_NAME} and {out / ARRAYS_NAME} "
          f"(per image and epoch: elbo, log_px; the final parameters); "
          f"{report['wall_seconds']:.0f} s")
    return code


def main(argv=None):
    """Entry point of `python posterior_gap.py`: returns the exit code."""
    args = parse_args(argv)
    return runs.run_main(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
