"""`torchrun --nproc-per-node 2 -m counterclip finetune` (gloo on CPU) gives the weights of one process at the
same global batch after the same steps, to float reduction order. One torchrun subprocess; the single-process
run is in-process."""

import os
import subprocess
import sys
from pathlib import Path

import torch

ARGS = ["finetune", "--method", "pmg-aft", "--preset", "toy", "--limit", "64", "--batch-size", "32", "--max-steps",
        "2", "--eval-limit", "0", "--seed", "3"]


def test_two_ranks_give_the_single_process_weights(tmp_path):
    from counterclip.cli import main

    assert main([*ARGS, "--output", str(tmp_path / "one")]) == 0
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "counterclip", *ARGS, "--output", str(tmp_path / "two")], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = (torch.load(str(tmp_path / d / "PMG_AFT.pth.tar"), weights_only=True) for d in ("one", "two"))
    assert two["counterclip"]["world_size"] == 2 and one["counterclip"]["world_size"] == 1
    start = __import__("counterclip").load_model().visual.state_dict()
    # the updates, not the weights, are compared: two small steps move the weights by little, so a loose weight
    # tolerance would pass for two different updates
    d1 = torch.cat([(v - start[k]).flatten() for k, v in one["vision_encoder_state_dict"].items()])
    d2 = torch.cat([(v - start[k]).flatten() for k, v in two["vision_encoder_state_dict"].items()])
    assert d1.norm() > 0 and (d1 != 0).float().mean() > 0.5
    ratio = ((d2 - d1).norm() / d1.norm()).item()
    print(f"update norm {d1.norm():.3e}, relative difference of the 2-rank update {ratio:.2e}")
    assert ratio < 1e-3
