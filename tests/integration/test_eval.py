"""The eval grid: record schema, adversarial cache reuse, invariance to batch size, resume, sanity verdicts."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from counterclip.attacks.pgd import PGD, auto_step_size
from counterclip.cli import main
from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner

BASE = dict(datasets=["fashion-mnist"], attacks=["none", "pgd"], eps=["4/255", "8/255"], steps=3,
            defenses=["none", "rn", "ttc"], limit=24, batch_size=8, seed=0, probe_size=8)


def run(tmp, **over):
    cfg = EvalConfig(output=str(tmp), **{**BASE, **over})
    return GridRunner(cfg, log=lambda *a: None).run()


def records(out: Path):
    recs = {}
    for p in sorted(out.rglob("*.json")):
        if ".state" in p.parts:
            continue
        r = json.loads(p.read_text())
        if "metrics" in r:
            key = (r["attack"]["name"], r["attack"]["eps_str"], r["defense"]["name"], r["threat_model"])
            recs[key] = (r, dict(np.load(p.with_suffix(".npz"))))
    return recs


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("grid")
    calls = []
    orig = PGD.perturb

    def counting(self, classifier, x, y, generator):
        calls.append(len(x))
        return orig(self, classifier, x, y, generator)

    PGD.perturb = counting
    try:
        run(out)
    finally:
        PGD.perturb = orig
    return out, calls


def test_records_schema(grid):
    out, _ = grid
    recs = records(out)
    assert len(recs) == 3 + 2 * 3  # none x 3 defenses + pgd x 2 eps x 3 defenses
    r, side = recs[("pgd", "4/255", "ttc", "oblivious")]
    for k in ("model", "pretrained", "dataset", "attack", "defense", "threat_model", "metrics", "seed", "time_s",
              "versions", "sanity"):
        assert k in r
    assert r["dataset"] == "fashion-mnist" and r["model"] == "tiny-fmnist"
    assert r["attack"]["eps"] == pytest.approx(4 / 255) and r["attack"]["eps_str"] == "4/255"
    assert r["attack"]["steps"] == 3 and r["attack"]["step_size"] == pytest.approx(auto_step_size(4 / 255, 3))
    assert r["defense"]["name"] == "ttc" and r["defense"]["params"]["tau_thres"] == 0.2
    m = r["metrics"]
    assert m["n_samples"] == 24 and 0 <= m["robust_acc"] <= 1 and len(m["robust_acc_ci95"]) == 2
    assert m["robust_acc"] == pytest.approx(side["robust_correct"].mean())
    assert m["clean_acc"] == pytest.approx(side["clean_correct"].mean())
    assert set(side) >= {"index", "label", "clean_correct", "robust_correct", "clean_tau", "adv_tau"}
    assert np.isfinite(side["clean_tau"]).all() and np.isfinite(side["adv_tau"]).all()
    # run state never passes for a record: the record readers find exactly the nine records, none under .state
    from counterclip.report.benchmark import collect

    found = sorted(Path(row["path"]).relative_to(out).as_posix() for row in collect([out]))
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json") if ".state" not in p.parts)
    assert found == written and len(found) == len(recs)


def test_adversarial_examples_made_once_per_attack_config(grid):
    out, calls = grid
    # 2 budgets x 3 chunks of 8, shared by 3 defenses; probes (8 images) add the eps=0 and half-steps checks
    main_calls = [c for c in calls if c == 8]
    assert sum(calls) == 24 * 2 + 8 * (1 + 2 * 2)  # attacks + probes: eps0 once, (half, full) per budget
    assert len(main_calls) == len(calls)


def test_finished_cells_are_not_recomputed(grid, monkeypatch):
    out, _ = grid
    before = records(out)

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(PGD, "perturb", boom)
    run(out)
    after = records(out)
    assert before.keys() == after.keys()
    for k in before:
        assert before[k][0]["metrics"] == after[k][0]["metrics"]


def test_numbers_do_not_depend_on_batch_size(grid, tmp_path):
    out, _ = grid
    run(tmp_path, batch_size=5, attacks=["pgd"], eps=["4/255"])
    a = records(out)[("pgd", "4/255", "ttc", "oblivious")][1]
    b = records(tmp_path)[("pgd", "4/255", "ttc", "oblivious")][1]
    for k in ("index", "robust_correct", "clean_correct"):
        assert np.array_equal(a[k], b[k])
    assert np.allclose(a["adv_tau"], b["adv_tau"], atol=1e-6)


def test_sanity_verdicts(grid):
    recs = records(grid[0])
    r = recs[("pgd", "8/255", "none", "oblivious")][0]
    s = r["sanity"]
    assert s["eps_zero"]["passed"] is True
    assert s["gradients"]["passed"] is True
    assert "collapse" in s and "steps_monotone" in s and "eps_monotone" in s
    ttc = recs[("pgd", "4/255", "ttc", "oblivious")][0]["sanity"]
    assert "randomised" in ttc["randomness"]["detail"] and "dynamic" in ttc["randomness"]["detail"]


def test_resume_from_partial_state_gives_identical_numbers(grid, tmp_path):
    """Delete records and part of the chunk files (as a kill mid-run leaves things), re-run: same numbers."""
    out, _ = grid
    import shutil

    shutil.copytree(out, tmp_path / "run")
    run_dir = tmp_path / "run"
    for p in run_dir.glob("fashion-mnist/*"):
        p.unlink()
    chunks = sorted((run_dir / ".state").rglob("*.pt"))
    for p in chunks[::2]:
        p.unlink()
    run(run_dir)
    a, b = records(out), records(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k][1]["robust_correct"], b[k][1]["robust_correct"]), k


def test_missing_dataset_is_one_clear_line(tmp_path, capsys):
    rc = main(["eval", "--dataset", "cifar10", "--data-root", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert str(tmp_path) in err[0] and "--download" in err[0]


def test_unknown_defense_lists_valid_ones(tmp_path, capsys):
    rc = main(["eval", "--dataset", "fashion-mnist", "--defense", "nope", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "ttc" in err and "anti-adversary" in err


def test_report_from_eval_run(grid, tmp_path):
    from counterclip.report import build_report

    written = build_report(grid[0], tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "fashion-mnist" in md and "ttc" in md
    assert (tmp_path / "results.csv").is_file()
    assert any(str(k).endswith(".png") for k in written)


def test_adaptive_threat_model_records(tmp_path):
    run(tmp_path, attacks=["pgd"], eps=["8/255"], steps=2, defenses=["none", "ttc"], tau_thres="auto", limit=8,
        threat_model="both", eot_samples=2)
    recs = records(tmp_path)
    adaptive = {k[0]: v for k, v in recs.items() if k[3] == "adaptive"}
    assert set(adaptive) == {"eot-pgd", "bpda-pgd", "tau-aware"}  # the ones that apply to TTC, one record each
    for name, (r, side) in adaptive.items():
        assert r["adaptive_attack"]["name"] == name and r["defense"]["name"] == "ttc"
        assert r["defense"]["params"]["tau_thres_mode"] == "auto" and r["defense"]["params"]["calibration"]["n"] > 0
        assert "adaptive_le_oblivious" in r["sanity"] and "gradients" in r["sanity"]
        assert len(side["robust_correct"]) == 8
    assert adaptive["eot-pgd"][0]["adaptive_attack"]["eot_samples"] == 2
    assert ("pgd", "8/255", "none", "adaptive") not in recs  # nothing to adapt to


def test_cache_keys_cover_data_root_weights_and_tau_budget(tmp_path):
    """Two image folders, two tau budgets, or changed weights must never share cached results."""
    import shutil

    from PIL import Image

    from counterclip.errors import UnknownNameError
    from counterclip.evaluation.grid import weights_fingerprint
    from counterclip.models.registry import embedded_dir

    rng = np.random.default_rng(0)
    for root in ("a", "b"):
        for cls in ("cat", "dog"):
            d = tmp_path / root / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(d / f"{i}.png")
    out = tmp_path / "out"
    for root in ("a", "b"):
        run(out, datasets=["imagefolder"], data_root=str(tmp_path / root), attacks=["none"], defenses=["none"],
            limit=None)
    assert len(list((out / "imagefolder").glob("*.json"))) == 2
    for tau_eps in ("4/255", "1/255"):
        run(out, attacks=["none"], defenses=["none"], ttc_eps=tau_eps, limit=8)
    assert len(list((out / ".state" / "fashion-mnist").glob("clean-*"))) == 2

    copy = tmp_path / "model"
    shutil.copytree(embedded_dir("tiny-fmnist"), copy)
    before = weights_fingerprint(f"local-dir:{copy}", None)
    assert before == weights_fingerprint("tiny-fmnist", None)
    w = copy / "open_clip_model.safetensors"
    w.write_bytes(w.read_bytes()[:-2] + b"\x00\x01")
    assert weights_fingerprint(f"local-dir:{copy}", None) != before

    with pytest.raises(UnknownNameError, match="tau-aware"):
        EvalConfig(output=str(tmp_path), adaptive_attacks=["foo"], threat_model="both").validate()
    with pytest.raises(ValueError, match="tau-thres"):
        EvalConfig(output=str(tmp_path), tau_thres="nan").validate()
