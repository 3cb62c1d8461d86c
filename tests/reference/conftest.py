import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def autoattack_source():
    """The AutoAttack package from its own source (fra31/auto-attack): a checkout named by
    COUNTERCLIP_AUTOATTACK_SRC, else an installed copy; the test is skipped when neither is there."""
    src = os.environ.get("COUNTERCLIP_AUTOATTACK_SRC")
    if src and src not in sys.path:
        sys.path.insert(0, src)
    return pytest.importorskip("autoattack", reason="AutoAttack source absent (set COUNTERCLIP_AUTOATTACK_SRC)")


@pytest.fixture(scope="session")
def reference_snapshot():
    """A clone of the reference TTC repository (Sxing2/CLIP-Test-time-Counterattacks) named by
    COUNTERCLIP_REFERENCE_REPO, else None. Never a default path: one would exist on one machine only. A name
    that is not a folder fails rather than skips, so a mistyped path cannot pass as "not installed"."""
    path = os.environ.get("COUNTERCLIP_REFERENCE_REPO")
    if not path:
        return None
    if not Path(path).is_dir():
        pytest.fail(f"COUNTERCLIP_REFERENCE_REPO={path} is not a folder")
    return Path(path)


@pytest.fixture
def reference_repo(reference_snapshot):
    """The reference repository's snapshot; the test is skipped without one."""
    if reference_snapshot is None:
        pytest.skip("no snapshot of the reference repository (set COUNTERCLIP_REFERENCE_REPO to a clone)")
    return reference_snapshot
