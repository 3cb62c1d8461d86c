"""Dev-only yardstick: CLIP_benchmark's own webdataset reader (clip-benchmark==1.6.2, which the Makefile
installs) gives the same samples, in the same order, with the same pixels as ours; skipped when it is absent."""

import pytest
import torch

from counterclip.data import get_dataset
from wds_mirror import build_mirror


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    return build_mirror(tmp_path_factory.mktemp("wds"))


def test_same_order_and_pixels_as_clip_benchmarks_own_reader(mirror):
    """CLIP_benchmark's build_wds_dataset (webdataset streaming) on the same copy."""
    builder = pytest.importorskip("clip_benchmark.datasets.builder")
    copy, _ = mirror
    ours = get_dataset("wds/mini", data_root=copy, image_size=28)
    theirs = builder.build_wds_dataset("mini", transform=ours.dataset.transform, split="test", data_dir=str(copy))
    items = list(theirs)
    assert len(items) == len(ours)
    for i, (x, y) in enumerate(items):
        xo, yo = ours.dataset[i]
        assert int(y) == yo and torch.equal(x, xo), i
    assert theirs.classes == ours.classnames
