"""Pure pieces of `counterclip finetune`: the lr schedule, class ranges, the epoch's batches over ranks, the
PMG-AFT loss algebra, the primitives guard."""

import math

import pytest
import torch
import torch.nn.functional as F

from counterclip.errors import CounterclipError, UnknownNameError
from counterclip.finetune import data as fdata
from counterclip.finetune.checkpoint import primitives
from counterclip.finetune.methods import PMGAFT, build_method, resolve_method
from counterclip.finetune.schedule import lr_at, warmup_steps


def test_schedule_warms_up_then_follows_the_cosine_to_zero():
    lr, W, N = 1e-3, 4, 20
    assert [lr_at(t, lr, W, N) for t in range(W)] == pytest.approx([lr * (t + 1) / W for t in range(W)])
    assert lr_at(W, lr, W, N) == pytest.approx(lr)
    assert lr_at(12, lr, W, N) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lr_at(N, lr, W, N) == pytest.approx(0.0, abs=1e-15)
    # FARE's reference steps its scheduler after the update: full lr first, warmup one step late
    assert lr_at(0, lr, W, N, reference_fare=True) == lr
    assert lr_at(1, lr, W, N, reference_fare=True) == pytest.approx(lr / W)
    assert warmup_steps(0.05, 200) == 10 and warmup_steps(1000, 200) == 1000 and warmup_steps(0.05, 4) == 1


def test_class_ranges():
    assert fdata.parse_classes("0-4", 10) == [0, 1, 2, 3, 4]
    assert fdata.parse_classes("0-1,7", 10) == [0, 1, 7]
    assert fdata.parse_classes(None, 3) == [0, 1, 2]
    for bad in ("5-10", "-1", "x", "12"):
        with pytest.raises(CounterclipError, match="--classes"):
            fdata.parse_classes(bad, 10)


def test_heldout_is_ten_percent_of_each_class_and_disjoint():
    labels = torch.arange(10).repeat_interleave(50)
    train, held = fdata.split(labels, [0, 1, 2], seed=3)
    assert len(held) == 15 and len(train) == 135
    assert not set(train.tolist()) & set(held.tolist())
    assert set(labels[held].tolist()) == {0, 1, 2}
    again, _ = fdata.split(labels, [0, 1, 2], seed=3, limit=40)
    assert len(again) == 40 and set(again.tolist()) <= set(train.tolist())


@pytest.mark.parametrize("world", [2, 4])
def test_the_ranks_batches_together_are_the_single_process_batch(world):
    idx = torch.arange(1000, 1203)  # dataset indices; 203 does not divide: drop_last on both sides
    one = fdata.epoch_batches(idx, epoch=2, seed=7, batch=16, rank=0, world=1)
    ranks = [fdata.epoch_batches(idx, epoch=2, seed=7, batch=16, rank=r, world=world) for r in range(world)]
    assert all(len(r) == len(one) == 203 // 16 for r in ranks)
    for j, single in enumerate(one):
        assert sorted(torch.cat([r[j] for r in ranks]).tolist()) == sorted(single.tolist())
    other_epoch = fdata.epoch_batches(idx, epoch=3, seed=7, batch=16, rank=0, world=1)
    assert not torch.equal(one[0], other_epoch[0])


class _Ctx:
    """Logits are the embeddings themselves; f0 adds a fixed offset."""

    world = 1

    def __init__(self):
        self.f0 = lambda x: x + 0.3

    def embed(self, tower, x):
        return tower(x)

    def logits(self, e, scale=None):
        return e


@pytest.mark.parametrize("variant,direction", [("ttc", None), ("ttc", "target-first"), ("official", None),
                                               ("official", "student-first")])
def test_pmg_aft_kl_terms_follow_the_variant_table(variant, direction):
    torch.manual_seed(0)
    x_adv, x, y = torch.randn(6, 5), torch.randn(6, 5), torch.randint(0, 5, (6,))
    m = PMGAFT(variant=variant, kl_direction=direction)
    ctx = _Ctx()
    loss, parts = m.train_loss(ctx, lambda t: t * 1.0, x_adv, x, y, {})
    p_adv, p_clean, p0 = (F.log_softmax(z, -1) for z in (x_adv, x, x_adv + 0.3))
    kl = lambda p, q: (p.exp() * (p - q)).sum(-1)  # noqa: E731  KL(p || q)
    student = m.kl_direction == "student-first"
    assert m.kl_direction == direction or (direction is None and student == (variant == "ttc"))
    g = kl(p_adv, p0) if student else kl(p0, p_adv)
    c = kl(p_adv, p_clean) if student else kl(p_clean, p_adv)
    reduce = (lambda v: v.sum()) if variant == "official" else (lambda v: v.mean())
    expected = F.cross_entropy(x_adv, y) + reduce(g) + reduce(c)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert m.normalisation == ("imagenet" if variant == "official" else "clip")
    assert m.logit_scale_one == (variant == "official")


def test_methods_are_named_in_one_place_with_aliases():
    assert resolve_method("PMG_AFT") == "pmg-aft" and resolve_method("tecoa") == "tecoa"
    with pytest.raises(UnknownNameError, match="valid: fare, pmg-aft, tecoa .did you mean 'tecoa'"):
        resolve_method("tecoa2")
    with pytest.raises(CounterclipError, match="unknown argument .variant. for finetune method fare"):
        build_method("fare", variant="official")


def test_primitives_turns_tensors_and_str_subclasses_into_plain_values():
    out = primitives({"a": torch.tensor(0.5), "v": torch.__version__, "l": (1, True, None)})
    assert out == {"a": 0.5, "v": str(torch.__version__), "l": [1, True, None]}
    assert type(out["v"]) is str
