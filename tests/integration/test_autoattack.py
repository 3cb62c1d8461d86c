"""APGD-T, Square and AutoAttack (standard / plus / rand / paper = aa-paper): contract, seeding, the per-sample
guarantee of the composition, class-count handling, the black-box-beats-white-box flag, and the grid's
--eval-draws and stage records. Dev-only yardsticks (torchattacks, the AutoAttack source):
tests/reference/test_autoattack_source.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import counterclip
from counterclip.attacks import build_attack
from counterclip.attacks.apgd import APGD, APGDT
from counterclip.attacks.autoattack import AutoAttack
from counterclip.attacks.fab import FAB, project_linf
from counterclip.attacks.square import Square, p_selection
from counterclip.defenses import Defense
from counterclip.evaluation import sanity

from helpers import EPS, gens, wrong  # noqa: E402


class Counting(nn.Module):
    """Counts the images a classifier is asked to classify, and keeps the last predictions."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.num_classes, self.seen = inner, inner.num_classes, 0

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)


class Quantised(nn.Module):
    """A gradient-masked model: the forward pass rounds the input to 16 levels, with no straight-through
    gradient (round's derivative is 0 everywhere)."""

    def __init__(self, inner, levels: int = 16):
        super().__init__()
        self.inner, self.levels, self.num_classes = inner, levels, inner.num_classes

    def forward(self, x):
        return self.inner(torch.round(x * self.levels) / self.levels)


@pytest.mark.slow
def test_apgd_t_contract_and_seeding(classifier, batch):
    x, y = batch[0][:8], batch[1][:8]
    atk = APGDT(8 / 255, steps=4, n_target_classes=3)
    a = atk(classifier, x, y, gens(range(8), "t"))
    assert torch.equal(a, atk(classifier, x, y, gens(range(8), "t")))
    assert a.min() >= 0 and a.max() <= 1 and (a - x).abs().max() <= 8 / 255 + 1e-6
    # per-sample generators: a sample's result does not depend on the rest of the batch
    assert torch.equal(atk(classifier, x[3:5], y[3:5], gens(range(3, 5), "t")), a[3:5])
    assert wrong(classifier, a, y).sum() >= wrong(classifier, x, y).sum()
    assert build_attack("apgd-t", EPS).config()["n_target_classes"] == 9
    binary = counterclip.ZeroShotClassifier(classifier.model, classifier.classnames[:3], classifier.templates)
    with pytest.raises(ValueError, match="at least 4 classes"):
        APGDT(EPS, steps=2)(binary, x, y % 3)


def test_square_contract_budget_and_seeding(classifier, batch):
    x, y = batch[0][:8], batch[1][:8]
    model = Counting(classifier)
    atk = Square(8 / 255, queries=30)
    a = atk(model, x, y, gens(range(8), "sq"))
    assert a.min() >= 0 and a.max() <= 1 and (a - x).abs().max() <= 8 / 255 + 1e-6
    assert model.seen <= 8 * 31  # one initial query, then at most `queries` per sample, fooled samples stop
    assert torch.equal(atk(classifier, x, y, gens(range(8), "sq")), a)
    assert torch.equal(atk(classifier, x[2:4], y[2:4], gens(range(2, 4), "sq")), a[2:4])
    assert not any(p.grad is not None for p in classifier.parameters())
    assert p_selection(0.8, 0, 5000, False) == 0.8 and p_selection(0.8, 11, 5000, False) == 0.4
    assert p_selection(0.8, 600, 1000, True) == 0.8 / 128  # rescaled: 600 of 1000 is 6000 of 10000


def test_fab_projection_is_the_smallest_linf_step_onto_the_hyperplane():
    g = torch.Generator().manual_seed(0)
    p, w = torch.rand(40, 30, generator=g), torch.randn(40, 30, generator=g)
    b = (w * p).sum(1) + 0.3 * torch.randn(40, generator=g)
    d = project_linf(p, w, b)
    assert ((w * (p + d)).sum(1) - b).abs().max() < 1e-4 and (p + d).min() >= 0 and (p + d).max() <= 1
    # minimality: no smaller L-inf step reaches the hyperplane (bisection on the step size)
    c = b - (w * p).sum(1)
    room = torch.where(torch.sign(w) * torch.sign(c)[:, None] > 0, 1 - p, p)
    lo, hi = torch.zeros(40), torch.ones(40)
    for _ in range(50):
        mid = (lo + hi) / 2
        short = (w.abs() * torch.minimum(room, mid[:, None])).sum(1) < c.abs()
        lo, hi = torch.where(short, mid, lo), torch.where(short, hi, mid)
    assert torch.allclose(d.abs().amax(1), hi, atol=1e-5)


@pytest.mark.slow
def test_fab_contract(classifier, batch):
    x, y = batch[0][:8], batch[1][:8]
    for targeted in (True, False):
        atk = FAB(8 / 255, steps=4, targeted=targeted, n_target_classes=2)
        a = atk(classifier, x, y)  # one restart: no random draw at all
        assert torch.equal(a, atk(classifier, x, y)) and (a - x).abs().max() <= 8 / 255 + 1e-6
        fooled = wrong(classifier, a, y) & ~wrong(classifier, x, y)
        assert torch.equal(a[~fooled], x[~fooled])  # unfooled samples come back clean, as in AutoAttack
        assert fooled.any()
    assert build_attack("fab-t", EPS).config()["targeted"] is True
    assert torch.equal(FAB(0, steps=3, targeted=True)(classifier, x, y), x)


@pytest.mark.slow
def test_autoattack_never_weaker_than_its_components(classifier, batch):
    """Done-when: the composition is never above any component per sample (components reuse their streams)."""
    x, y = batch[0][:24], batch[1][:24]
    idx = range(24)
    aa = AutoAttack(EPS, version="standard", steps=4, queries=25, n_target_classes=2)
    names = aa.component_names(classifier.num_classes)
    assert names == ["apgd-ce", "apgd-t", "fab-t", "square"]
    x_aa = aa(classifier, x, y, {n: gens(idx, f"attack:{n}") for n in names + ["clean"]})
    w_aa = wrong(classifier, x_aa, y)
    assert (x_aa - x).abs().max() <= EPS + 1e-6
    for n in names:
        w = wrong(classifier, aa.build(n)(classifier, x, y, gens(idx, f"attack:{n}")), y)
        assert not (w & ~w_aa).any(), n
    # stages: non-increasing, the last one is the final accuracy, broken_by names the breaking stage
    st = list(aa.last_stages.values())
    assert st == sorted(st, reverse=True) and st[-1] == pytest.approx(1 - w_aa.float().mean().item())
    assert torch.equal(aa.last_broken_by < len(names), w_aa)


@pytest.mark.slow
def test_aa_paper_is_autoattack_paper_and_two_classes_never_abort(classifier, batch):
    x, y = batch[0][:8], batch[1][:8]
    paper, alias = build_attack("autoattack", EPS, aa_version="paper", aa_steps=3), build_attack("aa-paper", EPS, aa_steps=3)
    assert paper.component_names(10) == alias.component_names(10) == ["apgd-ce", "apgd-dlr"]
    assert build_attack("aa-paper", EPS).config()["steps"] == 100
    g = lambda: {n: gens(range(8), n) for n in ("apgd-ce", "apgd-dlr", "clean")}  # noqa: E731
    assert torch.equal(paper(classifier, x, y, g()), alias(classifier, x, y, g()))
    # per-sample worst case of APGD-CE and APGD-DLR, never above either alone
    w = wrong(classifier, alias(classifier, x, y, g()), y)
    for loss in ("ce", "dlr"):
        assert not (wrong(classifier, APGD(EPS, steps=3, loss=loss)(classifier, x, y, g()[f"apgd-{loss}"]), y) & ~w).any()
    # a binary task: the DLR and targeted parts are dropped (as AutoAttack does), APGD-CE runs
    binary = counterclip.ZeroShotClassifier(classifier.model, classifier.classnames[:2], classifier.templates)
    for version in ("paper", "standard"):
        aa = AutoAttack(EPS, version=version, steps=2, queries=5)
        out = aa(binary, x, y % 2)
        assert out.shape == x.shape and "apgd-dlr" not in aa.component_names(2) and "apgd-t" not in aa.dropped[:0]
        assert aa.component_names(2)[0] == "apgd-ce"


def test_a_version_with_an_linf_only_component_refuses_l2_when_built():
    with pytest.raises(ValueError, match="L-inf"):  # FAB-T and Square: before APGD has run, not after
        AutoAttack(0.5, norm="l2")
    assert AutoAttack(0.5, version="paper", norm="l2").norm == "l2"  # APGD only: L2 is fine


def test_rand_version_uses_eot_on_a_randomised_defense(classifier, batch):
    from counterclip.defenses import Defended, build_defense

    x, y = batch[0][:4], batch[1][:4]
    aa = AutoAttack(EPS, version="rand", steps=2, eot_iter=3, judge_draws=3)
    assert aa.build("apgd-ce").eot_iter == 3 and aa.config()["eot_iter"] == 3
    rn = Defended(build_defense("rn", eps="4/255"), classifier, differentiable="full")
    g = lambda: {n: gens(range(4), n) for n in ("apgd-ce", "apgd-dlr", "clean")}  # noqa: E731
    a = aa(rn, x, y, g())
    assert torch.equal(a, aa(rn, x, y, g()))  # every draw of the defense is seeded from the attacker's streams
    assert aa.build("apgd-ce").draws_for(rn) == 3 and aa.build("apgd-ce").draws_for(classifier) == 1


@pytest.mark.slow
def test_black_box_beats_white_box_flag(classifier, batch):
    """Done-when: a model whose forward quantises its input (no straight-through gradient) fires the flag; the
    honest model does not."""
    x, y = batch[0][:32], batch[1][:32]
    g = lambda: {n: gens(range(32), n) for n in ("apgd-ce", "apgd-t", "fab-t", "square", "clean")}  # noqa: E731
    verdicts = {}
    for name, model in (("masked", Quantised(classifier)), ("honest", classifier)):
        aa = AutoAttack(8 / 255, version="standard", steps=5, queries=200, n_target_classes=2)
        aa(model, x, y, g())
        st = aa.last_stages
        verdicts[name] = sanity.black_box_vs_white_box(st["square"], st["fab-t"], 32, "stages")
    assert verdicts["masked"]["passed"] is False and "masked" in verdicts["masked"]["detail"]
    assert verdicts["honest"]["passed"] is True
    grad_masked = torch.zeros(4, 1, 28, 28)
    assert sanity.zero_gradients(grad_masked, "x")["passed"] is False
    assert sanity.output_range(torch.softmax(torch.randn(4, 10), -1))["passed"] is False
    assert sanity.output_range(torch.randn(4, 10) * 5)["passed"] is True


@pytest.mark.slow
def test_grid_autoattack_records_stages_and_eval_draws(tmp_path):
    """The grid: autoattack's record holds the stages and the sidecar who broke each sample; --eval-draws adds
    per-draw and all-draws accuracies (all-draws <= single draw); the rand version runs adaptive with EOT."""
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    lines = []
    cfg = EvalConfig(output=str(tmp_path), datasets=["fashion-mnist"], attacks=["autoattack"], eps=["8/255"],
                     defenses=["none", "rn"], limit=12, batch_size=6, probe_size=4, aa_version="rand", aa_steps=2,
                     square_queries=5, eval_draws=5, threat_model="adaptive", eot_samples=2,
                     adaptive_attacks=["eot-pgd"])
    GridRunner(cfg, log=lines.append).run()
    recs = {}
    for p in sorted((tmp_path / "fashion-mnist").glob("*.json")):
        r = json.loads(p.read_text())
        name = r["adaptive_attack"]["name"] if r.get("adaptive_attack") else r["attack"]["name"]
        recs[(name, r["defense"]["name"], r["threat_model"])] = (r, dict(np.load(p.with_suffix(".npz"))))
    r, side = recs[("autoattack", "none", "oblivious")]
    st = r["autoattack"]["robust_accuracy_dict"]
    assert list(st) == ["clean", "apgd-ce", "apgd-dlr"] and r["autoattack"]["version"] == "rand"
    assert set(side["broken_by"].tolist()) <= {"", "clean", "apgd-ce", "apgd-dlr"}
    assert np.array_equal(side["broken_by"] == "clean", ~side["clean_correct"])
    for key in (("autoattack", "none", "oblivious"), ("autoattack-full", "rn", "adaptive"),
                ("autoattack-bpda", "rn", "adaptive")):
        r, side = recs[key]
        m = r["metrics"]
        assert m["eval_draws"] == 5 and len(m["robust_acc_draws"]) == 5
        assert m["robust_acc_draws"][0] == m["robust_acc"]  # draw 0 is the record's usual number
        assert m["robust_acc_all_draws"] <= m["robust_acc"]
        assert side["robust_correct_draws"].shape == (12, 5)
        assert r["sanity"]["randomized"]["fired"] is (key[1] == "rn")
    assert recs[("autoattack-full", "rn", "adaptive")][0]["autoattack"]["components"] == ["apgd-ce", "apgd-dlr"]
    assert any("randomized" in line and "all 5 draws" in line for line in lines)
    from counterclip.report import build_report

    build_report(str(tmp_path))
    md = (tmp_path / "results.md").read_text()
    assert "## Randomised defenses: re-drawn evaluation" in md and "## AutoAttack stages" in md


@pytest.mark.slow
def test_eval_draws_on_a_folder_run_without_them_gives_the_draws(tmp_path):
    """Re-running a finished folder with --eval-draws 3 must not hand back the single-draw records (nor adaptive
    chunks without draws) as the answer: every record then carries the 3 draws, and the summary line says so."""
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    base = dict(output=str(tmp_path), datasets=["fashion-mnist"], attacks=["pgd"], eps=["8/255"], steps=2,
                defenses=["rn"], limit=6, batch_size=6, probe_size=2, threat_model="both", eot_samples=1,
                adaptive_attacks=["eot-pgd"])
    GridRunner(EvalConfig(**base), log=lambda s: None).run()
    lines = []
    GridRunner(EvalConfig(**base, eval_draws=3), log=lines.append).run()
    recs = [json.loads(p.read_text()) for p in (tmp_path / "fashion-mnist").glob("*.json")]
    again = [r for r in recs if r["metrics"].get("eval_draws") == 3]
    assert len(recs) == 4 and len(again) == 2  # the single-draw records stay, the new ones beside them
    assert {r["threat_model"] for r in again} == {"oblivious", "adaptive"}
    rows = [line for line in lines if " rn " in line]
    assert len(rows) == 2 and all("all 3 draws" in line for line in rows)


def test_square_listed_first_is_still_compared_with_the_white_box_attacks(tmp_path):
    """--attack square,pgd: Square's black-box-vs-white-box check needs PGD's result on the same samples, so the
    order the attacks are listed in must not turn the check into 'no white-box result'."""
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    cfg = EvalConfig(output=str(tmp_path), datasets=["fashion-mnist"], attacks=["square", "pgd"], eps=["8/255"],
                     steps=2, square_queries=10, defenses=["none"], limit=6, batch_size=6, probe_size=2)
    GridRunner(cfg, log=lambda s: None).run()
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "fashion-mnist").glob("square_*.json")]
    check = rec["sanity"]["black_box_beats_white_box"]
    assert check["passed"] is not None and "best white-box" in check["detail"]


def test_eval_draws_are_fresh_draws_and_all_draws_counts_every_one(tmp_path):
    """The R draws are R different draws of the defense's randomness (not one draw repeated), and the all-draws
    accuracy counts a sample robust only when every draw classifies it correctly."""
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    cfg = EvalConfig(output=str(tmp_path), datasets=["fashion-mnist"], attacks=["pgd"], eps=["4/255"], steps=1,
                     defenses=["rn"], ttc_eps="48/255", limit=16, batch_size=16, probe_size=2, eval_draws=4)
    GridRunner(cfg, log=lambda s: None).run()
    (p,) = (tmp_path / "fashion-mnist").glob("pgd_*.json")
    m = json.loads(p.read_text())["metrics"]
    draws = np.load(p.with_suffix(".npz"))["robust_correct_draws"]
    assert draws.shape == (16, 4)
    assert any(not np.array_equal(draws[:, 0], draws[:, k]) for k in range(1, 4))  # noise this large flips some
    assert m["robust_acc_draws"] == [float(v) / 16 for v in draws.sum(0)]
    assert m["robust_acc_all_draws"] == float(draws.all(1).sum()) / 16 <= min(m["robust_acc_draws"])


def test_judge_draws_is_part_of_every_versions_key():
    """--attack-arg autoattack.judge_draws=5 changes how a randomised defense is judged in every version, so it
    must change the configuration (records and cells are keyed by it); the default keeps the keys it had."""
    for version in ("standard", "plus", "paper", "rand"):
        default, five = AutoAttack(EPS, version=version), AutoAttack(EPS, version=version, judge_draws=5)
        assert default.config() != five.config() and five.config()["judge_draws"] == 5
    assert "judge_draws" not in AutoAttack(EPS, version="standard").config()
    from counterclip.attacks.pgd import PGD  # likewise --attack-arg pgd.random_start=false

    assert PGD(EPS).config() != PGD(EPS, random_start=False).config() and "random_start" not in PGD(EPS).config()


def test_attack_args_reach_autoattack_and_bad_values_fail_up_front(tmp_path):
    """--attack-arg autoattack.steps / .version (listed as valid) set AutoAttack's own iterations and version
    (steps was taken as the grid's --steps and silently ignored; version failed mid-run on a duplicate keyword);
    a bad value fails before any cell runs, naming the argument."""
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    cfg = EvalConfig(output=str(tmp_path), datasets=["fashion-mnist"], attacks=["autoattack"], eps=["4/255"],
                     defenses=["none"], limit=2, batch_size=2, probe_size=2, aa_steps=7,
                     attack_args={"autoattack": {"steps": 1, "version": "paper"}}).validate()
    atk = GridRunner(cfg, log=lambda s: None).attack_for("autoattack", EPS)
    assert (atk.steps, atk.version) == (1, "paper")
    with pytest.raises(ValueError, match="square.queries='abc'"):
        EvalConfig(output=str(tmp_path), attacks=["square"], attack_args={"square": {"queries": "abc"}}).validate()


def test_the_paper_presets_run_config_reaches_the_run(tmp_path):
    """`eval --preset paper`, shrunk to the embedded model, a 10-image EuroSAT tree and one-step attacks: the
    records show that the preset's attacks, budgets (aa-paper at 4/255 only), step size, image pipeline and
    prompt style are what ran."""
    from PIL import Image

    from counterclip.cli import main
    from counterclip.data import paper

    for i, c in enumerate(paper.load_metadata("eurosat")["raw_classes"]):
        (tmp_path / "eurosat" / "2750" / c).mkdir(parents=True)
        Image.new("RGB", (64, 48), (25 * i, 255 - 25 * i, 128)).save(tmp_path / "eurosat" / "2750" / c / "a.jpg")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="allow-partial"):
        assert main(["eval", "--preset", "paper", "--model", "tiny-fmnist", "--dataset", "eurosat", "--data-root",
                     str(tmp_path), "--allow-partial", "--defense", "none", "--steps", "1", "--aa-steps", "1",
                     "--limit", "4", "--batch-size", "4", "--output", str(out)]) == 0
    recs = [json.loads(p.read_text()) for p in (out / "eurosat").glob("*.json")]
    ran = sorted((r["attack"]["name"], r["attack"]["eps_str"]) for r in recs)
    assert ran == [("aa-paper", "4/255"), ("cw", "1/255"), ("cw", "4/255"), ("pgd", "1/255"), ("pgd", "4/255")]
    assert {r["attack"].get("step_size_str") for r in recs if r["attack"]["name"] != "aa-paper"} == {"1/255"}
    assert [r["attack"]["components"] for r in recs if r["attack"]["name"] == "aa-paper"] == [["apgd-ce", "apgd-dlr"]]
    assert {(r["preprocess"], r["prompts"]) for r in recs} == {("Resize(256)+CenterCrop(224)", "reference")}


# ---- dev-only yardsticks ------------------------------------------------------------------------------------

def test_a_two_class_dataset_never_aborts_the_grid(tmp_path, fmnist_test):
    """apgd-dlr / apgd-t alone are skipped with one line on a 2-class task; aa-paper runs APGD-CE only."""
    from PIL import Image

    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.grid import GridRunner

    root = tmp_path / "data"
    for cls, label in (("trouser", 1), ("sneaker", 7)):
        (root / cls).mkdir(parents=True)
        picks = (fmnist_test.dataset.y == label).nonzero().flatten()[:3]
        for i in picks.tolist():
            img = (fmnist_test.dataset.x[i].permute(1, 2, 0).numpy() * 255).astype("uint8")
            Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(root / cls / f"{i}.png")
    lines = []
    cfg = EvalConfig(output=str(tmp_path / "out"), datasets=["imagefolder"], data_root=str(root),
                     attacks=["apgd-dlr", "apgd-t", "aa-paper"], eps=["4/255"], defenses=["none"], steps=2,
                     aa_steps=2, probe_size=2, batch_size=6)
    GridRunner(cfg, log=lines.append).run()
    assert any("apgd-dlr skipped" in line and "2" in line for line in lines)
    recs = [json.loads(p.read_text()) for p in (tmp_path / "out" / "imagefolder").glob("*.json")]
    assert [r["attack"]["name"] for r in recs] == ["aa-paper"]
    assert recs[0]["autoattack"]["components"] == ["apgd-ce"] and recs[0]["autoattack"]["dropped"] == ["apgd-dlr"]


class QuantisingDefense(Defense):
    """A gradient-masking 'defense': it rounds the input to 16 levels and offers that as its exact gradient
    (round's derivative is 0: white-box attacks through it are blind)."""

    name = "quantise"
    differentiable_modes = ("full",)

    def predict(self, classifier, x, generator=None):
        return classifier(torch.round(x * 16) / 16)

    def differentiable(self, classifier, x, generator=None, mode="full"):
        return classifier(torch.round(x * 16) / 16)


@pytest.mark.slow
def test_grid_flags_black_box_beating_white_box_through_a_masked_defense(tmp_path):
    """Done-when at the grid level: adaptive AutoAttack through the masked defense flags it in the record and in
    the summary line; the honest undefended model's record does not."""
    lines = []
    recs = counterclip.evaluate(tmp_path, attacks=["autoattack"], eps=["8/255"],
                                defenses=["none", QuantisingDefense()], threat_model="adaptive", limit=32,
                                batch_size=32, probe_size=4, aa_steps=3, square_queries=250, log=lines.append)
    by = {(r["defense"]["name"], r["threat_model"]): r for r in recs}
    masked = next(r for (d, t), r in by.items() if t == "adaptive")
    print("masked stages", masked["autoattack"]["robust_accuracy_dict"], "honest stages",
          by[("none", "oblivious")]["autoattack"]["robust_accuracy_dict"])
    assert masked["sanity"]["black_box_beats_white_box"]["passed"] is False
    assert by[("none", "oblivious")]["sanity"]["black_box_beats_white_box"]["passed"] is True
    assert any("FLAGGED" in line and "black_box_beats_white_box" in line for line in lines)


@pytest.mark.slow
def test_adaptive_autoattack_uses_eot_through_a_randomised_defense_in_every_version(tmp_path):
    """Through a randomised defense every version's APGD components average gradients over --eot-samples draws
    (not only rand's); a deterministic defense keeps one draw, and the records' configs say which."""
    from counterclip.defenses import RandomNoise, TTE
    from counterclip.evaluation.config import EvalConfig
    from counterclip.evaluation.factory import composed_through
    from counterclip.evaluation.grid import GridRunner
    from counterclip.evaluation.plan import Through

    run = EvalConfig(output=str(tmp_path), attacks=["aa-paper"], aa_steps=2, eot_samples=3)
    aa = Through(composed_through(run, "aa-paper", 4 / 255, RandomNoise()), "bpda")
    assert [c.eot_iter for c in aa.attack.components(10)] == [3, 3]
    assert aa.config()["eot_iter"] == 3 and aa.config()["eot_all_versions"] is True
    assert aa.config()["name"] == "aa-paper-bpda" and aa.config()["threat_model"] == "adaptive"
    plain = Through(composed_through(run, "aa-paper", 4 / 255, TTE()), "bpda")
    assert [c.eot_iter for c in plain.attack.components(10)] == [1, 1] and "eot_iter" not in plain.config()

    cfg = EvalConfig(output=str(tmp_path), datasets=["fashion-mnist"], attacks=["aa-paper"], eps=["4/255"],
                     defenses=["rn", "tte"], limit=6, batch_size=6, probe_size=4, aa_steps=2,
                     threat_model="adaptive", eot_samples=2, adaptive_attacks=["eot-pgd"])
    GridRunner(cfg, log=lambda *_: None).run()
    seen = {}
    for p in (tmp_path / "fashion-mnist").glob("*.json"):
        r = json.loads(p.read_text())
        if r.get("threat_model") == "adaptive" and r["adaptive_attack"]["name"].startswith("aa-paper"):
            seen[(r["defense"]["name"], r["adaptive_attack"]["name"])] = r["adaptive_attack"].get("eot_iter")
    assert seen and all(v == 2 for (d, _), v in seen.items() if d == "rn")
    assert all(v is None for (d, _), v in seen.items() if d == "tte")
    assert {d for d, _ in seen} == {"rn", "tte"}
