"""One way to configure any defense or attack: NAME.key=value arguments checked against the class signature,
user classes by import path, their import path and arguments in records and cache keys."""

import json
import textwrap

import pytest

from counterclip.errors import CounterclipError
from counterclip.evaluation.config import EvalConfig
from counterclip.evaluation.grid import GridRunner
from counterclip.plugins import parse_assignments, parse_value

ATTACK_FILE = '''
import torch
import torch.nn.functional as F
from counterclip.attacks import Attack


class FGSM(Attack):
    """One signed-gradient step of size eps (Goodfellow et al., 2015), optionally from a random start."""

    name = "fgsm"

    def __init__(self, eps, random_start: bool = False, generator=None):
        super().__init__(eps, generator=generator)
        self.random_start = random_start

    def perturb(self, classifier, x, y, generator):
        x0 = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(classifier(x0), y), x0)
        return x + self.eps * g.sign()

    def config(self):
        return {**super().config(), "random_start": self.random_start}
'''


def test_values_and_targets():
    assert [parse_value(v) for v in ("2", "0.5", "inf", "true", "None", "(0, 1)", "auto", "4/255")] == \
        [2, 0.5, float("inf"), True, None, (0, 1), "auto", "4/255"]
    got = parse_assignments(["ttc.tau_thres=auto", "pkg.mod:Cls.k=3", "pkg.mod:Cls.name=a.b"], ["none", "ttc",
                                                                                                "pkg.mod:Cls"],
                            "defense")
    assert got == {"ttc": {"tau_thres": "auto"}, "pkg.mod:Cls": {"k": 3, "name": "a.b"}}
    assert parse_assignments(["steps=1"], ["none", "ttc"], "defense") == {"ttc": {"steps": 1}}
    with pytest.raises(CounterclipError, match="ambiguous with 2 defenses listed"):
        parse_assignments(["steps=1"], ["ttc", "rn"], "defense")
    with pytest.raises(CounterclipError, match="'tte' is not among the defenses"):
        parse_assignments(["tte.flip=false"], ["ttc"], "defense")


def test_unknown_keys_fail_in_one_line_listing_the_valid_ones(tmp_path):
    with pytest.raises(CounterclipError) as err:
        EvalConfig(output=str(tmp_path), defenses=["ttc"], defense_args={"ttc": {"tau": 0.1}}).validate()
    assert "valid: eps, steps, step_size, tau_thres" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CounterclipError, match="unknown argument 'queries' for attack pgd"):
        EvalConfig(output=str(tmp_path), attacks=["pgd"], attack_args={"pgd": {"queries": 9}}).validate()
    with pytest.raises(CounterclipError, match="cannot import no_such_module"):
        EvalConfig(output=str(tmp_path), defenses=["no_such_module:X"], defense_args={"no_such_module:X": {}})\
            .validate()
    with pytest.raises(CounterclipError, match="does not subclass counterclip.defenses.Defense"):
        EvalConfig(output=str(tmp_path), defenses=["json:JSONDecoder"],
                   defense_args={"json:JSONDecoder": {}}).validate()


def test_user_attack_and_defense_args_reach_the_grid_records_and_keys(tmp_path, monkeypatch):
    (tmp_path / "my_attack.py").write_text(textwrap.dedent(ATTACK_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    base = dict(datasets=["fashion-mnist"], eps=["8/255"], limit=8, batch_size=8, probe_size=4, steps=2)
    cfg = EvalConfig(output=str(tmp_path / "run"), attacks=["my_attack:FGSM"], defenses=["ttc"],
                     attack_args={"my_attack:FGSM": {"random_start": True}},
                     defense_args={"ttc": {"steps": 1, "tau_thres": "inf"}}, ttc_steps=2, **base)
    GridRunner(cfg, log=lambda *a: None).run()
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "run/fashion-mnist").glob("*.json")]
    assert rec["attack"]["name"] == "my_attack:FGSM" and rec["attack"]["random_start"] is True
    assert rec["attack"]["plugin"] == {"import_path": "my_attack:FGSM", "args": {"random_start": True}}
    assert rec["defense"]["params"]["steps"] == 1  # --defense-arg over the --ttc-steps alias
    assert rec["defense"]["params"]["tau_thres"] == float("inf")
    # another argument is another cache key: a new record beside the first
    cfg2 = EvalConfig(output=str(tmp_path / "run"), attacks=["my_attack:FGSM"], defenses=["ttc"],
                      attack_args={"my_attack:FGSM": {"random_start": False}},
                      defense_args={"ttc": {"steps": 1, "tau_thres": "inf"}}, **base)
    GridRunner(cfg2, log=lambda *a: None).run()
    assert len(list((tmp_path / "run/fashion-mnist").glob("*.json"))) == 2


def test_eval_help_reads_like_a_form_and_parses_the_generic_arguments(tmp_path):
    from counterclip.cli import build_parser
    from counterclip.cli_commands import eval_config

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["eval"]
    titles = [g.title for g in sub._action_groups if g._group_actions]
    assert titles[-6:] == ["model", "data", "attacks", "defenses", "threat model", "run"]
    args = parser.parse_args(["eval", "--dataset", "imagenet1k", "--defense", "none,ttc", "--tau-thres", "0.3",
                              "--defense-arg", "steps=1", "--defense-arg", "ttc.tau_thres=auto",
                              "--attack", "square", "--attack-arg", "queries=50", "--output", str(tmp_path)])
    cfg = eval_config(args)
    assert cfg.defense_args == {"ttc": {"steps": 1, "tau_thres": "auto"}}  # over the --tau-thres alias
    assert cfg.attack_args == {"square": {"queries": 50}}
    cfg.validate()


def test_a_tagged_defense_pickles_and_its_copies_report_their_own_params():
    import copy
    import pickle

    from counterclip.defenses import TTE
    from counterclip.plugins import tag_plugin

    d = TTE(crops=4)
    tag_plugin(d, "counterclip.defenses.tte:TTE", {"crops": 4})
    twin = copy.deepcopy(d)
    twin.crops = 0
    assert d.params()["crops"] == 4 and twin.params()["crops"] == 0
    back = pickle.loads(pickle.dumps(d))
    assert back.params() == d.params() and back.params()["plugin"]["import_path"] == "counterclip.defenses.tte:TTE"


def test_a_module_in_the_current_folder_loads_without_pythonpath(tmp_path, monkeypatch):
    """The console script does not put the current folder on sys.path (``python -m`` does): the loader tries it."""
    import sys

    from counterclip.plugins import load_class

    (tmp_path / "folder_defense.py").write_text("from counterclip.defenses import Defense\n\n\n"
                                                "class Here(Defense):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    assert load_class("folder_defense:Here", "defense").__name__ == "Here"
    with pytest.raises(CounterclipError, match="has no Nope"):
        load_class("folder_defense:Nope", "defense")


DEFENSE_FILE = '''
import torch.nn.functional as F
from counterclip.defenses import Defense


class Blur(Defense):
    name = "blur"

    def __init__(self, kernel: int = 3):
        self.kernel = kernel

    def predict(self, classifier, x, generator=None):
        return classifier(F.avg_pool2d(x, self.kernel, 1, self.kernel // 2, count_include_pad=False))
'''


def test_the_cli_class_and_evaluate_objects_share_records_and_take_the_same_arguments(tmp_path, monkeypatch):
    """``--defense mod:Cls`` with its defaults and ``evaluate(defenses=[Cls()])`` are one cache key;
    ``evaluate`` builds a class as the CLI does: ``defense_args`` / ``attack_args`` and ``step_size`` reach it
    (they used to be dropped silently), and a different argument is a different record."""
    import counterclip

    (tmp_path / "my_blur.py").write_text(textwrap.dedent(DEFENSE_FILE))
    (tmp_path / "my_attack.py").write_text(textwrap.dedent(ATTACK_FILE))
    monkeypatch.syspath_prepend(str(tmp_path))
    from my_attack import FGSM
    from my_blur import Blur

    run = tmp_path / "run"
    base = dict(datasets=["fashion-mnist"], eps=["8/255"], limit=8, batch_size=8, probe_size=4, steps=1)
    GridRunner(EvalConfig(output=str(run), attacks=["pgd"], defenses=["my_blur:Blur"], **base),
               log=lambda *a: None).run()
    (first,) = run.glob("fashion-mnist/*.json")
    mtime = first.stat().st_mtime_ns
    assert json.loads(first.read_text())["defense"]["params"]["plugin"]["args"] == {"kernel": 3}
    (rec,) = counterclip.evaluate(run, attacks=["pgd"], defenses=[Blur()], **{**base, "eps": ("8/255",)})
    assert rec["_path"] == str(first) and first.stat().st_mtime_ns == mtime  # found, not recomputed

    (rec,) = counterclip.evaluate(run, attacks=[FGSM], defenses=[Blur], step_size="1/255",
                                  defense_args={"my_blur:Blur": {"kernel": 5}},
                                  attack_args={"my_attack:FGSM": {"random_start": True}}, **base)
    assert rec["defense"]["params"]["plugin"]["args"] == {"kernel": 5}
    assert rec["attack"]["random_start"] is True and rec["attack"]["plugin"]["args"] == {"random_start": True}
    assert len(list(run.glob("fashion-mnist/*.json"))) == 2
    with pytest.raises(CounterclipError, match="unknown argument 'kernal'"):
        counterclip.evaluate(run, defenses=[Blur], defense_args={"my_blur:Blur": {"kernal": 5}}, **base)
    with pytest.raises(CounterclipError, match="unknown argument 'start'"):
        counterclip.evaluate(run, attacks=[FGSM], attack_args={"my_attack:FGSM": {"start": 1}}, **base)


def test_an_argument_with_only_none_listed_says_so():
    with pytest.raises(CounterclipError, match="no defense of this run takes arguments"):
        parse_assignments(["kernel=5"], ["none"], "defense")


def test_public_state_is_stable_across_runs():
    """An attribute whose repr holds a memory address (a helper object, a function) must not change the cache
    key from one run to the next."""
    from counterclip.plugins import public_state

    class Helper:
        pass

    class D:
        def __init__(self):
            self.kernel, self.helper, self.fn, self._private = 3, Helper(), (lambda x: x), 1

    assert public_state(D()) == public_state(D()) == {"fn": "<function>", "helper": f"<{Helper.__qualname__}>",
                                              "kernel": 3}


def test_attack_args_reach_the_adaptive_attacks_by_name(tmp_path):
    """--attack-arg eot-pgd.steps=3 strengthens the adaptive attack alone (it must be named: an unprefixed
    key still goes to the one oblivious attack); a bad key or value fails before the run, in one line."""
    from counterclip.cli import build_parser
    from counterclip.cli_commands import eval_config

    args = build_parser().parse_args(["eval", "--dataset", "fashion-mnist", "--attack", "pgd", "--defense", "rn",
                                      "--threat-model", "both", "--attack-arg", "steps=2",
                                      "--attack-arg", "eot-pgd.steps=3", "--attack-arg", "gate-aware.lambdas=(0,5)",
                                      "--output", str(tmp_path)])
    cfg = eval_config(args)
    assert cfg.attack_args == {"pgd": {"steps": 2}, "eot-pgd": {"steps": 3}, "gate-aware": {"lambdas": (0, 5)}}
    cfg.validate()
    with pytest.raises(CounterclipError, match=r"unknown argument 'queries' for attack eot-pgd .*valid: steps"):
        EvalConfig(output=str(tmp_path), attacks=["pgd"], threat_model="both",
                   attack_args={"eot-pgd": {"queries": 9}}).validate()
    with pytest.raises(CounterclipError, match="lambdas must be"):
        EvalConfig(output=str(tmp_path), attacks=["pgd"], threat_model="both",
                   attack_args={"gate-aware": {"lambdas": (-1,)}}).validate()
    with pytest.raises(ValueError, match="not among --adaptive-attack gate-aware"):
        EvalConfig(output=str(tmp_path), attacks=["pgd"], threat_model="both", adaptive_attacks=["gate-aware"],
                   attack_args={"eot-pgd": {"steps": 3}}).validate()
    with pytest.raises(ValueError, match="needs --threat-model adaptive or both"):
        EvalConfig(output=str(tmp_path), attacks=["pgd"], attack_args={"eot-pgd": {"steps": 3}}).validate()

    base = dict(output=str(tmp_path / "run"), datasets=["fashion-mnist"], attacks=["pgd"], eps=["4/255"],
                defenses=["rn"], limit=4, batch_size=4, probe_size=2, steps=1, threat_model="adaptive",
                eot_samples=1)
    GridRunner(EvalConfig(**base, attack_args={"eot-pgd": {"steps": 2, "keep": "last"}}), log=lambda *a: None).run()
    (rec,) = [json.loads(p.read_text()) for p in (tmp_path / "run/fashion-mnist").glob("*.json")]
    assert rec["adaptive_attack"]["name"] == "eot-pgd"
    assert (rec["adaptive_attack"]["steps"], rec["adaptive_attack"]["keep"]) == (2, "last")  # not --steps 1
    assert rec["adaptive_attack"]["step_size_str"] == "5/255"  # the auto step for its own 2 steps: 2.5 * 4/255 / 2
    GridRunner(EvalConfig(**base), log=lambda *a: None).run()  # other knobs: another record beside it
    steps = sorted(json.loads(p.read_text())["adaptive_attack"]["steps"]
                   for p in (tmp_path / "run/fashion-mnist").glob("*.json"))
    assert steps == [1, 2]
    from counterclip.report import build_report

    md = build_report(tmp_path / "run")["results.md"].read_text()  # one experiment, the attack named by its knobs
    assert "different configurations" not in md
    assert "eot-pgd[keep=best,step_size=10/255,steps=1] (adaptive)" in md
    assert "eot-pgd[keep=last,step_size=5/255,steps=2] (adaptive)" in md
    assert "on top of" not in md  # the heading names the attack once

    # gate-aware's arguments reach it under its TTC name (tau-aware), and its record names the oblivious PGD
    # point it extends; another oblivious PGD is another record, not the old one reused
    gate = {**base, "output": str(tmp_path / "gate"), "defenses": ["ttc"], "adaptive_attacks": ["gate-aware"],
            "threat_model": "both"}
    for pgd_steps in (1, 2):
        GridRunner(EvalConfig(**gate, attack_args={"gate-aware": {"lambdas": (0, 10)}, "pgd": {"steps": pgd_steps}}),
                   log=lambda *a: None).run()
    recs = [r for r in (json.loads(p.read_text()) for p in (tmp_path / "gate/fashion-mnist").glob("*.json"))
            if r.get("adaptive_attack")]
    assert sorted(r["adaptive_attack"]["x_init"]["steps"] for r in recs) == [1, 2]
    assert {r["adaptive_attack"]["name"] for r in recs} == {"tau-aware"}
    assert all(r["adaptive_attack"]["lambdas"] == [0.0, 10.0] for r in recs)


def test_adaptive_attack_args_fail_up_front_with_the_reason(tmp_path):
    """Values an attack would misread fail before the run, in words; an adaptive argument with no attack whose
    budgets the adaptive attacks run at is refused rather than ignored."""
    bad = {"eot-pgd": {"steps": 2.5}, "bpda-pgd": {"steps": "abc"}, "gate-aware": {"lambdas": -1},
           "tau-aware": {"margin_frac": -2}}
    why = {"eot-pgd": "steps must be an integer >= 0, got 2.5", "bpda-pgd": "steps must be an integer",
           "gate-aware": "lambdas must be a non-empty list", "tau-aware": "margin_frac must be a finite number >= 0"}
    for name, args in bad.items():
        with pytest.raises(CounterclipError, match=why[name]):
            EvalConfig(output=str(tmp_path), attacks=["pgd"], threat_model="both",
                       attack_args={name: args}).validate()
    with pytest.raises(ValueError, match="run at the budgets of an --attack"):
        EvalConfig(output=str(tmp_path), defenses=["ttc"], threat_model="adaptive",
                   attack_args={"eot-pgd": {"steps": 3}}).validate()
    # tau-aware is gate-aware's TTC name: its arguments are accepted with either name selected
    EvalConfig(output=str(tmp_path), attacks=["pgd"], threat_model="both", adaptive_attacks=["gate-aware"],
               attack_args={"tau-aware": {"lambdas": (0, 1)}}).validate()
