"""Fixtures shared by every wing's tests. pytest.ini puts the project and
tests/ (the helpers: student_vae, idx_files, graded, holding, loops) on sys.path."""
import pytest


@pytest.fixture(scope="session")
def mnist():
    """The shipped MNIST, loaded once per test session (about a second)."""
    import data
    return data.load_mnist()


@pytest.fixture(scope="session")
def mnist_train_subset(mnist):
    """The first 1000 training images, float64 in [0, 1]."""
    return mnist[1][:1000]



@pytest.fixture
def idx_folder(tmp_path):
    """A valid MNIST-format folder with 7 training and 3 test images."""
    from idx_files import make_folder
    return make_folder(tmp_path)
