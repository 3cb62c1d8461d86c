"""--precision fp16-all: the reference code's mode (clean evaluation, attacks and defense under fp16 autocast)."""

import json

import torch

from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner
from counterclip.zeroshot import ZeroShotClassifier


def _run(tmp_path, precision, monkeypatch):
    seen = []
    orig = ZeroShotClassifier.forward

    def spy(self, x):
        seen.append(torch.is_autocast_enabled(x.device.type))
        return orig(self, x)

    monkeypatch.setattr(ZeroShotClassifier, "forward", spy)
    cfg = EvalConfig(output=str(tmp_path / precision), datasets=["fashion-mnist"], attacks=["pgd"], eps=["8/255"],
                     steps=2, defenses=["none", "ttc"], limit=8, batch_size=8, probe_size=4, precision=precision)
    paths = [p for p in GridRunner(cfg, log=lambda *a: None).run() if p.suffix == ".json"]
    monkeypatch.setattr(ZeroShotClassifier, "forward", orig)
    return {json.loads(p.read_text())["defense"]["name"]: json.loads(p.read_text()) for p in paths}, seen


def test_fp16_all_runs_attacks_and_defenses_under_autocast(tmp_path, monkeypatch):
    recs, seen = _run(tmp_path, "fp16-all", monkeypatch)
    assert seen and any(seen)  # the attack's and the undefended model's forwards ran under autocast
    assert all(r["precision"] == "fp16-all" for r in recs.values())
    assert recs["ttc"]["defense"]["params"]["precision"] == "fp16"  # TTC's own passes too
    ref, seen32 = _run(tmp_path, "fp32", monkeypatch)
    assert not any(seen32) and all(r["precision"] == "fp32" for r in ref.values())
    assert ref["ttc"]["defense"]["params"]["precision"] == "fp32"
