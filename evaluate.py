"""How good is a trained VAE? Test log-likelihood and diagnostics of a checkpoint.

    python evaluate.py output/checkpoint.npz

reports, for the test set (or --split train, or the first --n images):

- the ELBO, E_q[log p(x|z)] - KL(q(z|x) || p(z)), with S posterior samples per
  image for the reconstruction term and the KL in closed form;
- log p(x), estimated by importance sampling with the encoder as proposal
  (Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", ICLR
  2016, Eq. 8): log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x). Its
  expectation rises with K towards log p(x) and never exceeds it (their
  Theorem 1); K = 1 is the ELBO with the KL sampled;
- per latent unit, the average KL and whether the unit is active: the variance
  over images of its posterior mean exceeds 0.01 (Burda et al., Sec. 5.2);
- for a 2-dimensional latent space (--exact), log p(x) by numerical
  integration over a grid, the number the importance-weighted estimate is
  meant to approach.

Units: nats per image, summed over the 784 pixels, averaged over images, with
one standard error over images. Every number says which binarisation of the
data it was measured on. Results go to the terminal and to a JSON file.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np

import data
from vaelib import arguments, checkpoints, runs
from vaelib.grid import (GRID_HALF_WIDTH, GRID_MAX_HALF_WIDTH, GRID_POINTS, ORDERING_SES,
                         exact_summary, ordering_check)
from vaelib.importance import (ACTIVE_UNIT_THRESHOLD, ELBO_SAMPLES, IW_SAMPLES, MAX_ROWS,
                               active_units, entry, evaluate)
from vaelib.networks import cast_params
from vaelib.training import THRESHOLD, binarize_split



# ----------------------------------------------------------------------------
# The estimators
# ----------------------------------------------------------------------------

































# ----------------------------------------------------------------------------
# From per-image numbers to a report
# ----------------------------------------------------------------------------







def summarize(per_image, exact=None):
    """The report's numbers: means and standard errors over images."""
    variance, active = active_units(per_image["posterior_mean"])
    kl_per_unit = np.mean(per_image["kl_per_unit"], axis=0)
    summary = {
        "elbo": entry(per_image["elbo"]),
        "log_px_given_z": entry(per_image["log_px_given_z"]),
        "kl": entry(per_image["kl"]),
        "log_px": entry(per_image["log_px"]),
        "gap_log_px_minus_elbo": entry(per_image["log_px"] - per_image["elbo"]),
        "iw_curve": {str(k): entry(v) for k, v in per_image["iw_curve"].items()},
        "active_units": int(np.sum(active)),
        "latent_dim": len(active),
        "units": [{"unit": u, "kl": float(kl_per_unit[u]),
                   "posterior_mean_variance": float(variance[u]), "active": bool(active[u])}
                  for u in range(len(active))],
    }
    if exact is not None:
        converged = exact["converged"]
        # "exact" only where the grid converged (spacing and extent); else "grid".
        summary["exact_log_px" if converged.all() else "grid_log_px"] = entry(exact["log_px"])
        summary["exact_grid"] = exact["grid"]
        summary["exact_minus_iw"] = entry(exact["log_px"] - per_image["log_px"])
        summary["exact_converged_images"] = int(np.sum(converged))
        summary["exact_not_converged_image_indices"] = np.flatnonzero(~converged).tolist()
        if np.any(converged):
            summary["exact_minus_iw_converged_images"] = entry(
                exact["log_px"][converged] - per_image["log_px"][converged])
        summary["ordering"] = ordering_check(exact["log_px"], per_image["log_px"],
                                             per_image["log_px_se"], converged)
    return summary






def exact_lines(s, n, K, row):
    """format_report's lines about the grid: 'exact' only if every image converged."""
    g, o = s["exact_grid"], s["ordering"]
    bad = n - s["exact_converged_images"]
    if bad == 0:
        lines = [row(f"log p(x), exact (grid, spacing {g['spacing']:.2g})", s["exact_log_px"]),
                 row(f"  exact - importance weighted (K={K})", s["exact_minus_iw"])]
    else:
        lines = [row(f"log p(x), grid: NOT exact, {bad} images not converged",
                     s["grid_log_px"]),
                 row(f"  grid - importance weighted (K={K})", s["exact_minus_iw"])]
    lines.append(
        f"  The grid converged for {s['exact_converged_images']} of {n} images: halving its "
        f"points moves log p(x) by less than {g['tolerance']:g} (fails for "
        f"{g['spacing_not_converged_images']}) and its outer band, {g['band_width']:g} wide, "
        f"holds less than {g['band_tolerance']:g} of the mass (fails for "
        f"{g['extent_not_converged_images']})")
    box = f"[-{g['start_half_width']:g}, {g['start_half_width']:g}]^2"
    lines.append(f"  The box {box} needed no widening" if not g["widened_images"] else
                 f"  The box {box} was widened (same spacing) for {g['widened_images']} images, "
                 f"to at most [-{g['largest_half_width']:.3g}, {g['largest_half_width']:.3g}]^2, "
                 f"moving log p(x) by up to {g['max_change_from_widening']:.3g}")
    if bad:
        shown = s["exact_not_converged_image_indices"]
        lines.append(f"  Not converged: images {', '.join(map(str, shown[:10]))}"
                     + (", ..." if len(shown) > 10 else "")
                     + "; their grid values are approximations, not exact")
    if "exact_minus_iw_converged_images" in s:
        lines.append(row("  exact - importance weighted, converged",
                         s["exact_minus_iw_converged_images"]))
    if o["violations"]:
        lines.append(f"PROBLEM: exact < importance weighted - {ORDERING_SES} s.e. for "
                     f"{o['violations']} of {o['checked_images']} converged images (images "
                     f"{', '.join(map(str, o['violating_images'][:10]))}; up to "
                     f"{o['largest_shortfall_in_ses']:.1f} s.e.): the estimate is a lower "
                     "bound in expectation, so either the grid is wrong there or the estimate's "
                     "s.e. understates its heavy-tailed weights (by chance alone, were the "
                     f"estimates normal: {0.00135 * o['checked_images']:.1f} images)")
    else:
        lines.append(f"  Ordering: exact >= importance weighted - {ORDERING_SES} s.e. for all "
                     f"{o['checked_images']} converged images")
    return lines


def format_report(report):
    """The terminal table."""
    s, c = report["summary"], report["checkpoint"]
    K, S = report["iw_samples"], report["elbo_samples"]

    def row(name, entry, sign=1):
        return f"  {name:<44}{sign * entry['mean']:>10.2f}{entry['se']:>9.2f}"

    lines = [
        f"{c['path']}: epoch {c['epochs_trained']}, latent_dim {c['latent_dim']}, "
        f"{c['hidden_layers']} hidden layers of {c['hidden_units']} "
        f"{c['config'].get('activation', 'relu')} units, trained in {c['dtype']}",
        f"{report['split'].capitalize()} set: {report['n']} images"
        + (f" (first {report['n']} of {report['n_split']})" if report['n'] < report['n_split'] else "")
        + f"; binarisation: {report['binarization']}",
        "Nats per image (summed over pixels, averaged over images); +- one standard "
        "error over images.",
        f"  {'':<44}{'estimate':>10}{'s.e.':>9}",
        row(f"ELBO ({S} posterior samples per image)", s["elbo"]),
        row("  reconstruction E_q[log p(x|z)]", s["log_px_given_z"]),
        row("  KL(q(z|x) || p(z)), closed form", s["kl"]),
        row(f"log p(x), importance weighted, K={K}", s["log_px"]),
        row("  gap log p(x) - ELBO", s["gap_log_px_minus_elbo"]),
        row("negative log-likelihood -log p(x)", s["log_px"], -1),
    ]
    if "exact_grid" in s:
        lines += exact_lines(s, report["n"], K, row)
    curve = ", ".join(f"K={k}: {v['mean']:.2f}" for k, v in s["iw_curve"].items())
    lines.append(f"Importance-weighted estimate with the first K samples: {curve}")
    active = [u for u in s["units"] if u["active"]]
    inactive_kl = sum(u["kl"] for u in s["units"] if not u["active"])
    lines.append(f"Active units (variance over images of the posterior mean > "
                 f"{ACTIVE_UNIT_THRESHOLD}): {s['active_units']} of {s['latent_dim']}; "
                 f"the inactive ones carry {inactive_kl:.3f} nats of KL")
    lines.append(f"  {'unit':>6}{'KL':>9}{'Var[mean]':>11}")
    for u in sorted(active, key=lambda u: -u["kl"]):
        lines.append(f"  {u['unit']:>6}{u['kl']:>9.2f}{u['posterior_mean_variance']:>11.3f}")
    if report["status"] != "complete":
        how = "TERMINATED (SIGTERM)" if report["status"] == "terminated" else "INTERRUPTED"
        lines.append(f"{how}: these numbers cover the first {report['n']} images only"
                     if report["n"] < report["n_selected"] else
                     f"{how} during the grid integration: no exact log p(x)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

def parse_args(argv=None):
    parser = arguments.OneLineErrorParser(
        description="Estimate the test log-likelihood of a VAE checkpoint written by "
                    "vae.py by importance sampling, with the ELBO and per-unit diagnostics.")
    add = parser.add_argument
    add("checkpoint", type=arguments.existing_file, help="checkpoint.npz written by vae.py")
    add("--split", choices=("test", "train"), default="test", help="which images")
    add("--n", type=arguments.positive_int, default=None, metavar="N",
        help="evaluate only the first N images of the split (default: all)")
    add("--iw-samples", type=arguments.positive_int, default=IW_SAMPLES, metavar="K",
        help="importance samples per image for log p(x)")
    add("--elbo-samples", type=arguments.positive_int, default=ELBO_SAMPLES, metavar="S",
        help="posterior samples per image for the ELBO's reconstruction term")
    add("--binarize", choices=("sample", "threshold"), default="sample",
        help="sample: x > uniform noise drawn once with a fixed seed, as vae.py's "
             f"test set; threshold: x > {THRESHOLD}")
    add("--seed", type=arguments.seed_int, default=0,
        help="seed of the posterior samples (image i uses default_rng([seed, i]))")
    add("--exact", action="store_true",
        help="2-dimensional latent space only: also compute log p(x) by integration "
             f"over a {GRID_POINTS}x{GRID_POINTS} grid on [-{GRID_HALF_WIDTH:g}, "
             f"{GRID_HALF_WIDTH:g}]^2, widened per image (same spacing, up to "
             f"[-{GRID_MAX_HALF_WIDTH:g}, {GRID_MAX_HALF_WIDTH:g}]^2) until its outer band holds "
             "a negligible share of the posterior mass")
    add("--data-dir", type=arguments.existing_dir, default=None, metavar="DIR",
        help="MNIST-format folder (default: the one the checkpoint was trained on)")
    add("--json", type=arguments.output_file, default=None, metavar="PATH",
        help="where to write the report (default: evaluation_<split>_<binarize>.json "
             "beside the checkpoint, or ..._n<N>.json for the first N images only); "
             "the per-image estimates go beside it as .npz; its folder must exist")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def report_path(args, n, n_split):
    """--json, or the default name beside the checkpoint: a partial evaluation
    (fewer images than the split, by --n or Ctrl-C) gets a name of its own."""
    if args.json is not None:
        return args.json
    partial = "" if n == n_split else f"_n{n}"
    return args.checkpoint.parent / f"evaluation_{args.split}_{args.binarize}{partial}.json"


def holds_complete_report(path):
    """Whether path is a report of every image of its split."""
    try:
        report = json.loads(Path(path).read_text())
        return report["status"] == "complete" and report["n"] == report["n_split"]
    except (OSError, ValueError, KeyError, TypeError):
        return False




def write_report(path, report, per_image, exact):
    """The JSON report and the per-image estimates beside it (.npz), atomically."""
    arrays = {key: per_image[key] for key in ("log_px", "log_px_se", "elbo", "log_px_given_z",
                                              "kl")}
    arrays.update({f"log_px_K{k}": v for k, v in per_image["iw_curve"].items()})
    if exact is not None:
        arrays["exact_log_px"] = exact["log_px"]
        arrays["exact_log_px_half_points"] = exact["half_points"]
        arrays["exact_converged"] = exact["converged"]
        arrays["exact_half_width"] = exact["half_width"]
        arrays["exact_log_band_fraction"] = exact["log_band_fraction"]
    runs.atomic_write(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    runs.write_json(path, report)


def evaluation_memory(iw_samples, elbo_samples, config, max_rows=MAX_ROWS):
    """Bytes, roughly, that evaluate() holds at once: two float64 numbers per
    sample of the images of one pass, and a pass of max_rows rows through the
    encoder and decoder (input, activations and output, a few copies each)."""
    samples = max(iw_samples, elbo_samples)
    images_per_pass = max(1, max_rows // samples)
    widths = data.DATA_DIM + config["hidden_layers"] * config["hidden_units"] + config["latent_dim"]
    return 8 * (2 * images_per_pass * samples + 4 * min(samples, max_rows) * images_per_pass * widths)


def run(args):
    """Evaluates per args, prints the table, then writes the JSON. -> exit code."""
    wall_start = time.perf_counter()
    gen_params, rec_params, config, history, note = checkpoints.read_model(args.checkpoint)
    if note:   # a run is training into its folder: said first
        print(note, flush=True)
    latent_dim = config["latent_dim"]
    if args.exact and latent_dim != 2:
        raise runs.RunError(f"--exact needs a 2-dimensional latent space; {args.checkpoint} "
                            f"has latent_dim {latent_dim}", exit_code=2)
    data_dir = args.data_dir or config["data_dir"]
    _, train_images, _, test_images, _ = data.load_data(data_dir and Path(data_dir))
    images = test_images if args.split == "test" else train_images
    if args.n is not None and args.n > len(images):
        raise runs.RunError(f"--n {args.n} but the {args.split} set has {len(images)} images",
                            exit_code=2)
    n_selected = min(args.n or len(images), len(images))
    path = report_path(args, n_selected, len(images))
    if path.suffix == ".npz":
        raise runs.RunError(f"--json {path}: the per-image estimates go to the same name with "
                            ".npz; name the report .json", exit_code=2)
    for written in (path, path.with_suffix(".npz")):
        arguments.check_output_file(written, "--json" if args.json else None)
    runs.check_writable(path.parent, what="the report's folder")
    runs.check_memory(evaluation_memory(args.iw_samples, args.elbo_samples, config),
                      f"--iw-samples {args.iw_samples} with --elbo-samples {args.elbo_samples}",
                      "choose a smaller --iw-samples")
    binary, binarization = binarize_split(images, args.binarize)
    binary = binary[:args.n]
    # Float64 throughout: the weights of a float32-trained model are cast up.
    gen_params = cast_params(gen_params, np.float64)
    rec_params = cast_params(rec_params, np.float64)
    with runs.sigterm_as_interrupt():
        per_image = evaluate(gen_params, rec_params, binary, args.iw_samples,
                             args.elbo_samples, args.seed, progress=not args.no_progress,
                             activation=config["activation"], estimate=True)
        n, stopped_by, exact = per_image["n_done"], per_image["stopped_by"], None
        if args.exact and stopped_by is None:
            try:
                exact = exact_summary(gen_params, binary, config["activation"])
            except KeyboardInterrupt as e:
                stopped_by = e
    status, code = runs.interruption(stopped_by) if stopped_by else ("complete", 0)
    if n == 0:
        print(f"{status.capitalize()} before the first image was done; nothing to report",
              file=sys.stderr)
        return code
    report = {
        "status": status,
        "checkpoint": {"path": str(args.checkpoint), "epochs_trained": len(history),
                       **{key: config[key] for key in ("latent_dim", "hidden_units",
                                                       "hidden_layers", "activation",
                                                       "dtype", "seed")},
                       "config": config},
        "split": args.split, "n": n, "n_split": len(images), "n_selected": len(binary),
        "binarization": binarization,
        "iw_samples": args.iw_samples, "elbo_samples": args.elbo_samples,
        "seed": args.seed,
        "units": "nats per image, summed over pixels, averaged over images; "
                 "se: standard error of the mean over images",
        "summary": summarize(per_image, exact),
        "wall_seconds": time.perf_counter() - wall_start,
        "versions": runs.library_versions(),
    }
    if note:   # the report's first key, as it was the first line printed
        report = {"note": note, **report}
    print(format_report(report), flush=True)
    path = report_path(args, n, len(images))
    if (n < len(images) or status != "complete") and holds_complete_report(path):
        print(f"Not written: {path} holds an evaluation of all {len(images)} images, and a "
              f"partial one never replaces it; pass another --json to keep this one",
              file=sys.stderr)
        return code or 1
    try:
        write_report(path, report, per_image, exact)
    except OSError as e:
        print(f"evaluate.py: error: could not write {path}: {e.strerror or e} (the report "
              "above is complete)", file=sys.stderr)
        return 1
    print(f"Wrote {path} and the per-image estimates to {path.with_suffix('.npz')} "
          f"({report['wall_seconds']:.0f} s)")
    return code


def main(argv=None):
    """Entry point of `python evaluate.py`: returns the exit code."""
    args = parse_args(argv)
    return runs.run_main("evaluate.py", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
