"""Loading MNIST-format data sets (IDX files) for the VAE practical.

The repository ships MNIST in datasets/mnist/ as four gzipped IDX files.
`load_mnist()` reads that copy and checks it against known SHA-256 digests;
`load_idx_folder(folder)` reads any folder holding the same four file names
(for example Fashion-MNIST from Debian's dataset-fashion-mnist package).

IDX layout: a big-endian header (magic number, then one int32 per
dimension) followed by the raw uint8 data. Images have magic 0x00000803 and
dimensions (count, rows, cols); labels have magic 0x00000801 and (count,).

Every problem with the files raises `DataError` with a one-line message
naming the file, what is wrong, and what to do about it.
"""

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from plotting import IMAGE_SIDE, NUM_CLASSES
from plotting import save_images  # noqa: F401  re-exported for the course skeleton

DATA_DIM = IMAGE_SIDE ** 2

MNIST_DIR = Path(__file__).resolve().parent / "datasets" / "mnist"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Digests of the DECOMPRESSED files (from datasets/mnist/README.md).
MNIST_SHA256 = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

IMAGES_MAGIC = 0x00000803  # ubyte data, 3 dimensions
LABELS_MAGIC = 0x00000801  # ubyte data, 1 dimension


class DataError(Exception):
    """A data file is missing or malformed. The message is one line."""


def _hint(folder):
    """What the user should do about a problem with a file in `folder`."""
    if Path(folder).resolve() == MNIST_DIR:
        return "restore it with `git checkout -- datasets/mnist`"
    return ("check that the folder holds the four MNIST-format files "
            + ", ".join(FILE_NAMES) + " (each raw or gzipped as .gz)")


def _read(folder, name, sha256):
    """Read file `name` (preferring name.gz) from `folder`, verify its digest.

    Returns (path, content): the path read and its decompressed bytes.
    """
    gz_path, raw_path = folder / (name + ".gz"), folder / name
    if gz_path.is_file():
        path = gz_path
    elif raw_path.is_file():
        path = raw_path
    else:
        raise DataError(f"{gz_path}: file not found (nor {raw_path}); {_hint(folder)}")
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error}); {_hint(folder)}") from error
    if path == gz_path:
        try:
            content = gzip.decompress(content)
        except EOFError as error:
            raise DataError(f"{path}: gzip data is truncated (the stream ends before "
                            f"its end marker); {_hint(folder)}") from error
        except (OSError, zlib.error) as error:  # includes gzip.BadGzipFile
            raise DataError(f"{path}: not a valid gzip file ({error}); "
                            f"{_hint(folder)}") from error
    expected = (sha256 or {}).get(name)
    if expected is not None:
        found = hashlib.sha256(content).hexdigest()
        if found != expected:
            raise DataError(f"{path}: SHA-256 of the decompressed content is {found}, "
                            f"expected {expected}; {_hint(folder)}")
    return path, content


def _parse_idx(path, content, magic, hint):
    """Parse IDX bytes into a uint8 array.

    `magic` is IMAGES_MAGIC (result shape (count, IMAGE_SIDE, IMAGE_SIDE))
    or LABELS_MAGIC (result shape (count,)). The array is read-only: it is a
    view of `content`.
    """
    kind, ndim = ("images", 3) if magic == IMAGES_MAGIC else ("labels", 1)
    header_size = 4 + 4 * ndim
    if len(content) < 4:
        raise DataError(f"{path}: only {len(content)} bytes, too short to be an IDX "
                        f"file; {hint}")
    found_magic = int.from_bytes(content[:4], "big")
    if found_magic != magic:
        raise DataError(f"{path}: magic number is 0x{found_magic:08X}, expected "
                        f"0x{magic:08X} (IDX {kind} file); {hint}")
    if len(content) < header_size:
        raise DataError(f"{path}: only {len(content)} bytes, shorter than the "
                        f"{header_size}-byte IDX {kind} header; {hint}")
    dims = list(struct.unpack(f">{ndim}I", content[4:header_size]))
    if kind == "images" and dims[1:] != [IMAGE_SIDE, IMAGE_SIDE]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]} pixels, expected "
                        f"{IMAGE_SIDE}x{IMAGE_SIDE}; {hint}")
    expected_size = 1
    for dim in dims:
        expected_size *= dim
    found_size = len(content) - header_size
    if found_size < expected_size:
        raise DataError(f"{path}: data is truncated: the header promises "
                        f"{expected_size} bytes of {kind} data, found {found_size}; {hint}")
    if found_size > expected_size:
        raise DataError(f"{path}: {found_size - expected_size} trailing bytes after "
                        f"the {expected_size} bytes of {kind} data; {hint}")
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(dims)


def _load_split(folder, images_name, labels_name, sha256):
    """Load one split: images (count, DATA_DIM) float64 in [0, 1] and
    one-hot labels (count, NUM_CLASSES) int64."""
    hint = _hint(folder)
    images_path, content = _read(folder, images_name, sha256)
    pixels = _parse_idx(images_path, content, IMAGES_MAGIC, hint)
    labels_path, content = _read(folder, labels_name, sha256)
    digits = _parse_idx(labels_path, content, LABELS_MAGIC, hint)
    if len(digits) != len(pixels):
        raise DataError(f"{labels_path}: holds {len(digits)} labels but {images_path} "
                        f"holds {len(pixels)} images; {hint}")
    bad = np.flatnonzero(digits >= NUM_CLASSES)
    if len(bad):
        raise DataError(f"{labels_path}: label {digits[bad[0]]} at index {bad[0]} is "
                        f"out of range 0..{NUM_CLASSES - 1} ({len(bad)} bad labels); {hint}")
    images = np.divide(pixels.reshape(len(pixels), DATA_DIM), 255.0, dtype=np.float64)
    one_hot = np.eye(NUM_CLASSES, dtype=np.int64)[digits]
    return images, one_hot


def load_idx_folder(folder, sha256=None):
    """Load the four MNIST-format IDX files from `folder`.

    folder: path of a folder holding TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES
        and TEST_LABELS, each gzipped (name.gz, preferred) or raw (name).
    sha256: optional dict {file name without .gz: hex SHA-256 digest of the
        decompressed content}; files it names are verified.

    Returns (N, train_images, train_labels, test_images, test_labels):
        N: int, number of training images
        train_images: (N, DATA_DIM) float64 in [0, 1] (pixel / 255)
        train_labels: (N, NUM_CLASSES) int64, one-hot
        test_images: (N_test, DATA_DIM) float64 in [0, 1]
        test_labels: (N_test, NUM_CLASSES) int64, one-hot
    Raises DataError if a file is missing or malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        hint = (_hint(folder) if folder.resolve() == MNIST_DIR
                else "check the folder path (e.g. the --data-dir argument)")
        raise DataError(f"{folder}: no such folder; {hint}")
    train_images, train_labels = _load_split(folder, TRAIN_IMAGES, TRAIN_LABELS, sha256)
    test_images, test_labels = _load_split(folder, TEST_IMAGES, TEST_LABELS, sha256)
    return len(train_images), train_images, train_labels, test_images, test_labels


def load_mnist():
    """Load the MNIST copy shipped in datasets/mnist/, verifying its digests.

    Returns (N, train_images, train_labels, test_images, test_labels) with
    N = 60000, images (60000, DATA_DIM) and (10000, DATA_DIM) float64 in
    [0, 1], labels (60000, NUM_CLASSES) and (10000, NUM_CLASSES) int64 one-hot.
    """
    return load_idx_folder(MNIST_DIR, sha256=MNIST_SHA256)


def load_data(data_dir=None):
    """load_mnist() if data_dir is None, else load_idx_folder(data_dir)."""
    return load_mnist() if data_dir is None else load_idx_folder(data_dir)
