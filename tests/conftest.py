import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def tiny_model():
    import counterclip

    return counterclip.load_model("tiny-fmnist")


@pytest.fixture(scope="session")
def fmnist_test():
    from counterclip.data import get_dataset

    return get_dataset("fashion-mnist", split="test")


@pytest.fixture(scope="session")
def classifier(tiny_model, fmnist_test):
    from counterclip import ZeroShotClassifier

    return ZeroShotClassifier(tiny_model, fmnist_test.classnames, fmnist_test.templates)


@pytest.fixture(scope="session")
def batch(fmnist_test):
    """64 fixed test images and labels."""
    ds = fmnist_test.dataset
    idx = torch.arange(0, 640, 10)
    return ds.x[idx].clone(), ds.y[idx].clone()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): second-order
    graphs are thousands of tiny ops; with 2 threads on 2 cores shared with other jobs every op waits at a
    barrier for a descheduled thread (measured: the same 2-step attack took 1.3 s on one thread, 0.8-18 s on
    two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


KINDS = ("unit", "integration", "system", "reference")


def pytest_collection_modifyitems(config, items):
    """Each test gets the marker of the folder it lives in, so the folder is the one place that says its kind."""
    root = config.rootpath / "tests"
    for item in items:
        try:
            kind = item.path.relative_to(root).parts[0]
        except ValueError:  # a test outside tests/ (given on the command line): no folder, no kind
            continue
        if kind in KINDS:
            item.add_marker(kind)
