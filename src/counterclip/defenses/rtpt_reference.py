"""R-TPT with the reference code's pass pattern (``../shared/spec/peers.md``, R-TPT), image by image: a fresh
learnable context and AdamW per image, the whole model (image encoder over the 64 views + text encoder over all
class prompts) run for every use of the logits, and the image encoder once more for the similarity weights:
4 x 64 image forwards and 3 text forwards per image. The yardstick for the benchmark and the tests (the same
views -> the same predictions as ``RTPT``); use ``RTPT`` for real work."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..cost import count_text


def reference_rtpt_logits(rtpt, classifier, views: torch.Tensor) -> torch.Tensor:
    """Logits (B, C) of ``rtpt`` (an ``RTPT``: its parameters) on ``views`` (B, V, C, H, W)."""
    model = classifier.model
    names = classifier.classnames
    tokens = model.tokenize([f"{rtpt.init} {n}." for n in names])
    n_ctx = int(model.tokenize([rtpt.init])["ids"][0].argmax()) - 1
    with torch.no_grad():
        base = model.embed_tokens(tokens["ids"]).float()

    def clip_logits(images, ctx):  # the reference model's forward: image and text towers on every call
        with torch.no_grad():
            img = F.normalize(model.encode_image(images).float(), dim=-1)
        emb = torch.cat([base[:, :1], ctx.unsqueeze(0).expand(len(names), -1, -1), base[:, 1 + n_ctx:]], 1)
        txt = F.normalize(count_text(model.encode_text_embeddings(emb, tokens).float()), dim=-1)
        return classifier.logit_scale * img @ txt.t()

    out = []
    for i in range(len(views)):
        v = views[i]
        ctx = torch.nn.Parameter(base[0, 1:1 + n_ctx].clone())  # state reset before every image
        opt = torch.optim.AdamW([ctx], lr=rtpt.lr, weight_decay=rtpt.weight_decay)
        with torch.no_grad():
            first = clip_logits(v, ctx)
        logp = first.log_softmax(-1)
        ent = -(logp.exp() * logp).sum(-1)
        k = max(1, int(len(v) * rtpt.top))
        idx = torch.argsort(ent)[:k]
        with torch.enable_grad():
            tuned_out = clip_logits(v, ctx)[idx]
            lp = tuned_out.log_softmax(-1)
            loss = (-(lp.exp() * lp).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
        opt.step()
        with torch.no_grad():
            logits = clip_logits(v, ctx)
            feats = F.normalize(model.encode_image(v).float(), dim=-1)
            sim = feats @ feats.t()
            sim.fill_diagonal_(float("-inf"))
            score = sim.topk(min(rtpt.neighbours, len(v) - 1), dim=-1).values.mean(-1)
            w = torch.softmax(score / rtpt.temperature, 0)
            out.append((w.unsqueeze(-1) * logits).sum(0))
    return torch.stack(out)
