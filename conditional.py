"""Complete a digit from the part you can see: conditional inference in a trained VAE.

    python conditional.py output/checkpoint.npz

For test images of which only part is observed (the top half by default), the
decoder p(x|z) and the prior p(z) give the joint p(z, x_observed), and
p(x_observed | z) is the product of the observed pixels' Bernoulli terms only
(the missing ones sum out). Per image, a diagonal Gaussian
q(z) = N(mean, exp(log_std)^2) is fitted to p(z | x_observed) by stochastic
variational inference: Adam ascends

    E_q[log p(x_observed | z)] - KL(q(z) || p(z))
        = E_q[log p(z) + log p(x_observed | z) - log q(z)]

with S reparameterised samples z = mean + exp(log_std) * eps for the first
term and the KL in closed form (Kingma and Welling 2014, Sec. 2.4 and
Appendix B). It starts from the recognition model applied to the image with
its missing pixels set to their training mean (--init encoder), or from
p(z) (--init prior). The missing pixels are then predicted by the posterior
predictive distribution E_q[p(x_missing | z)]: its mean, a few sampled
completions, and the log-likelihood of the true missing pixels,

    SVI predictive    log E_q[p(x_missing | z)]
    prior predictive  log E_p(z)[p(x_missing | z)]    (ignores what is seen)
    pixel marginal    sum_d log Bernoulli(x_d; training mean of pixel d)

each estimated with K samples of z (log of a mean of K terms: on average a
little below the truth, by Jensen's inequality). For a 2-dimensional latent
space, the exact conditional log p(x_missing | x_observed) =
log p(x) - log p(x_observed) and the exact posterior p(z | x_observed) come
from integration on a grid (evaluate.py's), so the fitted q can be judged.

Units: nats per image, summed over the missing pixels, averaged over images,
with standard errors over images. Results: a JSON report and figures beside
the checkpoint (or in --output-dir), printed first.
"""
import sys
import time
from pathlib import Path

import numpy as np

import data
from vaelib import fastgrad
from vaelib import arguments, runs
from vaelib import checkpoints, grid, importance, svi, training
from vaelib.importance import image_rngs
from vaelib.svi import (UNCERTAIN, correlation_summary, draw, fit_q, log_pixel_marginal,
                        log_predictive, missing_pixel_means, observed_pixels,
                        predictive_samples, svi_objective)
from vaelib.networks import cast_params
import vae
from data import DATA_DIM
from plotting import IMAGE_SIDE, bernoulli_means

MASKS = ("top", "bottom", "left", "right")    # the half of the image that is observed
FIGURE_KINDS = ("completions", "posteriors", "correlations")   # <stem>_<kind>.png
SHOWN_IMAGES = 8           # rows of the completions figure
SHOWN_SAMPLES = 3          # sampled completions per row
CONTOUR_IMAGES = 4         # panels of the posterior figure (2-D latent space)


# ----------------------------------------------------------------------------
# The model seen through a mask
# ----------------------------------------------------------------------------













# ----------------------------------------------------------------------------
# Prediction of the missing pixels
# ----------------------------------------------------------------------------













# ----------------------------------------------------------------------------
# The exact answers for a 2-dimensional latent space
# ----------------------------------------------------------------------------





# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------

grid_points = arguments.checked(int, lambda p: p >= 20, "an integer of at least 20")


def parse_args(argv=None):
    parser = arguments.OneLineErrorParser(
        description="Fill in the missing half of test digits with a trained VAE: "
                    "fit q(z) to p(z | observed half) by stochastic variational "
                    "inference, predict the other half, and score the prediction.")
    add = parser.add_argument
    add("checkpoint", type=arguments.existing_file, help="a checkpoint.npz written by vae.py")
    add("--mask", choices=MASKS, default="top", help="the half of each image that is observed")
    add("--n", type=arguments.positive_int, default=100, help="the first N test images")
    add("--images", choices=("test", "model"), default="test",
        help="test: MNIST test images; model: N images sampled from the model itself "
             "(z ~ p(z), x ~ p(x|z)), on which the model's assumptions hold")
    add("--steps", type=arguments.positive_int, default=500, help="Adam steps of the SVI fit")
    add("--samples", type=arguments.positive_int, default=10,
        help="reparameterised samples of z per image and step")
    add("--learning-rate", type=arguments.positive_float, default=0.02, help="Adam step size")
    add("--init", choices=("encoder", "prior"), default="encoder",
        help="encoder: q starts at the recognition model's output for the image with its "
             "missing pixels set to their training mean; prior: q starts at N(0, I)")
    add("--predictive-samples", type=arguments.positive_int, default=1000, metavar="K",
        help="samples of z behind every predictive estimate")
    add("--grid-points", type=grid_points, default=grid.GRID_POINTS, metavar="P",
        help="2-D latent space: the exact answers integrate over a P x P grid on "
             f"[-{grid.GRID_HALF_WIDTH:g}, {grid.GRID_HALF_WIDTH:g}]^2, widened per "
             "image where the mass reaches its edge, checked against P/2 x P/2")
    add("--seed", type=arguments.seed_int, default=0,
        help="image i draws its noise from numpy.random.default_rng([seed, i, 0]) for the "
             "fit and default_rng([seed, i, 1]) for the estimates")
    add("--output-dir", type=arguments.output_dir, default=None, metavar="DIR",
        help="where the report and figures go (default: the checkpoint's folder)")
    add("--json", type=arguments.output_file, default=None, metavar="PATH",
        help="the report (default: conditional_<mask>.json in the output folder; "
             "conditional_<mask>_model.json with --images model); its folder must exist")
    add("--overwrite", action="store_true",
        help="replace an earlier conditional.py report and figures for this mask and images")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def fit_and_predict(args, gen_params, rec_params, config, x, pixel_mean, pixel_probability):
    """The SVI fit and every number of the report, per image. -> dict of arrays."""
    activation, latent_dim = config["activation"], config["latent_dim"]
    observed = observed_pixels(args.mask)
    missing = ~observed
    filled = np.where(observed, x, pixel_mean)
    encoder_q = fastgrad.neural_net_predict(rec_params, filled, activation)
    q_init = encoder_q if args.init == "encoder" else np.zeros((len(x), 2 * latent_dim))
    q, trace = fit_q(gen_params, x, observed, q_init, image_rngs(args.seed, range(len(x)), 0),
                     args.steps, args.samples, args.learning_rate, activation,
                     progress=not args.no_progress, estimate=True)
    # Fresh generators, apart from the fit's, for every estimate below.
    eval_rngs = image_rngs(args.seed, range(len(x)), 1)
    eps = draw(eval_rngs, args.predictive_samples, latent_dim)
    z_q = predictive_samples(q, eval_rngs, args.predictive_samples)
    z_prior = draw(eval_rngs, args.predictive_samples, latent_dim)
    out = {
        "observed": observed, "q": q, "encoder_q": encoder_q, "trace": trace,
        "bound_start": svi_objective(q_init, gen_params, x, observed, eps, activation),
        "bound_end": svi_objective(q, gen_params, x, observed, eps, activation),
        "svi": log_predictive(gen_params, x, missing, z_q, activation),
        "prior": log_predictive(gen_params, x, missing, z_prior, activation),
        "pixel_marginal": log_pixel_marginal(x, missing, pixel_probability),
    }
    # One image at a time: K x D_missing pixel means per image add up for many images.
    shown = min(SHOWN_IMAGES, len(x))
    out["correlations"] = {"svi": [], "prior": []}
    out["predictive_mean"] = np.empty((shown, int(missing.sum())))
    out["sampled"] = np.empty((shown, min(SHOWN_SAMPLES, len(z_q)), int(missing.sum())))
    from tqdm import tqdm
    for n in tqdm(range(len(x)), desc="predictive", unit="image", leave=False,
                  disable=None if not args.no_progress else True):
        means = missing_pixel_means(gen_params, z_q[:, n], missing, activation)
        prior_means = missing_pixel_means(gen_params, z_prior[:, n], missing, activation)
        out["correlations"]["svi"].append(correlation_summary(means))
        out["correlations"]["prior"].append(correlation_summary(prior_means))
        if n == 0:
            out["correlation_maps"] = {"svi": means, "prior": prior_means}
        if n < shown:
            out["predictive_mean"][n] = means.mean(axis=0)
            out["sampled"][n] = means[:SHOWN_SAMPLES]
    if latent_dim == 2:
        exact = exact_answers(gen_params, x, observed, activation, args.grid_points,
                              progress=not args.no_progress)
        out["correlation_maps"]["exact"] = exact.pop("correlation_map")
        out["correlations"]["exact"] = exact.pop("correlations")
        out.update(exact)
    return out


def exact_answers(gen_params, x, observed, activation, points, progress=False):
    """For a 2-D latent space, on the grid: log p(x_observed), the exact
    conditional log p(x_missing | x_observed) = log p(x) - log p(x_observed)
    and log p(x_missing) (N,); the posterior's mean (N, 2) and covariance
    (N, 2, 2); the largest change of the conditional with half the points;
    per image, whether all three integrals converged (grid.grid_check:
    spacing and extent) and the grid's facts; the missing pixels'
    correlations under the exact conditional, per image."""
    missing = ~observed
    checks = [grid.grid_check(gen_params, x, activation, mask, points,
                                  moments=mask is observed)
              for mask in (None, observed, missing)]
    log_p_observed, mean, cov = (checks[1][key] for key in ("log_px", "mean", "cov"))
    log_p_all, coarse_all = checks[0]["log_px"], checks[0]["half_points"]
    coarse = coarse_all - checks[1]["half_points"]
    out = {"log_p_observed": log_p_observed, "exact": log_p_all - log_p_observed,
           "prior_exact": checks[2]["log_px"],
           "exact_mean": mean, "exact_cov": cov, "correlations": [],
           "grid_converged": checks[0]["converged"] & checks[1]["converged"]
                             & checks[2]["converged"],
           "grid_facts": {name: grid.grid_facts(c) for name, c in
                          zip(("x", "x_observed", "x_missing"), checks)}}
    out["grid_change"] = float(np.max(np.abs(out["exact"] - coarse)))
    from tqdm import tqdm
    for n in tqdm(range(len(x)), desc="exact correlations", unit="image", leave=False,
                  disable=None if progress else True):
        z, w = grid.local_posterior(gen_params, x[n], observed, mean[n], cov[n], activation)
        means = missing_pixel_means(gen_params, z, missing, activation)
        out["correlations"].append(correlation_summary(means, w))
        if n == 0:
            out["correlation_map"] = (means, w)
    return out


def model_images(gen_params, activation, n, seed):
    """n binary images drawn from the model: z ~ N(0, I), then every pixel
    ~ Bernoulli(sigmoid(decoder(z))), from default_rng([seed, 0, 2]).
    -> (images (n, D), a sentence that says so)."""
    rng = np.random.default_rng([seed, 0, 2])
    z = rng.standard_normal((n, gen_params[0][0].shape[0]))
    means = bernoulli_means(fastgrad.neural_net_predict(gen_params, z, activation))
    return ((rng.random(means.shape) < means).astype(np.float64),
            f"sampled from the model: z ~ N(0, I), x ~ p(x|z), numpy.random.default_rng([{seed}, 0, 2])")


def training_pixel_mean(train_images):
    """The per-pixel mean of the training images (the probability that dynamic
    binarisation turns a pixel on), and the same moved off 0 and 1 by
    Laplace's rule, (n p + 1) / (n + 2), so that a pixel never on in training
    still gets a finite log-probability. -> (mean (D,), probability (D,))."""
    n, mean = len(train_images), train_images.mean(axis=0)
    return mean, (n * mean + 1) / (n + 2)


def correlation_entry(summaries, missing):
    """Means over images of the per-image largest and mean |correlation|, and
    image 0's numbers with its most correlated pair as (row, column)."""
    max_abs = np.array([r["max_abs"] for r in summaries])
    finite = np.isfinite(max_abs)
    if not finite.any():
        return {"images_with_two_uncertain_pixels": 0}
    return {"images_with_two_uncertain_pixels": int(finite.sum()),
            "max_abs": importance.entry(max_abs[finite]),
            "mean_abs": importance.entry(np.array([r["mean_abs"] for r in summaries])[finite]),
            "image_0": {**{k: v for k, v in summaries[0].items() if k != "pair"},
                        "most_correlated_pixels_row_column": [
                            divmod(int(np.flatnonzero(missing)[i]), IMAGE_SIDE)
                            for i in summaries[0]["pair"] or ()]}}


def summarize(per_image, args):
    """The report's numbers, means and standard errors over images."""
    s = {"missing_pixels_log_likelihood": {
        key: importance.entry(per_image[key]) for key in ("svi", "prior", "pixel_marginal")}}
    s["svi_minus"] = {key: importance.entry(per_image["svi"] - per_image[key])
                      for key in ("prior", "pixel_marginal")}
    s["observed_pixels_bound"] = {"start": importance.entry(per_image["bound_start"]),
                                  "end": importance.entry(per_image["bound_end"]),
                                  "trace_first_last": [float(per_image["trace"][0]),
                                                       float(per_image["trace"][-1])]}
    s["predictive_correlation"] = {
        "note": f"between missing pixels whose predictive mean lies in {UNCERTAIN}; given "
                "z they are independent (correlation 0)",
        **{name: correlation_entry(c, ~per_image["observed"])
           for name, c in per_image["correlations"].items()}}
    if "exact" in per_image:
        ll = s["missing_pixels_log_likelihood"]
        ll["exact"] = importance.entry(per_image["exact"])
        ll["prior_exact"] = importance.entry(per_image["prior_exact"])
        s["svi_minus"]["exact"] = importance.entry(per_image["svi"] - per_image["exact"])
        # log p(x_missing | x_observed) - log p(x_missing): what seeing one half is worth.
        pmi = per_image["exact"] - per_image["prior_exact"]
        s["pointwise_mutual_information"] = {**importance.entry(pmi),
                                             "fraction_negative": float(np.mean(pmi < 0))}
        s["observed_pixels_bound"]["exact_log_p_observed"] = importance.entry(per_image["log_p_observed"])
        s["observed_pixels_bound"]["gap_at_end"] = importance.entry(per_image["log_p_observed"]
                                                         - per_image["bound_end"])
        mean, log_std = vae.unpack_gaussian_params(per_image["q"])
        exact_sd = np.sqrt(np.diagonal(per_image["exact_cov"], axis1=1, axis2=2))
        s["posterior_fit"] = {
            "mean_error_in_exact_sds": importance.entry(np.max(np.abs(mean - per_image["exact_mean"])
                                                    / exact_sd, axis=1)),
            "std_ratio_q_to_exact": importance.entry(np.exp(log_std) / exact_sd),
            "exact_correlation": importance.entry(per_image["exact_cov"][:, 0, 1]
                                       / np.prod(exact_sd, axis=1)),
        }
        s["grid"] = {**grid.grid_settings(args.grid_points),
                     "max_change_from_half_the_points": per_image["grid_change"],
                     "converged_images": int(per_image["grid_converged"].sum()),
                     "not_converged_image_indices":
                         np.flatnonzero(~per_image["grid_converged"]).tolist(),
                     "integrals": per_image["grid_facts"]}
    return s


def grid_lines(g, n):
    """The report's lines on the grid of the exact answers."""
    widened = max(f["widened_images"] for f in g["integrals"].values())
    largest = max(f["largest_half_width"] for f in g["integrals"].values())
    lines = [f"Grid: {g['points']}^2 cells from [-{g['start_half_width']:g}, "
             f"{g['start_half_width']:g}]^2, widened for {widened} images (to at most "
             f"[-{largest:.3g}, {largest:.3g}]^2); converged (spacing and extent) for "
             f"{g['converged_images']} of {n} images; halving the points moves the conditional "
             f"by at most {g['max_change_from_half_the_points']:.1e}"]
    if g["converged_images"] < n:
        shown = g["not_converged_image_indices"]
        lines.append(f"PROBLEM: the grid did not converge for images "
                     f"{', '.join(map(str, shown[:10]))}{', ...' if len(shown) > 10 else ''}; "
                     "the 'exact' rows are approximations (try more --grid-points)")
    return lines


def format_report(report):
    s, k = report["summary"], report["settings"]["predictive_samples"]
    ll, diff = s["missing_pixels_log_likelihood"], s["svi_minus"]

    def row(name, e):
        return f"  {name:<54}{e['mean']:>9.2f}{e['se']:>8.2f}"

    lines = [f"{report['checkpoint']}: latent_dim {report['config']['latent_dim']}, "
             f"{report['config']['activation']}; {report['images']}, "
             f"binarisation: {report['binarization']}",
             f"observed: {report['settings']['mask']} half ({report['observed_pixels']} pixels), "
             f"predicted: {report['missing_pixels']} pixels; SVI: {report['settings']['steps']} "
             f"Adam steps, {report['settings']['samples']} samples, init "
             f"{report['settings']['init']}",
             f"Log-likelihood of the true missing pixels, nats per image{'':>11}mean      se",
             row(f"SVI predictive log E_q[p(x_miss|z)], K={k}", ll["svi"]),
             row(f"prior predictive log E_p(z)[p(x_miss|z)], K={k}", ll["prior"]),
             row("per-pixel training mean", ll["pixel_marginal"])]
    exact = "exact"
    if "exact" in ll:
        g, n = s["grid"], report["n"]
        exact = "exact" if g["converged_images"] == n else "NOT exact"
        lines += [row(f"{exact} log p(x_miss|x_obs), grid", ll["exact"]),
                  row(f"{exact} log p(x_miss), grid", ll["prior_exact"]),
                  row("their difference, the pointwise mutual information",
                      s["pointwise_mutual_information"])
                  + f"  (negative for {s['pointwise_mutual_information']['fraction_negative']:.0%})"]
    lines += [row(f"SVI minus {name.replace('_', ' ')} (paired)", e) for name, e in diff.items()]
    b = s["observed_pixels_bound"]
    lines += ["Observed pixels: E_q[log p(x_obs|z)] - KL(q||p(z))",
              row("at the start of the fit", b["start"]), row("at the end", b["end"])]
    if "exact_log_p_observed" in b:
        lines += [row(f"{exact} log p(x_obs), grid", b["exact_log_p_observed"]),
                  row("gap at the end = KL(q || p(z|x_obs))", b["gap_at_end"])]
        f = s["posterior_fit"]
        lines.append(f"Fitted q against the exact posterior: largest |mean error| "
                     f"{f['mean_error_in_exact_sds']['mean']:.2f} exact sds on average; "
                     f"sd ratio q/exact {f['std_ratio_q_to_exact']['mean']:.2f}; the exact "
                     f"posterior's correlation {f['exact_correlation']['mean']:+.2f} on average "
                     f"(a diagonal q has none)")
    if "grid" in s:
        lines += grid_lines(s["grid"], report["n"])
    lines.append("Largest |correlation| between two uncertain missing pixels (given z: 0), "
                 "mean over images:")
    for name, label in (("svi", "under the SVI predictive"), ("exact", "under the exact "
                        "conditional"), ("prior", "under the prior predictive")):
        c = s["predictive_correlation"].get(name)
        if c and "max_abs" in c:
            lines.append(row(f"{label} ({c['images_with_two_uncertain_pixels']} images)",
                             c["max_abs"]))
    return "\n".join(lines)


def write_figures(per_image, x, observed, gen_params, activation, out, stem):
    """Completions (and, for a 2-D latent space, posterior contours). -> paths."""
    import plotting

    shown = len(per_image["predictive_mean"])
    rows = []
    for n in range(shown):
        def complete(missing_values):
            image = x[n].copy()
            image[~observed] = missing_values
            return image
        rows += [x[n], np.where(observed, x[n], 0.5), complete(per_image["predictive_mean"][n]),
                 *(complete(s) for s in per_image["sampled"][n])]
    paths, samples = [out / f"{stem}_{FIGURE_KINDS[0]}.png"], per_image["sampled"].shape[1]
    name = "model image" if stem.endswith("_model") else "test image"
    plotting.save_labelled_grid(
        np.array(rows), paths[0], 3 + samples,
        ["original", "observed", "predictive\nmean", *(f"sample {k + 1}" for k in range(samples))],
        [f"{name} {n}" for n in range(shown)], "completions of the missing pixels\n(grey: "
        "not observed; each sample decoded from one z ~ q)")
    if "exact_mean" in per_image:
        panels = [(f"{name} {n}", *grid.contour_panel(
                      gen_params, x[n], observed, per_image["q"][n], per_image["encoder_q"][n],
                      per_image["exact_mean"][n], per_image["exact_cov"][n], activation))
                  for n in range(min(CONTOUR_IMAGES, len(x)))]
        paths.append(out / f"{stem}_{FIGURE_KINDS[1]}.png")
        plotting.save_posterior_contours(panels, paths[-1])
    maps, titles, marked = svi.correlation_maps(per_image["correlation_maps"], observed)
    others = np.abs(np.delete(maps, marked, axis=1))
    limit = max(0.05, np.ceil(others.max() * 20) / 20)   # the scale's end, a multiple of 0.05
    paths.append(out / f"{stem}_{FIGURE_KINDS[2]}.png")
    plotting.save_correlation_maps(maps, titles, marked, paths[-1], limit, title=(
        f"{name} 0: correlation of the marked missing pixel (x) with every missing pixel"))
    return paths




def sampling_memory(rows, config):
    """Bytes, roughly, of `rows` samples of z through the decoder at once (the
    bounds', the fit's and the predictive estimates' passes): the samples,
    the hidden layers and the logits of half the pixels, a few copies each
    (measured: 13.7 KB a row for latent_dim 2 and 16 hidden units, 12.9 KB
    predicted)."""
    hidden = config["hidden_layers"] * config["hidden_units"]
    return 8 * rows * (8 * config["latent_dim"] + 2 * hidden + 4 * (DATA_DIM // 2))


def grid_memory(points):
    """Bytes, roughly, of the exact answers' grid of points x points: two
    float64 coordinates per point and the two arrays they are made from."""
    return 4 * 8 * points ** 2


def check_sizes(args, config):
    """Refuses, before any work, sizes that cannot fit in memory (RunError, exit 2)."""
    n = f"for {args.n} image{'s' * (args.n > 1)}"
    runs.check_memory(sampling_memory(args.predictive_samples * args.n, config),
                      f"--predictive-samples {args.predictive_samples} {n}",
                      "choose a smaller --predictive-samples or --n")
    # The fit: autograd keeps each step's intermediate values for the gradient.
    runs.check_memory(3 * sampling_memory(args.samples * args.n, config),
                      f"--samples {args.samples} {n}", "choose a smaller --samples or --n")
    if config["latent_dim"] == 2:
        runs.check_memory(grid_memory(args.grid_points), f"--grid-points {args.grid_points}",
                          "choose a smaller --grid-points")


def run(args):
    """Fits, prints the report, then writes it and the figures. -> exit code."""
    wall_start = time.perf_counter()
    gen_params, rec_params, config, history, note = checkpoints.read_model(args.checkpoint)
    if note:   # a run is training into its folder: said first
        print(note, flush=True)
    gen_params = cast_params(gen_params, np.float64)
    rec_params = cast_params(rec_params, np.float64)
    out = args.output_dir or args.checkpoint.parent
    stem = f"conditional_{args.mask}" + "_model" * (args.images == "model")
    json_path = args.json or out / f"{stem}.json"
    for path in [json_path] + [out / f"{stem}_{kind}.png" for kind in FIGURE_KINDS]:
        if path.parent.is_dir():     # else the output folder is created below
            arguments.check_output_file(path)
    data_dir = config["data_dir"]
    _, train_images, _, test_images, _ = data.load_data(data_dir and Path(data_dir))
    if args.images == "test" and args.n > len(test_images):
        raise runs.RunError(f"--n {args.n} but the test set has {len(test_images)} images",
                            exit_code=2)
    check_sizes(args, config)
    runs.prepare_output_dir(out, [f"{stem}_{kind}.png" for kind in FIGURE_KINDS], args.overwrite,
                            "conditional.py", runs.FIGURE_BYTES)
    runs.claim_output_dir(json_path.parent, (json_path.name,), args.overwrite, "conditional.py")
    runs.check_writable(json_path.parent, what="the report's folder")
    if args.images == "model":
        x, binarization = model_images(gen_params, config["activation"], args.n, args.seed)
    else:
        x, binarization = training.binarize_split(test_images, "sample")
        x = x[:args.n]
    pixel_mean, pixel_probability = training_pixel_mean(train_images[:config["n_train"]])
    try:
        with runs.sigterm_as_interrupt():
            per_image = fit_and_predict(args, gen_params, rec_params, config, x, pixel_mean,
                                        pixel_probability)
    except KeyboardInterrupt as e:
        status, code = runs.interruption(e)
        print(f"\n{status.capitalize()}: nothing was written", file=sys.stderr)
        return code
    observed = per_image["observed"]
    settings = {key: getattr(args, key) for key in (
        "images", "mask", "steps", "samples", "learning_rate", "init", "predictive_samples", "seed",
        "grid_points")}
    report = {
        "status": "complete", "checkpoint": str(args.checkpoint), "epochs_trained": len(history),
        "config": config, "n": len(x),
        "images": f"the first {len(x)} test images" if args.images == "test" else
                  f"{len(x)} images sampled from the model",
        "binarization": binarization, "observed_pixels": int(observed.sum()),
        "missing_pixels": int((~observed).sum()), "settings": settings,
        "pixel_marginal": "training mean per pixel, smoothed as (n p + 1) / (n + 2)",
        "units": "nats per image, summed over the missing pixels, averaged over images; "
                 "se: standard error of the mean over images",
        "summary": summarize(per_image, args),
    }
    if note:   # the report's first key, as it was the first line printed
        report = {"note": note, **report}
    print(format_report(report), flush=True)
    paths = write_figures(per_image, x, observed, gen_params, config["activation"], out, stem)
    report.update(figures=[str(p) for p in paths], wall_seconds=time.perf_counter() - wall_start,
                  versions=runs.library_versions())
    runs.write_json(json_path, report)
    print(f"Wrote {json_path} and {len(paths)} figure{'s' * (len(paths) > 1)} to {out}/ "
          f"({report['wall_seconds']:.0f} s)")
    return 0


def main(argv=None):
    """Entry point of `python conditional.py`: returns the exit code."""
    args = parse_args(argv)
    return runs.run_main("conditional.py", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
