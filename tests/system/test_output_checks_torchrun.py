"""A check that fails on one rank only fails the cell on every rank (the failure travels with the gather), so no
rank waits for a peer that stopped: torchrun ends, the other cells' records are written."""

import json
import os
import subprocess
import sys
import textwrap

BAD = '''
import os

from counterclip.defenses import Defense


class NaNOnRank1(Defense):
    """NaN logits for the last image of each batch, on rank 1 only."""

    name = "nan-on-rank1"

    def predict(self, classifier, x, generator=None):
        logits = classifier(x)
        if os.environ.get("RANK") == "1":
            logits[-1] = float("nan")
        return logits
'''


def test_a_failure_on_one_rank_fails_the_cell_everywhere_without_a_hang(tmp_path):
    (tmp_path / "bad_rank.py").write_text(textwrap.dedent(BAD))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "counterclip", "eval", "--dataset", "fashion-mnist", "--defense",
                        "none,bad_rank:NaNOnRank1", "--limit", "8", "--batch-size", "4", "--output", str(out)],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0  # each rank exits 3; torchrun reports that its workers failed
    # both ranks when it happens, and the summary; counted as occurrences, not lines: the two ranks write to one
    # pipe at the same moment and their lines can run together
    said = r.stdout.count("bad_rank:NaNOnRank1 failed the finite logits check on 1 of 4")
    assert said >= 3, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout
    recs = [json.loads(p.read_text()) for p in out.glob("fashion-mnist/*.json")]
    assert [rec["defense"]["name"] for rec in recs] == ["none"]
