import errno
import socket

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


@pytest.fixture(scope="session")
def openai_ckpt(tmp_path_factory):
    """A random ViT-B-32 state dict in OpenAI's key layout (open_clip's CLIP keeps it), values fp16-exact."""
    import open_clip

    with torch.random.fork_rng():  # seeded here without moving the global stream later tests draw from
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None)
        sd = {}
        for k, v in model.state_dict().items():
            if ".ln_" in k or k.startswith("ln_") or k.endswith("bias"):
                v = v + 0.02 * torch.randn_like(v)  # LayerNorms and biases too, so none sits at a trivial value
            sd[k] = v.half().float()
    path = tmp_path_factory.mktemp("ckpt") / "vit-b-32-openai-layout.pt"
    torch.save(sd, path)
    return path


@pytest.fixture
def connections(monkeypatch):
    """Every connection the test's code attempts, by address, each refused at once (a name lookup fails as it
    does without network; a connect to an address is refused): a test states "touched no network" or "did not
    retry" by counting attempts, never by timing how long a failure took."""
    tried = []

    def no_lookup(host, port, *args, **kwargs):
        tried.append((host, port))
        raise socket.gaierror(socket.EAI_NONAME, f"name lookup of {host} refused by the test")

    def refuse(sock, address):
        tried.append(address)
        raise ConnectionRefusedError(errno.ECONNREFUSED, f"connection to {address} refused by the test")

    def refuse_ex(sock, address):
        tried.append(address)
        return errno.ECONNREFUSED

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_ex)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # a proxy would make the hub look reachable without a probe
    return tried


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
