"""Headless PNG writers for the VAE practical.

This module knows nothing about the model: it turns NumPy arrays into PNG
files. It never imports matplotlib.pyplot and never selects a backend; every
figure is built with the object-oriented API (Figure + FigureCanvasAgg), and
raw image grids are written with matplotlib.image.imsave. Every writer creates
missing parent folders and writes atomically (a temporary file renamed over
the target), and identical input gives byte-identical files (the PNG metadata
carries no date and no software version).
"""

import os
from pathlib import Path

import numpy as np
from scipy.special import expit

# matplotlib is imported inside the writers that draw: `import data` (which
# re-exports save_images for the course skeleton) stays quick.

IMAGE_SIDE = 28
DIGIT_DIMENSIONS = (IMAGE_SIDE, IMAGE_SIDE)

FIGURE_SIZE = (6, 4)  # inches
FIGURE_DPI = 100
PNG_METADATA = {"Software": None}  # drop the version string; PNGs carry no date
NUM_CLASSES = 10               # digits 0-9 (data.py's labels)
MANIFOLD_PIXELS_PER_CELL = 2  # a manifold has many images: keep its PNG small


def _write_png(filename, write):
    """write(file) into a temporary file beside filename, renamed over it when
    complete: an interrupted run never leaves half a PNG. Parent folders are
    created. (The library's writers do the same; plotting.py imports nothing of
    the project but data.py's constants, so that it works alone, as in the
    grader's sandbox.)"""
    path = Path(filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_images(images, digit_dimensions):
    """Return images as an array of shape (N, H*W), or raise ValueError."""
    images = np.asarray(images)
    height, width = digit_dimensions
    if images.ndim != 2 or images.shape[1] != height * width or len(images) == 0:
        raise ValueError(
            f"expected images of shape (N, {height * width}) with N >= 1 "
            f"(one flattened {height}x{width} image per row), "
            f"got shape {images.shape}")
    return images


def image_grid(images, ims_per_row=5, padding=5,
               digit_dimensions=DIGIT_DIMENSIONS, pad_value=None):
    """Tile flattened images into one 2-D array.

    images: (N, H*W), one flattened image per row, with (H, W) = digit_dimensions.
    Images fill rows of `ims_per_row` cells, left to right then top to bottom.
    There are `padding` pixels between neighbouring images and around the
    border. Padding and the unused cells of the last row hold `pad_value`
    (default: images.min()).

    Returns an array of shape (R*(H+padding)+padding, C*(W+padding)+padding),
    with C = ims_per_row and R = ceil(N / C), of the same dtype as images.
    Image k sits in cell (k // C, k % C), whose top-left pixel is at
    (padding + row*(H+padding), padding + col*(W+padding)).
    """
    images = _check_images(images, digit_dimensions)
    if ims_per_row < 1 or padding < 0:
        raise ValueError(f"need ims_per_row >= 1 and padding >= 0, "
                         f"got ims_per_row={ims_per_row}, padding={padding}")
    if pad_value is None:
        pad_value = images.min()
    height, width = digit_dimensions
    n_rows = -(-len(images) // ims_per_row)  # ceiling division
    n_cells = n_rows * ims_per_row

    # Fill the unused cells with blank images: (n_cells, H, W).
    cells = np.full((n_cells, height, width), pad_value, dtype=images.dtype)
    cells[:len(images)] = images.reshape(-1, height, width)
    # Pad every cell above and to the left, then interleave rows and columns:
    # (R, C, H+p, W+p) -> (R, H+p, C, W+p) -> (R*(H+p), C*(W+p)).
    cells = cells.reshape(n_rows, ims_per_row, height, width)
    cells = np.pad(cells, ((0, 0), (0, 0), (padding, 0), (padding, 0)),
                   constant_values=pad_value)
    grid = cells.transpose(0, 2, 1, 3).reshape(
        n_rows * (height + padding), ims_per_row * (width + padding))
    # Close the border below and to the right.
    return np.pad(grid, ((0, padding), (0, padding)), constant_values=pad_value)


def save_images(images, filename, ims_per_row=5, padding=5,
                digit_dimensions=DIGIT_DIMENSIONS, cmap="binary",
                vmin=None, vmax=None, pixels_per_cell=4):
    """Write images (N, H*W) as one PNG grid without axes.

    The grid comes from image_grid; padding takes the value vmin if given,
    else images.min() (white with the binary colour map). Each image pixel
    becomes a pixels_per_cell x pixels_per_cell block, so a grid of shape
    (G_h, G_w) is written as a PNG of G_h*pixels_per_cell x G_w*pixels_per_cell
    pixels. cmap, vmin and vmax go to the colour mapping ("binary": vmin is
    white, vmax is black; None means the data minimum / maximum).
    """
    content = grid_png(images, ims_per_row, padding, digit_dimensions, cmap, vmin, vmax,
                       pixels_per_cell)
    _write_png(filename, lambda f: f.write(content))


def grid_png(images, ims_per_row=5, padding=5, digit_dimensions=DIGIT_DIMENSIONS,
             cmap="binary", vmin=None, vmax=None, pixels_per_cell=4):
    """The PNG that save_images writes, as bytes (the grader's pages embed
    them): the same arguments, the same bytes."""
    import io
    import matplotlib.image
    images = _check_images(images, digit_dimensions)
    pad_value = vmin if vmin is not None else images.min()
    grid = image_grid(images, ims_per_row, padding, digit_dimensions, pad_value)
    block = np.ones((pixels_per_cell, pixels_per_cell), dtype=grid.dtype)
    out = io.BytesIO()
    matplotlib.image.imsave(out, np.kron(grid, block), cmap=cmap, vmin=vmin, vmax=vmax,
                            format="png", metadata=PNG_METADATA)
    return out.getvalue()


def bernoulli_means(logits):
    """Turn decoder logits (any shape) into pixel intensities in [0, 1].

    The mean of a Bernoulli with these logits, sigmoid(logits), computed by
    scipy.special.expit: stable for large |logits|, no overflow warnings.
    Returns an array of the same shape and (floating) dtype as logits.
    """
    return expit(np.asarray(logits))


def _new_axes():
    """Return (figure, axes) of the standard size, drawn by the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure, filename):
    _write_png(filename, lambda f: figure.savefig(f, format="png", dpi=FIGURE_DPI,
                                                  metadata=PNG_METADATA))


def _save_figure(figure, filename):
    figure.tight_layout()
    _save(figure, filename)


def save_learning_curve(epochs, train_elbo, test_elbo, filename, measure="ELBO"):
    """Plot the training objective (nats per image, higher is better) against epoch.

    epochs: (E,) 1-based epoch numbers. train_elbo: (E,) training-set
    estimates. test_elbo: (E,) test-set values, or None to leave the line out.
    measure: what the values are, named on the y axis ("ELBO", or e.g. an
    autoencoder's "reconstruction log-likelihood", which bounds nothing).
    """
    epochs = np.asarray(epochs)
    train_elbo = np.asarray(train_elbo)
    curves = [(train_elbo, "train (estimate)")]
    if test_elbo is not None:
        curves.append((np.asarray(test_elbo), "test set"))
    for values, label in curves:
        if values.shape != epochs.shape or epochs.ndim != 1:
            raise ValueError(f"expected {label} {measure} of shape {epochs.shape} "
                             f"like the 1-D epochs, got shape {values.shape}")
    figure, axes = _new_axes()
    for values, label in curves:
        axes.plot(epochs, values, marker="o", markersize=3, label=label)
    from matplotlib.ticker import MaxNLocator
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.set_xlim(epochs.min() - 0.5, epochs.max() + 0.5)
    axes.set_xlabel("epoch")
    axes.set_ylabel(f"{measure}{' ' if len(measure) < 12 else chr(10)}"
                    "(nats per image, higher is better)")
    axes.set_title("learning curve")
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save_figure(figure, filename)


def save_latent_scatter(means, digits, filename):
    """Scatter 2-D posterior means coloured by digit class.

    means: (N, 2) posterior means; digits: (N,) integer labels 0-9.
    """
    means = np.asarray(means)
    digits = np.asarray(digits)
    if means.ndim != 2 or means.shape[1] != 2 or digits.shape != (len(means),):
        raise ValueError(f"expected means (N, 2) and digits (N,), "
                         f"got {means.shape} and {digits.shape}")
    figure, axes = _new_axes()
    # tab10 has exactly ten colours; limits of +-0.5 centre each digit on one.
    points = axes.scatter(means[:, 0], means[:, 1], c=digits, cmap="tab10",
                          vmin=-0.5, vmax=NUM_CLASSES - 0.5,
                          s=2, linewidths=0)
    figure.colorbar(points, ax=axes, ticks=range(NUM_CLASSES), label="digit")
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_xlabel("$z_1$")
    axes.set_ylabel("$z_2$")
    axes.set_title("posterior means of the test set")
    _save_figure(figure, filename)


def _grid_figure(grid_shape, scale, margins):
    """(figure, axes): one axes showing a grid of grid_shape = (H, W) pixels at
    scale screen pixels per grid pixel, exactly (no resampling), inside
    margins = (left, right, bottom, top) in inches (multiples of 1/FIGURE_DPI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    left, right, bottom, top = margins
    height, width = (side * scale / FIGURE_DPI for side in grid_shape)
    size = (left + width + right, bottom + height + top)
    figure = Figure(figsize=size, dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((left / size[0], bottom / size[1], width / size[0], height / size[1]))
    return figure, axes


def _show_grid(axes, images, ims_per_row, padding=5, row_labels=None, column_labels=None,
               title=None, fontsize=8):
    """Draw image_grid(images) in axes as save_images colours it with vmin=0,
    vmax=1 (white 0, black 1), one image pixel per data unit. Labels name the
    rows (left) and the columns (top); without them the axes have no ticks."""
    grid = image_grid(images, ims_per_row, padding, pad_value=0.0)
    axes.imshow(grid, cmap="binary", vmin=0, vmax=1, interpolation="nearest")
    height, width = DIGIT_DIMENSIONS

    def centres(count, side):
        return padding + np.arange(count) * (side + padding) + (side - 1) / 2
    axes.set_yticks(centres(len(row_labels), height) if row_labels else [],
                    row_labels or [], fontsize=fontsize)
    axes.set_xticks(centres(len(column_labels), width) if column_labels else [],
                    column_labels or [], fontsize=fontsize)
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    if title:
        axes.set_title(title, fontsize=fontsize + 1)


def _a_digit(digit):
    return f"{'an' if digit == 8 else 'a'} {digit}"


def explained_figure(prior, originals, reconstructions, interpolations, digits):
    """The figures of the assignment (as save_images writes them, padding 5,
    white 0 and black 1) with what a reader needs: titles naming each file and
    what it shows, the data / reconstruction rows, and each interpolation's
    start and end test images with their digits. -> Figure.

    prior: (P, D) decoded prior samples (5 per row); originals,
    reconstructions: (R, D) the first R test images and their reconstructions;
    interpolations: {(a, b): (S, D) frames from test image a to test image b};
    digits: (N,) the test set's labels, N > every index shown.
    """
    scale, column, gap, padding = 2, 3.4, 0.6, 5   # screen pixels per pixel; inches; pixels
    panels = [("samples_from_prior.png\n"
               f"{len(prior)} samples z from the prior, decoded", prior)]
    panels += [(f"interpolation_{a}_{b}.png\ntest image {a} ({_a_digit(digits[a])}) \u2192 "
                f"test image {b} ({_a_digit(digits[b])})", frames)
               for (a, b), frames in interpolations.items()]
    n = len(originals)

    def size(count, per_row):     # (width, height) in inches of a grid of count images
        return [(cells * (IMAGE_SIDE + padding) + padding) * scale / FIGURE_DPI
                for cells in (per_row, -(-count // per_row))]
    recon_w, recon_h = size(2 * n, n)
    width = 3 * column + 2 * gap + 0.4
    heights = [0.7, recon_h, 0.2] + [0.55, column] * -(-len(panels) // 3) + [0.6]
    total = sum(heights)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, total), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)

    def place(x, top, w, h):      # inches from the left and from the top
        return figure.add_axes((x / width, 1 - (top + h) / total, w / width, h / total))
    _show_grid(place(round((width - recon_w) / 2, 2), heights[0], recon_w, recon_h),
               np.concatenate([originals, reconstructions]), n, padding,
               row_labels=["data", "reconstruction"],
               column_labels=[f"{k} ({digits[k]})" for k in range(n)],
               title=f"reconstructions.png: the first {n} test images (above: index and "
                     "digit), each encoded and decoded")
    for k, (title, images) in enumerate(panels):
        top = sum(heights[:3]) + (k // 3) * (0.55 + column) + 0.55
        _show_grid(place(0.2 + (k % 3) * (column + gap), top, *size(len(images), 5)), images,
                   5, padding, title=title, fontsize=9)
    figure.text(0.5, 0.1 / total, "Each interpolation decodes z = (1 - s) z_a + s z_b between "
                "the encoder's means z_a and z_b for s from 0 (top left) to 1 (bottom right), "
                "read left to right, top to bottom.\nEvery image shows pixel means "
                "sigmoid(logits) of the decoder: white 0, black 1.", ha="center",
                va="bottom", fontsize=9)
    return figure


def save_figures_explained(prior, originals, reconstructions, interpolations, digits,
                           filename):
    """Write explained_figure(...) as a PNG (beside the files it explains)."""
    _save(explained_figure(prior, originals, reconstructions, interpolations, digits),
          filename)


def manifold_figure(pixel_means, n_per_side, z_values):
    """Decoded images over a square grid of latent values, with axes. -> Figure.

    pixel_means: (n_per_side**2, H*W) intensities in [0, 1], row-major: the
    image for latent grid row i, column j is pixel_means[i*n_per_side + j],
    drawn in row i (top = 0), column j (left = 0). z_values: (n_per_side,) the
    grid's values of each coordinate, increasing: column j is at
    z_1 = z_values[j], row i at z_2 = z_values[n_per_side - 1 - i] (z_2 grows
    upwards). The ticks at the cells' centres show these values. No padding;
    each image pixel is MANIFOLD_PIXELS_PER_CELL x MANIFOLD_PIXELS_PER_CELL
    screen pixels (a 20x20 manifold's images then span 1120 pixels).
    """
    pixel_means = np.asarray(pixel_means)
    z_values = np.asarray(z_values, dtype=float)
    if len(pixel_means) != n_per_side ** 2:
        raise ValueError(f"expected n_per_side**2 = {n_per_side ** 2} images, "
                         f"got shape {pixel_means.shape}")
    if z_values.shape != (n_per_side,):
        raise ValueError(f"expected n_per_side = {n_per_side} z values, "
                         f"got shape {z_values.shape}")
    side = n_per_side * IMAGE_SIDE
    figure, axes = _grid_figure((side, side), MANIFOLD_PIXELS_PER_CELL, (0.8, 0.2, 0.7, 0.5))
    grid = image_grid(pixel_means, n_per_side, padding=0)
    axes.imshow(grid, cmap="binary", vmin=0, vmax=1, interpolation="nearest")
    decimals = 2 if np.abs(z_values).max() < 100 else 0
    labels = [f"{z:.{decimals}f}" for z in z_values]
    centres = np.arange(n_per_side) * IMAGE_SIDE + (IMAGE_SIDE - 1) / 2
    axes.set_xticks(centres, labels, fontsize=8)
    axes.set_yticks(centres, labels[::-1], fontsize=8)
    axes.set_xlabel("$z_1$")
    axes.set_ylabel("$z_2$")
    axes.set_title("decoded pixel means over a grid of z: each column's $z_1$ below, "
                   "each row's $z_2$ on the left", fontsize=10)
    return figure


def save_manifold(pixel_means, filename, n_per_side, z_values):
    """Write manifold_figure(pixel_means, n_per_side, z_values) as a PNG."""
    _save(manifold_figure(pixel_means, n_per_side, z_values), filename)


def save_labelled_grid(images, filename, ims_per_row, column_labels=None, row_labels=None,
                       title=None):
    """An image grid (as save_images with vmin=0, vmax=1) with a header above
    each column and a label left of each row, each image pixel drawn as 2 x 2
    screen pixels. images: (N, H*W) in [0, 1]; labels: lists of strings."""
    images = _check_images(images, DIGIT_DIMENSIONS)
    rows = -(-len(images) // ims_per_row)
    grid_shape = (rows * (IMAGE_SIDE + 5) + 5, ims_per_row * (IMAGE_SIDE + 5) + 5)
    lines = max((label.count("\n") + 1 for label in column_labels or []), default=0)
    left = 0.1 + 0.07 * max((len(label) for label in row_labels or []), default=0)
    top = 0.1 + 0.16 * lines + (0.2 + 0.15 * (title.count("\n") + 1) if title else 0)
    figure, axes = _grid_figure(grid_shape, 2,
                                (round(left, 2), 0.1, 0.1, round(top, 2)))
    _show_grid(axes, images, ims_per_row, row_labels=row_labels,
               column_labels=column_labels, title=title)
    _save(figure, filename)


def save_posterior_contours(panels, filename):
    """Contours of densities over a 2-D latent space, one panel per image.

    panels: a list of (title, axis_1 (P,), axis_2 (Q,), {name: density (P, Q)}),
    density[i, j] at (axis_1[i], axis_2[j]). In every panel the first density
    is filled, the second drawn in solid lines, the third in dashed lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(3 * len(panels), 3.4), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    styles = [None, {"colors": "tab:red", "linestyles": "solid"},
              {"colors": "tab:green", "linestyles": "dashed"}]
    for k, (title, axis_1, axis_2, densities) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        for (name, density), style in zip(densities.items(), styles):
            density = np.asarray(density).T    # rows: z_2, columns: z_1
            top = density.max()
            if style is None:   # below 5 % of the peak stays white
                axes.contourf(axis_1, axis_2, density, cmap="Greys",
                              levels=top * np.array([0.05, 0.2, 0.4, 0.6, 0.8, 1.0]))
            else:
                axes.contour(axis_1, axis_2, density, levels=top * np.array([0.1, 0.4, 0.7]),
                             linewidths=1, **style)
        axes.set_aspect("equal", adjustable="datalim")
        axes.set_xlabel("$z_1$")
        axes.set_title(title, fontsize=9)
        if k == 0:
            axes.set_ylabel("$z_2$")
        axes.tick_params(labelsize=7)
    names = list(panels[0][3])
    handles = [Line2D([], [], color="0.4", linewidth=6)] + [
        Line2D([], [], color=s["colors"], linestyle=s["linestyles"]) for s in styles[1:len(names)]]
    figure.legend(handles, names, loc="upper center", ncol=len(names), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.92))
    _save(figure, filename)


def save_correlation_maps(maps, titles, marked, filename, limit=1.0,
                          digit_dimensions=DIGIT_DIMENSIONS, title=None):
    """Maps of correlations, one panel each, red positive and blue negative
    on a colour scale from -limit to limit, with one pixel marked by a cross.

    maps: (P, H*W); titles: P strings; marked: the flat index of the pixel
    whose correlations the maps show; title: above the panels, or None.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maps = _check_images(maps, digit_dimensions)
    figure = Figure(figsize=(2.6 * len(maps) + 0.8, 2.9), dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    row, col = divmod(marked, digit_dimensions[1])
    for k, (image, panel_title) in enumerate(zip(maps, titles)):
        axes = figure.add_subplot(1, len(maps), k + 1)
        shown = axes.imshow(np.reshape(image, digit_dimensions), cmap="RdBu_r",
                             vmin=-limit, vmax=limit)
        axes.plot(col, row, marker="x", color="black", markersize=6)
        axes.set_title(panel_title, fontsize=8)
        axes.set_xticks([])
        axes.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 0.86, 1))
    figure.colorbar(shown, cax=figure.add_axes((0.88, 0.15, 0.02, 0.7)), label="correlation")
    _save(figure, filename)


def save_histogram(values, filename, title, xlabel, bins=200):
    """Histogram of values (any shape, flattened), as a density, with the 1st
    to 99th percentile range on the x axis."""
    values = np.ravel(values)
    low, high = np.percentile(values, [1, 99])
    figure, axes = _new_axes()
    axes.hist(values, bins=bins, range=(low, high), density=True, color="tab:blue")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("density")
    axes.set_title(title, fontsize=9)
    _save_figure(figure, filename)


def save_mixture(codes, digits, means, covariances, filename):
    """2-D codes coloured by digit, with each mixture component's ellipse at
    two standard deviations and a cross at its mean.

    codes: (N, 2); digits: (N,) labels 0-9; means: (K, 2); covariances: (K, 2, 2).
    """
    from matplotlib.patches import Ellipse
    figure, axes = _new_axes()
    points = axes.scatter(codes[:, 0], codes[:, 1], c=digits, cmap="tab10", vmin=-0.5,
                          vmax=NUM_CLASSES - 0.5, s=1, linewidths=0)
    figure.colorbar(points, ax=axes, ticks=range(NUM_CLASSES), label="digit")
    for mean, covariance in zip(means, covariances):
        variances, vectors = np.linalg.eigh(covariance)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        width, height = 4 * np.sqrt(variances[::-1])    # two sds each way
        axes.add_patch(Ellipse(mean, width, height, angle=angle, fill=False,
                               color="black", linewidth=1))
        axes.plot(*mean, marker="x", color="black", markersize=5)
    axes.set_aspect("equal", adjustable="datalim")
    axes.set_xlabel("code 1")
    axes.set_ylabel("code 2")
    axes.set_title("training codes and the Gaussian mixture (2 sd ellipses)", fontsize=9)
    _save_figure(figure, filename)
