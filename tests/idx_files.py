"""Writers of small MNIST-format (IDX) files for the tests."""
import gzip
import struct

import numpy as np

from data import IMAGE_SIDE, NUM_CLASSES, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS

N_TRAIN, N_TEST = 7, 3


def idx_bytes(magic, dims, payload):
    """IDX file content: big-endian magic, one uint32 per dim, raw bytes."""
    return struct.pack(f">{1 + len(dims)}I", magic, *dims) + bytes(payload)


def image_bytes(pixels, rows=IMAGE_SIDE, cols=IMAGE_SIDE, count=None):
    """IDX images file for a uint8 array of pixels; header dims overridable."""
    count = len(pixels) if count is None else count
    return idx_bytes(0x803, [count, rows, cols], np.asarray(pixels, np.uint8).tobytes())


def label_bytes(digits):
    return idx_bytes(0x801, [len(digits)], np.asarray(digits, np.uint8).tobytes())


def synthetic_split(count, seed):
    """Deterministic (pixels (count, 28, 28) uint8, digits (count,) uint8)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(count, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    digits = (np.arange(count) * 3 % NUM_CLASSES).astype(np.uint8)
    return pixels, digits


def make_folder(root, gz=True):
    """Write a valid 7-train / 3-test MNIST-format folder; return its path."""
    folder = root / "idx"
    folder.mkdir()
    train, test = synthetic_split(N_TRAIN, 0), synthetic_split(N_TEST, 1)
    contents = {TRAIN_IMAGES: image_bytes(train[0]), TRAIN_LABELS: label_bytes(train[1]),
                TEST_IMAGES: image_bytes(test[0]), TEST_LABELS: label_bytes(test[1])}
    for name, content in contents.items():
        write(folder, name, content, gz)
    return folder


def write(folder, name, content, gz=True):
    """Write `content` as folder/name.gz (gzipped) or folder/name (raw)."""
    path = folder / (name + ".gz" if gz else name)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path
