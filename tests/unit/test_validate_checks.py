"""The output checks themselves (evaluation/validate.py), on hand-made tensors."""

import pickle

import pytest
import torch

from counterclip.evaluation import validate
from counterclip.evaluation.validate import BIT, BatchCheck, InvalidOutput

EPS = 4 / 255


def _x(n=4):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _codes(found):
    return found[0].tolist()


def test_an_attack_at_the_edge_of_its_ball_passes_and_1e_4_beyond_it_fails():
    x = _x()
    sign = torch.where(torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.5, 1.0, -1.0)
    edge = (x + EPS * sign).clamp(0, 1)  # what a projecting attack returns: fp32 rounding only
    assert _codes(validate.adversarial_codes(x, edge, EPS)) == [0] * 4
    over = edge.clone()
    over[2, 0, 3, 3] = x[2, 0, 3, 3] + EPS + 1e-4 if x[2, 0, 3, 3] < 0.9 else x[2, 0, 3, 3] - EPS - 1e-4
    assert _codes(validate.adversarial_codes(x, over, EPS)) == [0, 0, BIT["eps-ball"], 0]


def test_box_finite_and_shape_of_adversarial_inputs():
    x = _x()
    x[2, 0, 0, 0] = 0.0
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    bad[1, 0, 0, 0] = float("inf")
    bad[2, 0, 0, 0] = -1e-3  # inside the ball, below the box
    codes = _codes(validate.adversarial_codes(x, bad, EPS))
    assert codes == [BIT["finite inputs"], BIT["finite inputs"], BIT["[0,1] box"], 0]
    assert _codes(validate.adversarial_codes(x, x[:3], EPS)) == [BIT["input shape"]] * 4


def test_l2_ball():
    x = torch.full((2, 1, 4, 4), 0.5)
    d = torch.zeros_like(x)
    d[0, 0, 0, :] = 0.25  # L2 norm 0.5
    d[1, 0, 0, :] = 0.26
    assert _codes(validate.adversarial_codes(x, x + d, 0.5, "l2")) == [0, BIT["eps-ball"]]
    assert _codes(validate.adversarial_codes(x, x + d, 0.5, "linf")) == [0, 0]


def test_logits_and_gate_checks():
    good = torch.randn(3, 5)
    assert _codes(validate.logits_codes(good, 3, 5)) == [0, 0, 0]
    assert _codes(validate.logits_codes(good[:, :4], 3, 5)) == [BIT["logits shape"]] * 3
    assert _codes(validate.logits_codes(good.long(), 3, 5)) == [BIT["logits dtype"]] * 3
    assert _codes(validate.logits_codes([1, 2], 3, 5)) == [BIT["logits shape"]] * 3
    nan = good.clone()
    nan[1, 2] = float("nan")
    assert _codes(validate.logits_codes(nan, 3, 5)) == [0, BIT["finite logits"], 0]
    assert _codes(validate.gate_codes(torch.zeros(3, 1), 3)) == [BIT["gate score shape"]] * 3
    assert _codes(validate.gate_codes(torch.tensor([0.0, float("-inf"), 1.0]), 3)) == [0, BIT["finite gate scores"], 0]


def test_fail_mode_raises_one_line_with_method_check_count_and_first_index():
    chk = BatchCheck("fail", torch.tensor([10, 20, 30]), num_classes=5, where="ds")
    logits = torch.randn(3, 5)
    logits[1:] = float("nan")
    with pytest.raises(InvalidOutput) as info:
        chk.logits("my:Def", logits)
    e = info.value
    assert (e.method, e.check, e.count, e.first) == ("my:Def", "finite logits", 2, 20)
    assert str(e).startswith("ds: defense my:Def failed the finite logits check on 2 of 3 samples (first: dataset "
                             "index 20)") and "\n" not in str(e)
    back = pickle.loads(pickle.dumps(e))  # a peer rank's failure travels through all_gather_object
    assert (back.method, back.check, back.count, back.first, str(back)) == (e.method, e.check, e.count, e.first, str(e))


def test_skip_mode_marks_samples_counts_them_wrong_and_replaces_invalid_inputs_by_the_clean_image():
    x = _x(3)
    chk = BatchCheck("skip", torch.tensor([7, 8, 9]), num_classes=4)
    x_adv = x.clone()
    x_adv[1] = float("nan")
    out = chk.adversarial("atk", x, x_adv, EPS)
    assert torch.equal(out[1], x[1]) and torch.isfinite(out).all()
    logits = torch.eye(4)[:3] * 5
    y = torch.tensor([0, 1, 2])
    chk.logits("def", logits)
    res = chk.finish({"correct": chk.correct(logits, y), "draws": torch.ones(3, 2, dtype=torch.bool)})
    assert res["correct"].tolist() == [True, False, True] and res["draws"][:, 0].tolist() == [True, False, True]
    assert res["invalid"].tolist() == [0, BIT["finite inputs"], 0]
    count, check = validate.record_fields(res["invalid"], torch.tensor([7, 8, 9]))
    assert count == 1 and check["passed"] is False and "attack: finite inputs on 1 (first: dataset index 8)" in \
        check["detail"]


def test_a_skip_runs_chunk_fails_a_fail_run_and_old_chunks_are_unchecked_not_invalid():
    codes = torch.tensor([0, BIT["eps-ball"]], dtype=torch.int16)
    validate.settle(codes, "skip", "pgd", [3, 4])
    with pytest.raises(InvalidOutput, match="attack pgd failed the eps-ball check on 1 of 2 samples"):
        validate.settle(codes, "fail", {"attack": "pgd", "defense": "ttc"}, [3, 4])
    old = validate.codes_of({}, 2)
    validate.settle(old, "fail", "pgd", [3, 4])  # unchecked is not invalid
    count, check = validate.record_fields(old, [3, 4])
    assert count == 0 and check["passed"] is None and "--overwrite" in check["detail"]
    assert not validate.reusable({"invalid": 2}, "fail") and validate.reusable({"invalid": 2}, "skip")
    assert validate.reusable({"invalid": 0}, "fail")


def test_the_randomness_probe_needs_finite_different_logits():
    a = torch.randn(2, 3)
    assert validate.draws_differ(a, a.clone()) is False
    assert validate.draws_differ(a, a + 1) is True
    nan = torch.full((2, 3), float("nan"))
    assert validate.draws_differ(nan, nan.clone()) is None
    assert validate.draws_differ(a, torch.randn(2, 4)) is None
