"""Tests for data.py: the shipped MNIST copy, the IDX folder loader, errors."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

import data
from data import (DATA_DIM, FILE_NAMES, IMAGE_SIDE, NUM_CLASSES, TEST_IMAGES, TEST_LABELS,
                  TRAIN_IMAGES, TRAIN_LABELS, DataError, load_idx_folder, load_mnist)
from idx_files import (N_TEST, N_TRAIN, idx_bytes, image_bytes, label_bytes, make_folder,
                       synthetic_split, write)

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers

def load_error(folder, sha256=None):
    """Load `folder`, expecting DataError; return its message."""
    with pytest.raises(DataError) as caught:
        load_idx_folder(folder, sha256=sha256)
    return str(caught.value)


# Each breaker damages a valid folder in one way and returns
# (folder to load, file the message must name, sha256 dict to pass).

def missing_folder(folder):
    return folder / "nowhere", folder / "nowhere", None


def missing_file(folder):
    (folder / (TRAIN_LABELS + ".gz")).unlink()
    return folder, folder / (TRAIN_LABELS + ".gz"), None


def truncated_gzip(folder):
    path = folder / (TRAIN_IMAGES + ".gz")
    path.write_bytes(path.read_bytes()[:-20])
    return folder, path, None


def corrupt_gzip(folder):
    path = folder / (TEST_IMAGES + ".gz")
    path.write_bytes(b"this is plain text, not gzip data\n" * 10)
    return folder, path, None


def corrupt_deflate(folder):
    path = folder / (TRAIN_LABELS + ".gz")
    content = bytearray(path.read_bytes())
    content[10] |= 0b110  # first deflate block gets reserved type 3: zlib.error
    path.write_bytes(bytes(content))
    return folder, path, None


def empty_file(folder):
    path = write(folder, TEST_IMAGES, b"")
    return folder, path, None


def short_header(folder):
    path = write(folder, TRAIN_IMAGES, idx_bytes(0x803, [N_TRAIN, IMAGE_SIDE], b""))
    return folder, path, None


def wrong_magic(folder):
    path = write(folder, TRAIN_IMAGES, label_bytes(np.zeros(N_TRAIN, np.uint8)))
    return folder, path, None


def wrong_side(folder):
    path = write(folder, TEST_IMAGES, image_bytes(np.zeros((N_TEST, 27, 28)), rows=27))
    return folder, path, None


def truncated_data(folder):
    pixels = np.zeros((N_TRAIN - 1, IMAGE_SIDE, IMAGE_SIDE))
    path = write(folder, TRAIN_IMAGES, image_bytes(pixels, count=N_TRAIN))
    return folder, path, None


def trailing_bytes(folder):
    path = write(folder, TEST_LABELS, label_bytes([1, 2, 3]) + b"\0" * 5)
    return folder, path, None


def count_mismatch(folder):
    path = write(folder, TRAIN_LABELS, label_bytes(np.ones(N_TRAIN - 1, np.uint8)))
    return folder, path, None


def label_out_of_range(folder):
    path = write(folder, TEST_LABELS, label_bytes([0, 10, 9]))
    return folder, path, None


def wrong_digest(folder):
    return folder, folder / (TRAIN_IMAGES + ".gz"), {TRAIN_IMAGES: "0" * 64}


BREAKERS = [missing_folder, missing_file, truncated_gzip, corrupt_gzip, corrupt_deflate,
            empty_file, short_header, wrong_magic, wrong_side, truncated_data,
            trailing_bytes, count_mismatch, label_out_of_range, wrong_digest]


def broken_message(tmp_path, breaker):
    """Build a valid folder, break it, load it; return (message, culprit path)."""
    folder, culprit, sha256 = breaker(make_folder(tmp_path))
    return load_error(folder, sha256), str(culprit)


# ---------------------------------------------------------- shipped MNIST

def test_mnist_shapes(mnist):
    N, train_images, train_labels, test_images, test_labels = mnist
    assert N == 60000
    assert train_images.shape == (60000, DATA_DIM)
    assert train_labels.shape == (60000, NUM_CLASSES)
    assert test_images.shape == (10000, DATA_DIM)
    assert test_labels.shape == (10000, NUM_CLASSES)


def test_mnist_dtypes(mnist):
    _, train_images, train_labels, test_images, test_labels = mnist
    assert train_images.dtype == test_images.dtype == np.float64
    assert train_labels.dtype == test_labels.dtype == np.int64


def test_mnist_pixels_in_unit_interval(mnist):
    _, train_images, _, test_images, _ = mnist
    for images in (train_images, test_images):
        assert images.min() == 0.0 and images.max() == 1.0


def test_mnist_labels_are_one_hot(mnist):
    _, _, train_labels, _, test_labels = mnist
    for labels in (train_labels, test_labels):
        assert set(np.unique(labels)) == {0, 1}
        assert np.all(labels.sum(axis=1) == 1)


def test_mnist_train_label_counts(mnist):
    counts = mnist[2].sum(axis=0)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_mnist_test_label_counts(mnist):
    counts = mnist[4].sum(axis=0)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_mnist_first_train_labels(mnist):
    assert mnist[2][:5].argmax(axis=1).tolist() == [5, 0, 4, 1, 9]


def test_mnist_mean_train_pixel(mnist):
    assert round(mnist[1].mean() * 255, 3) == 33.318


def test_digests_constant_matches_shipped_files():
    found = {name: hashlib.sha256(gzip.decompress(
        (REPO / "datasets" / "mnist" / (name + ".gz")).read_bytes())).hexdigest()
        for name in FILE_NAMES}
    assert data.MNIST_SHA256 == found


def test_load_mnist_verifies_digests(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MNIST_DIR", make_folder(tmp_path))
    with pytest.raises(DataError) as caught:
        load_mnist()
    assert "SHA-256" in str(caught.value)


def test_shipped_folder_hint_says_git_checkout(tmp_path, monkeypatch):
    folder, _, _ = missing_file(make_folder(tmp_path))
    monkeypatch.setattr(data, "MNIST_DIR", folder.resolve())
    assert "git checkout -- datasets/mnist" in load_error(folder)


def test_save_images_is_reexported():
    from data import save_images
    assert callable(save_images)


# ------------------------------------------------------ folder loader, valid

def expected_arrays(count, seed):
    pixels, digits = synthetic_split(count, seed)
    return pixels.reshape(count, DATA_DIM) / 255.0, np.eye(NUM_CLASSES, dtype=np.int64)[digits]


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_folder_loads_synthetic_files(tmp_path, gz):
    N, train_images, train_labels, test_images, test_labels = load_idx_folder(
        make_folder(tmp_path, gz=gz))
    assert N == N_TRAIN
    want_train, want_test = expected_arrays(N_TRAIN, 0), expected_arrays(N_TEST, 1)
    np.testing.assert_array_equal(train_images, want_train[0])
    np.testing.assert_array_equal(train_labels, want_train[1])
    np.testing.assert_array_equal(test_images, want_test[0])
    np.testing.assert_array_equal(test_labels, want_test[1])


def test_folder_prefers_gz_over_raw(tmp_path):
    folder = make_folder(tmp_path)
    write(folder, TRAIN_LABELS, b"garbage that would fail to parse", gz=False)
    assert load_idx_folder(folder)[0] == N_TRAIN


def test_folder_accepts_correct_digests(tmp_path):
    folder = make_folder(tmp_path)
    digests = {name: hashlib.sha256(gzip.decompress(
        (folder / (name + ".gz")).read_bytes())).hexdigest() for name in FILE_NAMES}
    assert load_idx_folder(folder, sha256=digests)[0] == N_TRAIN


# ------------------------------------------------------------- error cases

def test_missing_folder(tmp_path):
    message, culprit = broken_message(tmp_path, missing_folder)
    assert culprit in message and "no such folder; check the folder path" in message


@pytest.mark.parametrize("breaker, problem", [
    (missing_file, "not found"),
    (truncated_gzip, "gzip data is truncated"),
    (corrupt_gzip, "not a valid gzip file"),
    (corrupt_deflate, "not a valid gzip file"),
    (empty_file, "only 0 bytes, too short"),
    (short_header, "only 12 bytes, shorter than the 16-byte"),
    (wrong_magic, "0x00000801, expected 0x00000803"),
    (wrong_side, "27x28 pixels, expected 28x28"),
    (trailing_bytes, "5 trailing bytes after the 3 bytes"),
    (label_out_of_range, "label 10 at index 1 is out of range 0..9"),
], ids=lambda value: getattr(value, "__name__", ""))
def test_error_names_the_file_and_the_problem(tmp_path, breaker, problem):
    message, culprit = broken_message(tmp_path, breaker)
    assert culprit in message and problem in message


def test_truncated_data(tmp_path):
    message, culprit = broken_message(tmp_path, truncated_data)
    assert culprit in message and "truncated" in message
    assert f"promises {N_TRAIN * DATA_DIM} bytes" in message
    assert f"found {(N_TRAIN - 1) * DATA_DIM}" in message


def test_count_mismatch(tmp_path):
    message, culprit = broken_message(tmp_path, count_mismatch)
    assert culprit in message and str(culprit).replace("labels-idx1", "images-idx3") in message
    assert f"{N_TRAIN - 1} labels" in message and f"{N_TRAIN} images" in message


def test_sha256_mismatch(tmp_path):
    message, culprit = broken_message(tmp_path, wrong_digest)
    assert culprit in message and "SHA-256" in message and "expected " + "0" * 64 in message


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda breaker: breaker.__name__)
def test_error_message_is_one_line(tmp_path, breaker):
    message, _ = broken_message(tmp_path, breaker)
    assert "\n" not in message and "\r" not in message


@pytest.mark.parametrize("breaker", [b for b in BREAKERS if b is not missing_folder],
                         ids=lambda breaker: breaker.__name__)
def test_error_message_says_what_to_do(tmp_path, breaker):
    message, _ = broken_message(tmp_path, breaker)
    assert "check that the folder holds the four MNIST-format files" in message
