"""Dev-only yardstick: MAC against the authors' code (sunoh-kim/MAC, checked at 2338c34), on the embedded model.
Needs COUNTERCLIP_MAC_REPO (a checkout or git directory of that repository); skipped without it.

From the snapshot run ``build_aug`` (with ``AdditiveNoise``), ``build_views``, ``aggregate_views`` and
``multiview_guided_counterattack`` (with ``clamp`` and the pixel limits of ``attacks.py``). Their model calls go
to our model: ``clip_img_preprocessing`` (resize to 224 + normalise) is the identity here, since the embedded
model normalises inside and runs at 28 px; the null prompters are identities.

* same draws: every parameter their augmentation draws is recorded (torchvision's ``get_params`` and the noise,
  read back by replaying the RNG) and applied by ours: the same images;
* same views and draws: their counterattack and our ``MAC.defend`` give the same weights and predictions;
* the clean corruption-degree distribution of our default augmentation is indistinguishable from theirs on 256
  images (two-sample KS; the size-scaled blur's p-value is printed beside it).
"""

from __future__ import annotations

import os

import pytest
import torch
import torchvision.transforms as T
from peer_snapshot import definitions, snapshot

from counterclip.defenses import MAC
from counterclip.defenses import _mac_augment as A
from counterclip.defenses.mac import corruption_degree

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    root = snapshot("COUNTERCLIP_MAC_REPO", "code/mac.py", tmp_path_factory.mktemp("mac"))
    ns = definitions(root / "code/attacks.py", ["clamp", "lower_limit"])
    ns["clip_img_preprocessing"] = lambda x: x
    return definitions(root / "code/mac.py", ["AdditiveNoise", "build_aug", "build_views", "aggregate_views",
                                              "multiview_guided_counterattack"], ns)


class Recorder:
    """Wraps their augmentation: records, image by image, the parameters each call drew."""

    def __init__(self, authors, monkeypatch):
        self.aug, self.draws, self.now = authors["build_aug"](), [], None
        for cls in (T.RandomAffine, T.ColorJitter, T.GaussianBlur):
            monkeypatch.setattr(cls, "get_params", self._recording(cls.__name__, cls.get_params))
        noise = authors["AdditiveNoise"].forward

        def noise_forward(module, x):
            state = torch.get_rng_state()
            out = noise(module, x)
            after = torch.get_rng_state()
            torch.set_rng_state(state)  # read back its two draws (sigma, then the noise) and continue as it did
            self.now["noise"] = (torch.empty(1).uniform_(module.sigma_min, module.sigma_max).item(),
                                 torch.randn_like(x))
            torch.set_rng_state(after)
            return out

        monkeypatch.setattr(authors["AdditiveNoise"], "forward", noise_forward)

    def _recording(self, name, get_params):
        def wrapped(*args, **kwargs):
            out = get_params(*args, **kwargs)
            self.now[name] = out
            return out
        return staticmethod(wrapped)

    def __call__(self, img):
        self.now = {}
        out = self.aug(img)
        self.draws.append(self.now)
        return out

    def as_draw(self, records, shape) -> A.Draw:
        """Their parameters in our form, for images of ``shape`` (b, C, H, W)."""
        def field(values, fn, default):
            return [fn(v) if v is not None else default for v in values]
        aff = [r["RandomAffine"] for r in records]
        cj = [r.get("ColorJitter") for r in records]
        nz = [r.get("noise") for r in records]
        return A.Draw(angle=torch.tensor([a[0] for a in aff]), translate=torch.tensor([a[1] for a in aff]).float(),
                      scale=torch.tensor([a[2] for a in aff]),
                      jitter=torch.tensor([c is not None for c in cj]),
                      order=torch.stack(field(cj, lambda c: c[0], torch.arange(4))),
                      factors=torch.tensor(field(cj, lambda c: list(c[1:]), [1.0, 1.0, 1.0, 0.0])),
                      blur=torch.tensor(["GaussianBlur" in r for r in records]),
                      sigma=torch.tensor([r.get("GaussianBlur", 1.0) for r in records]),
                      noise=torch.tensor([n is not None for n in nz]),
                      noise_sigma=torch.tensor(field(nz, lambda n: n[0], 0.0)),
                      z=torch.stack(field(nz, lambda n: n[1], torch.zeros(shape[1:]))))


@pytest.fixture
def images(fmnist_test):
    return fmnist_test.dataset.x[torch.arange(64) * 13]


def test_same_draws_same_images(authors, images, monkeypatch):
    rec = Recorder(authors, monkeypatch)
    torch.manual_seed(0)
    theirs = torch.stack([rec(img) for img in images])
    draw = rec.as_draw(rec.draws, images.shape)
    assert draw.jitter.any() and draw.blur.any() and draw.noise.any() and (draw.translate != 0).any()
    assert len({tuple(o.tolist()) for o in draw.order[draw.jitter]}) > 1  # their jitter order varies
    assert torch.allclose(A.apply(images, draw), theirs, atol=1e-6)


def test_same_views_and_draws_same_weights_and_predictions(authors, classifier, images, monkeypatch):
    mac = MAC()  # the paper's gate, 0.7
    rec = Recorder(authors, monkeypatch)
    model = type("Wrapped", (), {"module": type("Enc", (), {
        "encode_image": staticmethod(lambda x, prompt=None: classifier.encode_image(x).float()),
        "named_parameters": staticmethod(lambda: iter(()))})()})()
    torch.manual_seed(1)
    views = authors["build_views"](images, 2, rec)
    state = torch.get_rng_state()  # their counterattack draws delta0 first, then the degree's augmentation
    delta = authors["multiview_guided_counterattack"](
        model, views, lambda x: x, lambda: None, alpha=mac.step_size, attack_iters=mac.steps, norm="l_inf",
        epsilon=mac.eps, tau_thres=mac.gate_threshold, tau_temp=mac.temperature, aug=rec)
    with torch.no_grad():
        f0 = classifier.encode_image(views).float()
        their_logits = authors["aggregate_views"](classifier(views + delta), 2)
    degree_draw = rec.as_draw(rec.draws[len(images):], views.shape)
    fa = classifier.encode_image(A.apply(views, degree_draw)).float()
    their_w = torch.sigmoid((corruption_degree(fa, f0) - mac.gate_threshold) / mac.temperature)

    view_draw = rec.as_draw(rec.draws[:len(images)], images.shape)
    queue = [view_draw, degree_draw]
    mac.augment = lambda x, generator=None: A.apply(x, queue.pop(0), mac.blur)  # their draws, in their order
    torch.set_rng_state(state)  # delta0: the same global draw as theirs
    logits, w = mac.defend(classifier, images)
    assert not queue
    print(f"\nMAC same views and draws: {int((w > 0.5).sum())} of {w.numel()} views counterattacked; predictions "
          f"agree on {int((logits.argmax(-1) == their_logits.argmax(-1)).sum())}/{len(images)}")
    assert torch.allclose(w.flatten(), their_w, atol=1e-5)
    assert torch.equal(logits.argmax(-1), their_logits.argmax(-1))
    assert torch.allclose(logits, their_logits, atol=1e-3)


def clean_degrees(classifier, x, augment):
    """Both views' corruption degrees, as MAC computes them on clean images: (2 * B,)."""
    with torch.no_grad():
        v = torch.cat([x, augment(x)])
        return corruption_degree(classifier.encode_image(augment(v)).float(), classifier.encode_image(v).float())


def test_clean_corruption_degrees_match_the_authors(authors, classifier, fmnist_test):
    """On 256 test images by default; COUNTERCLIP_MAC_DEGREE_IMAGES=n measures on more (docs/peers.md)."""
    from scipy.stats import ks_2samp

    x = fmnist_test.dataset.x[:int(os.environ.get("COUNTERCLIP_MAC_DEGREE_IMAGES", 256))]
    aug = authors["build_aug"]()
    torch.manual_seed(2)
    theirs = clean_degrees(classifier, x, lambda b: torch.stack([aug(img) for img in b]))
    gen = torch.Generator().manual_seed(2)
    ours = clean_degrees(classifier, x, lambda b: MAC().augment(b, gen))
    scaled = clean_degrees(classifier, x, lambda b: MAC(blur="scaled").augment(b, gen))
    p_ours, p_scaled = ks_2samp(ours, theirs).pvalue, ks_2samp(scaled, theirs).pvalue
    print(f"\nclean corruption degree on {len(x)} images ({2 * len(x)} views): authors mean {theirs.mean():.3f}, "
          f"{(theirs > 0.7).float().mean():.1%} above 0.7; ours {ours.mean():.3f}, {(ours > 0.7).float().mean():.1%}"
          f" (KS p={p_ours:.3f}); blur='scaled' {scaled.mean():.3f}, {(scaled > 0.7).float().mean():.1%} "
          f"(KS p={p_scaled:.2g})")
    assert p_ours > 0.01
