"""The shipped robust towers (TeCoA, PMG-AFT, FARE): each loads by name (so the demo and tests need no training), keeps the original
tower as the base, and is more robust than the undefended model on seen-class test images (PGD-10, 4/255)."""

import pytest
import torch


@pytest.mark.parametrize("method", ["tecoa", "pmg-aft", "fare"])
def test_shipped_tower_loads_by_name_and_resists_pgd_better(tiny_model, fmnist_test, method):
    from counterclip import ZeroShotClassifier, load_model, rng
    from counterclip.attacks.pgd import PGD
    from counterclip.finetune.export import shipped_metadata
    from counterclip.models.registry import robust_tower_path

    name = f"tiny-fmnist-{method}"
    assert shipped_metadata(robust_tower_path(name))["method"] == method  # the file is the method it is named for
    robust = load_model("tiny-fmnist", vision_checkpoint=name)
    own = tiny_model.visual.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in robust.base_visual.state_dict().items())
    ds = fmnist_test.dataset
    idx = torch.nonzero(ds.y < 5).flatten()[::50][:64]  # seen classes 0-4
    x, y = ds.x[idx], ds.y[idx]
    acc = {}
    for name, model in (("base", tiny_model), ("robust", robust)):
        clf = ZeroShotClassifier(model, fmnist_test.classnames, fmnist_test.templates)
        x_adv = PGD("4/255", steps=10)(clf, x, y, generator=rng.per_sample_generators(0, "t", idx))
        with torch.no_grad():
            acc[name] = (clf(x_adv).argmax(-1) == y).float().mean().item()
    assert acc["robust"] > acc["base"] + 0.05, acc
