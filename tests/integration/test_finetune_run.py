"""`counterclip finetune` on the embedded tiny model, a few steps on a few dozen images: the attack leaves the
weights' gradients alone, checkpoints reload strictly without an allow-list and load in eval, a SIGTERM'd run
resumes to the uninterrupted weights, and bad input is one line."""

import json
import os
import signal

import pytest
import torch

from counterclip.finetune import checkpoint as ckpt
from counterclip.finetune.attack import pgd_train, start_generators
from counterclip.finetune.config import resolve
from counterclip.finetune.trainer import Trainer

FAST = dict(limit=64, batch_size=32, epochs=1, eval_limit=8, eval_steps=1, save_every=1)


def make(out, method="tecoa", **kw):
    return Trainer(resolve(out, method, "toy", **{**FAST, **kw}), log=lambda *a: None)


@pytest.fixture(scope="module")
def tecoa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tecoa")
    tr = make(out, format="both")
    record = tr.run()
    return tr, out, record


def test_the_training_attack_never_touches_a_parameter_gradient(tiny_model, batch):
    tower = __import__("copy").deepcopy(tiny_model.visual).requires_grad_(True)
    from counterclip.finetune.methods import TeCoA
    from counterclip.finetune.trainer import Context
    from counterclip.zeroshot import ZeroShotClassifier

    text = ZeroShotClassifier(tiny_model, ["a", "b", "c"] + [str(i) for i in range(7)]).text_embeddings
    ctx = Context(tiny_model, text, tiny_model.logit_scale, "clip", 1)
    x, y = batch[0][:8], batch[1][:8]
    m, eps = TeCoA(), 4 / 255
    x_adv = pgd_train(lambda xa: m.attack_loss(ctx, tower, xa, x, y, {}), x, eps=eps, steps=3, step_size=eps,
                      momentum=0.9, generator=start_generators(0, "d", 0, range(8)))
    assert all(p.grad is None for p in tower.parameters())
    assert (x_adv - x).abs().max() <= eps + 1e-7 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)
    # a sample's start and result do not depend on its batch (what makes K ranks equal one process)
    part = pgd_train(lambda xa: m.attack_loss(ctx, tower, xa, x[3:5], y[3:5], {}), x[3:5], eps=eps, steps=3,
                     step_size=eps, momentum=0.9, generator=start_generators(0, "d", 0, range(3, 5)))
    torch.testing.assert_close(part, x_adv[3:5], atol=1e-6, rtol=0)
    # the reference mode leaks the attack's parameter gradients on purpose
    pgd_train(lambda xa: m.attack_loss(ctx, tower, xa, x, y, {}), x, eps=eps, steps=1, step_size=eps,
              reduction="mean", leak_params=list(tower.parameters()))
    assert all(p.grad is not None for p in tower.parameters())


def test_checkpoint_reloads_without_allow_list_and_matches_the_tower(tecoa_run, tiny_model):
    tr, out, record = tecoa_run
    obj = torch.load(str(out / "TeCoA.pth.tar"), weights_only=True)  # no safe_globals: primitives only
    sd, own = obj["vision_encoder_state_dict"], tiny_model.visual.state_dict()
    assert set(sd) == set(own) and len(sd) == 56
    assert sum(v.numel() for v in sd.values()) == 831_104
    assert all(sd[k].shape == own[k].shape and sd[k].dtype == torch.float32 and sd[k].device.type == "cpu"
               and sd[k].is_contiguous() for k in sd)
    assert not any(k.startswith(("module.", "visual.")) for k in sd)
    assert type(obj["epoch"]) is int and obj["epoch"] == 1 and type(obj["best_acc1"]) is float
    assert obj["optimizer"]["param_groups"][0]["params"] == list(range(len(sd)))
    meta = obj["counterclip"]
    assert meta["method"] == "tecoa" and meta["normalisation"] == "clip" and meta["optimizer_steps"] == 2
    assert "state_dict" not in obj and "add_prompter" not in obj
    raw = torch.load(str(out / "TeCoA.pt"), weights_only=True)  # --format both: RobustVLM's raw layout too
    assert all(torch.equal(raw[k], sd[k]) for k in sd)
    # a strict load into a fresh tower gives the trained tower's embeddings bit for bit
    fresh = __import__("copy").deepcopy(tiny_model.visual)
    fresh.load_state_dict(sd, strict=True)
    x = torch.rand(4, 3, 28, 28)
    with torch.no_grad():
        assert torch.equal(fresh(tiny_model.preprocess(x)), tr.tower(tiny_model.preprocess(x)))
        assert not torch.equal(fresh(tiny_model.preprocess(x)), tiny_model.visual(tiny_model.preprocess(x)))
    files = record["files"]
    assert set(files) == {"TeCoA.pth.tar", "TeCoA.pt", "TeCoA_opt.pt"}
    assert all(files[n]["sha256"] == ckpt.sha256(out / n) for n in files)
    saved = json.loads((out / "finetune.json").read_text())
    assert saved["history"][0]["epoch"] == 1 and 0 <= saved["history"][0]["heldout_robust_acc"] <= 1
    assert saved["images_per_s"] > 0


def test_eval_loads_the_checkpoint_with_the_original_tower_as_base(tecoa_run, tiny_model, tmp_path, capsys):
    from counterclip import load_model
    from counterclip.cli import main

    tr, out, _ = tecoa_run
    model = load_model("tiny-fmnist", vision_checkpoint=str(out / "TeCoA.pth.tar"))
    own = tiny_model.visual.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in model.base_visual.state_dict().items())
    trained = tr.tower.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in model.visual.state_dict().items())
    rc = main(["eval", "--vision-checkpoint", str(out / "TeCoA.pth.tar"), "--dataset", "fashion-mnist",
               "--limit", "8", "--batch-size", "8", "--output", str(tmp_path / "ev")])
    assert rc == 0, capsys.readouterr().err


def test_loader_skips_empty_wrappers_and_reads_partial_state_dict(tiny_model, tmp_path):
    from counterclip.models.checkpoints import extract_vision_state_dict

    own = tiny_model.visual.state_dict()
    tecoa_like = {"epoch": 1, "state_dict": {}, "vision_encoder_state_dict": own, "add_prompter": {}}
    later = {"state_dict": {}, "partial_state_dict": {f"visual.{k}": v for k, v in own.items()}}
    for obj in (tecoa_like, later):
        assert set(extract_vision_state_dict(obj)) == set(own)


def test_a_sigterm_stops_the_run_and_the_rerun_reaches_the_uninterrupted_weights(tecoa_run, tmp_path, monkeypatch,
                                                                                 capsys):
    from counterclip.cli import main
    from counterclip.finetune import trainer as trainer_mod

    tr, _, _ = tecoa_run
    out = tmp_path / "resumed"
    cli = ["finetune", "--method", "tecoa", "--preset", "toy", "--limit", "64", "--batch-size", "32", "--epochs",
           "1", "--eval-limit", "8", "--save-every", "1", "--output", str(out)]
    calls = {"n": 0}
    real = trainer_mod.pgd_train

    def signalled(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # inside step 2: the run stops at the next forward, step 1's weights are kept
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    monkeypatch.setattr(trainer_mod, "pgd_train", signalled)
    assert main(cli) == 143
    assert "stopped by SIGTERM; finished work is saved: re-run the same command to resume" in capsys.readouterr().err
    state = torch.load(str(out / ckpt.RESUME_FILE), weights_only=True)
    assert state["state"]["step"] == 1 and not (out / "TeCoA.pth.tar").exists()
    monkeypatch.undo()
    assert main(cli) == 0
    sd = torch.load(str(out / "TeCoA.pth.tar"), weights_only=True)["vision_encoder_state_dict"]
    ref = tr.tower.state_dict()
    for k in sd:
        torch.testing.assert_close(sd[k], ref[k], atol=1e-6, rtol=1e-5)


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    from counterclip.cli import main
    from counterclip.finetune import trainer as trainer_mod

    def err(*args):
        assert main(["finetune", *args, "--output", str(tmp_path / "x")]) == 2
        text = capsys.readouterr().err.strip()
        assert "\n" not in text and "Traceback" not in text
        return text

    assert "unknown finetune method 'sgd'; valid: fare, pmg-aft, tecoa" in err("--method", "sgd")
    assert "unknown preset 'paper'; valid: robustvlm, toy, ttc" in err("--method", "fare", "--preset", "paper")
    assert "outside the dataset's classes 0-9" in err("--method", "tecoa", "--classes", "8-10")
    assert "does not match the model's vision tower; unexpected keys: transformer.resblocks.4." in err(
        "--method", "tecoa", "--vision-checkpoint", str(_deeper_checkpoint(tmp_path)))

    class TwoRanks(trainer_mod.Dist):
        def __init__(self, device):
            super().__init__(device)
            self.world = 2

    monkeypatch.setattr(trainer_mod, "Dist", TwoRanks)
    assert "does not divide over 2 ranks" in err("--method", "tecoa", "--batch-size", "33")


def _deeper_checkpoint(tmp_path):
    """The tower of another architecture: tiny-fmnist's ViT with a fifth block."""
    import counterclip

    sd = counterclip.load_model().visual.state_dict()
    sd.update({k.replace("resblocks.3.", "resblocks.4."): v for k, v in sd.items() if "resblocks.3." in k})
    path = tmp_path / "deeper.pth.tar"
    torch.save({"epoch": 1, "vision_encoder_state_dict": sd}, path)
    return path


def test_a_shipped_fp16_tower_loads_by_path_and_by_name(tecoa_run, tmp_path, monkeypatch):
    from counterclip import load_model
    from counterclip.errors import CounterclipError
    from counterclip.finetune.export import ship_tower, shipped_metadata
    from counterclip.models import registry

    tr, out, _ = tecoa_run
    dest = ship_tower(out / "TeCoA.pth.tar", tmp_path / "weights" / "robust" / "t.safetensors")
    assert shipped_metadata(dest)["method"] == "tecoa"
    model = load_model("tiny-fmnist", vision_checkpoint=str(dest))
    trained = tr.tower.state_dict()
    for k, v in model.visual.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, trained[k].half().float())
    monkeypatch.setitem(registry.ROBUST_TOWERS, "tiny-fmnist-test", {"base": "tiny-fmnist", "file": "t.safetensors",
                                                                     "command": "counterclip finetune ..."})
    monkeypatch.setattr(registry, "resources", type("R", (), {"files": staticmethod(lambda pkg: tmp_path)}))
    assert registry.robust_tower_path("tiny-fmnist-test") == str(dest)
    with pytest.raises(CounterclipError, match="is a tower of tiny-fmnist, not of ViT-B-32"):
        registry.robust_tower_path("tiny-fmnist-test", "ViT-B-32")
