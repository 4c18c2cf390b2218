"""Tests for plotting.py: grid layout, PNG writers, logits -> pixel means."""

import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import scipy.special

import plotting
from plotting import DIGIT_DIMENSIONS, IMAGE_SIDE

PIXELS = IMAGE_SIDE * IMAGE_SIDE
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_images(n, seed=0):
    """(n, H*W) images in [0.1, 0.9], each distinct, none equal to the padding."""
    return np.random.default_rng(seed).uniform(0.1, 0.9, size=(n, PIXELS))


def read_png(path):
    """(height, width, 4) RGBA floats in [0, 1]."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


# ---------------------------------------------------------------- image_grid

@pytest.mark.parametrize("n, per_row, padding, expected", [
    (10, 5, 5, (2 * (IMAGE_SIDE + 5) + 5, 5 * (IMAGE_SIDE + 5) + 5)),
    (11, 5, 5, (3 * (IMAGE_SIDE + 5) + 5, 5 * (IMAGE_SIDE + 5) + 5)),
    (3, 5, 0, (IMAGE_SIDE, 5 * IMAGE_SIDE)),
    (1, 1, 2, (IMAGE_SIDE + 4, IMAGE_SIDE + 4)),
    (16, 4, 1, (4 * (IMAGE_SIDE + 1) + 1, 4 * (IMAGE_SIDE + 1) + 1)),
])
def test_image_grid_shape(n, per_row, padding, expected):
    grid = plotting.image_grid(random_images(n), ims_per_row=per_row,
                               padding=padding)
    assert grid.shape == expected


@pytest.mark.parametrize("padding", [0, 3])
def test_image_grid_places_each_image_at_its_cell(padding):
    images = random_images(7)
    grid = plotting.image_grid(images, ims_per_row=3, padding=padding)
    step = IMAGE_SIDE + padding
    for k, image in enumerate(images):
        row, col = divmod(k, 3)
        top, left = padding + row * step, padding + col * step
        cell = grid[top:top + IMAGE_SIDE, left:left + IMAGE_SIDE]
        np.testing.assert_array_equal(cell, image.reshape(DIGIT_DIMENSIONS))


def test_image_grid_non_square_digits():
    images = np.arange(2 * 6, dtype=float).reshape(2, 6)  # two 2x3 images
    grid = plotting.image_grid(images, ims_per_row=2, padding=0,
                               digit_dimensions=(2, 3))
    np.testing.assert_array_equal(grid, [[0, 1, 2, 6, 7, 8],
                                         [3, 4, 5, 9, 10, 11]])


def test_image_grid_padding_and_unused_cells_hold_pad_value():
    images = random_images(7)
    padding = 4
    grid = plotting.image_grid(images, ims_per_row=3, padding=padding,
                               pad_value=-1.0)
    step = IMAGE_SIDE + padding
    is_image = np.zeros(grid.shape, dtype=bool)
    for k in range(len(images)):
        row, col = divmod(k, 3)
        top, left = padding + row * step, padding + col * step
        is_image[top:top + IMAGE_SIDE, left:left + IMAGE_SIDE] = True
    assert np.all(grid[~is_image] == -1.0)  # border, gaps, 2 unused cells
    assert np.all(grid[is_image] >= 0.1)


def test_image_grid_pad_value_defaults_to_images_min():
    images = random_images(2)
    images[1, 5] = -3.0
    grid = plotting.image_grid(images, ims_per_row=3, padding=2)
    assert grid[0, 0] == -3.0          # border
    assert grid[-1, -1] == -3.0        # unused third cell / border
    assert np.sum(grid == -3.0) == grid.size - 2 * PIXELS + 1


@pytest.mark.parametrize("shape", [(PIXELS,), (3, PIXELS - 1), (2, IMAGE_SIDE, IMAGE_SIDE), (0, PIXELS)])
def test_image_grid_rejects_wrong_shape(shape):
    with pytest.raises(ValueError, match=rf"expected images of shape \(N, {PIXELS}\)"):
        plotting.image_grid(np.zeros(shape))


# --------------------------------------------------------------- save_images

def test_save_images_writes_png_in_new_nested_folder(tmp_path):
    path = tmp_path / "a" / "b" / "grid.png"
    images = random_images(10)
    plotting.save_images(images, path, ims_per_row=5, padding=5,
                         pixels_per_cell=3)
    grid_shape = plotting.image_grid(images, ims_per_row=5, padding=5).shape
    assert read_png(path).shape == (grid_shape[0] * 3, grid_shape[1] * 3, 4)


def test_save_images_white_padding_and_black_ones(tmp_path):
    path = tmp_path / "bw.png"
    images = np.zeros((2, PIXELS))
    images[0, 0] = 1.0  # top-left pixel of the first image
    plotting.save_images(images, path, ims_per_row=2, padding=5,
                         vmin=0, vmax=1, pixels_per_cell=4)
    rgba = read_png(path)
    white, black = [1, 1, 1, 1], [0, 0, 0, 1]
    np.testing.assert_allclose(rgba[0, 0], white)          # border
    np.testing.assert_allclose(rgba[-1, -1], white)
    block = rgba[5 * 4:6 * 4, 5 * 4:6 * 4]                 # pixel 0 of image 0
    np.testing.assert_allclose(block, np.broadcast_to(black, block.shape))
    np.testing.assert_allclose(rgba[6 * 4, 6 * 4], white)  # a zero pixel


def test_save_images_padding_is_vmin_even_when_images_are_darker(tmp_path):
    path = tmp_path / "dark.png"
    images = np.full((1, PIXELS), 0.5)
    plotting.save_images(images, path, ims_per_row=1, padding=2,
                         vmin=0, vmax=1, pixels_per_cell=1)
    rgba = read_png(path)
    np.testing.assert_allclose(rgba[0, 0], [1, 1, 1, 1])
    assert rgba[2, 2, 0] < 0.9  # grey image pixel


def test_save_images_is_byte_deterministic(tmp_path):
    images = random_images(6)
    first, second = tmp_path / "1.png", tmp_path / "2.png"
    plotting.save_images(images, first)
    plotting.save_images(images, second)
    assert first.read_bytes() == second.read_bytes()


def test_save_images_rejects_wrong_shape(tmp_path):
    path = tmp_path / "never.png"
    shape = (5, IMAGE_SIDE, IMAGE_SIDE)
    with pytest.raises(ValueError, match=rf"got shape \(5, {IMAGE_SIDE}, {IMAGE_SIDE}\)"):
        plotting.save_images(np.zeros(shape), path)
    assert not path.exists()


# ----------------------------------------------------------- bernoulli_means

def test_bernoulli_means_stable_at_extreme_logits():
    logits = np.array([[-1e4, -50.0, 0.0], [50.0, 1e4, 3.0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        means = plotting.bernoulli_means(logits)
    assert means.shape == logits.shape
    assert np.all(np.isfinite(means))
    assert np.all((means >= 0) & (means <= 1))
    assert means[0, 0] == 0.0 and means[1, 1] == 1.0 and means[0, 2] == 0.5


def test_bernoulli_means_equals_expit():
    logits = np.random.default_rng(1).normal(scale=5, size=(4, PIXELS))
    np.testing.assert_array_equal(plotting.bernoulli_means(logits),
                                  scipy.special.expit(logits))


def test_bernoulli_means_keeps_float32():
    logits = np.linspace(-10, 10, 12, dtype=np.float32).reshape(3, 4)
    assert plotting.bernoulli_means(logits).dtype == np.float32


# ------------------------------------------------------- figures with axes

def write_learning_curve(path, with_test=True):
    epochs = np.arange(1, 11)
    train = -200 + 10 * np.log(epochs)
    plotting.save_learning_curve(epochs, train, train - 3 if with_test else None,
                                 path)


def write_scatter(path):
    rng = np.random.default_rng(2)
    plotting.save_latent_scatter(rng.normal(size=(10000, 2)),
                                 rng.integers(0, 10, size=10000), path)


def write_manifold(path):
    plotting.save_manifold(random_images(9), path, n_per_side=3, z_values=[-1.0, 0.0, 1.0])


@pytest.mark.parametrize("write", [
    write_learning_curve,
    lambda path: write_learning_curve(path, with_test=False),
    write_scatter,
    write_manifold,
], ids=["learning_curve", "learning_curve_no_test", "scatter", "manifold"])
def test_figure_writers_write_deterministic_png(tmp_path, write):
    first, second = tmp_path / "new" / "1.png", tmp_path / "new" / "2.png"
    write(first)
    write(second)
    assert first.stat().st_size > 0
    assert first.read_bytes()[:8] == PNG_SIGNATURE
    assert first.read_bytes() == second.read_bytes()


def test_the_manifold_s_images_fill_exactly_their_pixels_and_its_axes_name_z(tmp_path):
    z = np.array([-1.28, -0.52, 0.0, 0.52, 1.28])
    figure = plotting.manifold_figure(random_images(25), 5, z)
    axes = figure.axes[0]
    box = axes.get_window_extent()
    side = 5 * IMAGE_SIDE * plotting.MANIFOLD_PIXELS_PER_CELL   # no resampling
    assert (round(box.width), round(box.height)) == (side, side)
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("$z_1$", "$z_2$")
    centres = np.arange(5) * IMAGE_SIDE + (IMAGE_SIDE - 1) / 2
    np.testing.assert_array_equal(axes.get_xticks(), centres)
    np.testing.assert_array_equal(axes.get_yticks(), centres)
    assert [t.get_text() for t in axes.get_xticklabels()] == [
        "-1.28", "-0.52", "0.00", "0.52", "1.28"]
    # Row 0 is drawn at the top: the largest z_2 first.
    assert [t.get_text() for t in axes.get_yticklabels()] == [
        "1.28", "0.52", "0.00", "-0.52", "-1.28"]
    np.testing.assert_array_equal(axes.images[0].get_array(),
                                  plotting.image_grid(random_images(25), 5, padding=0))


def test_manifold_rejects_wrong_count(tmp_path):
    with pytest.raises(ValueError, match="n_per_side"):
        plotting.save_manifold(random_images(8), tmp_path / "m.png", n_per_side=3,
                               z_values=[0, 1, 2])
    with pytest.raises(ValueError, match="z values"):
        plotting.save_manifold(random_images(9), tmp_path / "m.png", n_per_side=3,
                               z_values=[0, 1])
    assert not (tmp_path / "m.png").exists()


def saved_figures(monkeypatch):
    """{file name: Figure} of every figure the writers save, instead of the PNGs."""
    figures = {}

    def keep(figure, filename):
        figure.canvas.draw()    # lay out as when saved
        figures[Path(filename).name] = figure
    monkeypatch.setattr(plotting, "_save", keep)
    return figures


@pytest.mark.parametrize("measure, label", [
    ("ELBO", "ELBO (nats per image, higher is better)"),
    ("reconstruction log-likelihood",
     "reconstruction log-likelihood\n(nats per image, higher is better)")])
def test_the_learning_curve_names_its_measure_and_ticks_whole_epochs(monkeypatch, measure,
                                                                     label):
    figures = saved_figures(monkeypatch)
    plotting.save_learning_curve([1, 2, 3], [-200.0, -150.0, -140.0], None, "curve.png",
                                 measure)
    axes = figures["curve.png"].axes[0]
    assert axes.get_ylabel() == label
    ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert ticks == [1, 2, 3]


def test_the_explained_figure_names_each_file_and_its_test_images():
    rng = np.random.default_rng(3)
    prior, originals, reconstructions = (rng.uniform(size=(n, PIXELS)) for n in (25, 10, 10))
    frames = {(0, 1): rng.uniform(size=(25, PIXELS)), (8, 9): rng.uniform(size=(25, PIXELS))}
    digits = np.array([7, 2, 1, 0, 4, 1, 4, 9, 8, 9])
    figure = plotting.explained_figure(prior, originals, reconstructions, frames, digits)
    recon, *panels = figure.axes
    assert recon.get_title().startswith("reconstructions.png: the first 10 test images")
    assert [t.get_text() for t in recon.get_yticklabels()] == ["data", "reconstruction"]
    assert [t.get_text() for t in recon.get_xticklabels()][:3] == ["0 (7)", "1 (2)", "2 (1)"]
    assert [a.get_title() for a in panels] == [
        "samples_from_prior.png\n25 samples z from the prior, decoded",
        "interpolation_0_1.png\ntest image 0 (a 7) \u2192 test image 1 (a 2)",
        "interpolation_8_9.png\ntest image 8 (an 8) \u2192 test image 9 (a 9)"]
    # Each panel shows the grid save_images writes (padding 5, vmin 0), unresampled.
    shown = [recon.images[0].get_array()] + [a.images[0].get_array() for a in panels]
    for grid, (images, per_row) in zip(shown, [
            (np.concatenate([originals, reconstructions]), 10), (prior, 5),
            (frames[0, 1], 5), (frames[8, 9], 5)]):
        np.testing.assert_array_equal(grid, plotting.image_grid(images, per_row, pad_value=0.0))
    figure.canvas.draw()
    for axes, grid in zip(figure.axes, shown):
        box = axes.get_window_extent()
        assert (round(box.height), round(box.width)) == tuple(2 * n for n in grid.shape)


def test_a_labelled_grid_has_its_headers_and_row_labels(monkeypatch):
    figures = saved_figures(monkeypatch)
    plotting.save_labelled_grid(random_images(6), "g.png", 3, ["a", "b\nc", "d"],
                                ["first", "second"], "title")
    axes = figures["g.png"].axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["a", "b\nc", "d"]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["first", "second"]
    assert axes.get_title() == "title"
    np.testing.assert_array_equal(axes.get_xticks(), 5 + np.arange(3) * 33 + 13.5)
    np.testing.assert_array_equal(axes.get_yticks(), 5 + np.arange(2) * 33 + 13.5)


@pytest.mark.parametrize("writer", ["grid", "figure"])
def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch, writer):
    path = tmp_path / "figure.png"

    def write():
        if writer == "grid":
            plotting.save_images(np.full((2, IMAGE_SIDE ** 2), 0.5), path)
        else:
            plotting.save_learning_curve([1, 2], [-200.0, -150.0], [-190.0, -160.0], path)
    write()
    old = path.read_bytes()

    def half_then_fail(f, *args, **kwargs):
        f.write(b"\x89PNG half")
        raise KeyboardInterrupt
    if writer == "grid":
        monkeypatch.setattr(matplotlib.image, "imsave", half_then_fail)
    else:
        from matplotlib.figure import Figure
        monkeypatch.setattr(Figure, "savefig", lambda self, f, **kwargs: half_then_fail(f))
    with pytest.raises(KeyboardInterrupt):
        write()
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
