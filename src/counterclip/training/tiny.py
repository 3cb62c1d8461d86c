"""Train the embedded default model: a tiny open_clip CLIP, contrastively, on the Fashion-MNIST training set.

The model is open_clip's own ``CLIP`` class built from a small config (ViT image tower on native 28 px with
7 px patches, causal transformer text tower, open_clip's BPE tokenizer); only the size is ours. Captions are
drawn per image from several templates, so the text tower sees more than one phrasing per class. Seeded:
the same seed, torch version and thread count give the same weights.

The result is written as an open_clip ``local-dir`` model folder (``open_clip_config.json`` +
``open_clip_model.safetensors``), the weights stored in fp16 (the 49,408-token embedding table alone is
24 MiB in fp32) and upcast to fp32 at load time.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import fashion_mnist

MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 28, "patch_size": 7, "width": 128, "layers": 4, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}
# CLIP's (OpenAI) mean/std: the embedded model normalises like every CLIP it stands in for
PREPROCESS_CFG = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                  "interpolation": "bicubic", "resize_mode": "shortest", "size": 28}
TRAIN_TEMPLATES = [
    "a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "an image of a {}.", "a grayscale photo of a {}.",
    "a low resolution photo of a {}.", "a product photo of a {}.", "a black and white photo of the {}.", "{}.",
    "a small photo of a {}.", "this is a photo of a {}.", "a cropped photo of a {}.",
]
EVAL_TEMPLATE = "a photo of a {}."


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2 px shifts (reflect padding) and horizontal flips: label-preserving for clothing."""
    b = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    dx = torch.randint(0, 5, (b,), generator=gen)
    dy = torch.randint(0, 5, (b,), generator=gen)
    idx = torch.arange(28)
    rows = (dy[:, None] + idx[None, :])  # [B,28]
    cols = (dx[:, None] + idx[None, :])
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def check_output(output_dir, overwrite_embedded: bool = False) -> None:
    from ..errors import CounterclipError
    from ..models.registry import embedded_dir

    shipped = embedded_dir("tiny-fmnist").resolve()
    if Path(output_dir).resolve() == shipped and not overwrite_embedded:
        raise CounterclipError(f"{output_dir} is the shipped tiny-fmnist model; write the retrained one to a folder "
                               "of your own (--output DIR, then --model local-dir:DIR), or pass "
                               "--overwrite-embedded to replace it")


def train_tiny(output_dir: str | Path, epochs: int = 6, batch_size: int = 256, lr: float = 1e-3,
               weight_decay: float = 0.1, seed: int = 0, data_root=None, threads: int | None = None,
               log=print, max_images: int | None = None, overwrite_embedded: bool = False) -> dict:
    """Train and write the model folder (load it with ``load_model("local-dir:DIR")``); ``max_images`` keeps
    only the first N training images (quick tests). The package's own ``tiny-fmnist`` folder is refused unless
    ``overwrite_embedded``: every record, test and README number is measured on those weights."""
    import open_clip
    from safetensors.torch import save_file

    check_output(output_dir, overwrite_embedded)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    images, labels = fashion_mnist.load_arrays("train", data_root)
    if max_images is not None:
        if max_images < batch_size:
            raise ValueError(f"max_images ({max_images}) must be at least batch_size ({batch_size})")
        images, labels = images[:max_images], labels[:max_images]
    x_all = fashion_mnist.to_rgb_tensor(images)
    y_all = torch.from_numpy(labels)
    classnames = fashion_mnist.CLASSNAMES

    model = open_clip.CLIP(**MODEL_CFG)
    model.train()
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    # every (class, template) caption, tokenised once; a batch encodes only the distinct ones it uses
    captions = [t.format(c) for c in classnames for t in TRAIN_TEMPLATES]
    tokens = tokenizer(captions)
    n_t = len(TRAIN_TEMPLATES)
    mean = torch.tensor(PREPROCESS_CFG["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESS_CFG["std"]).view(1, 3, 1, 1)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)
    steps_per_epoch = len(x_all) // batch_size
    total = epochs * steps_per_epoch
    warmup = max(1, total // 20)
    decay_steps = max(1, total - warmup)  # a 1-step run (warmup == total) must not divide by zero
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / decay_steps)))
    loss_fn = open_clip.ClipLoss()

    t0 = time.time()
    step = 0
    for epoch in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            x = _augment(x_all[idx], gen)
            cap = y_all[idx] * n_t + torch.randint(0, n_t, (len(idx),), generator=gen)
            uniq, inverse = torch.unique(cap, return_inverse=True)
            img_f = F.normalize(model.encode_image((x - mean) / std), dim=-1)
            txt_f = F.normalize(model.encode_text(tokens[uniq]), dim=-1)[inverse]
            loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            running += loss.item()
            step += 1
        log(f"epoch {epoch + 1}/{epochs}: loss {running / steps_per_epoch:.4f} "
            f"({time.time() - t0:.0f}s, logit_scale {model.logit_scale.exp().item():.1f})")
    train_time = time.time() - t0

    model.eval()
    state = {k: (v if k == "logit_scale" else v.half()) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(output_dir / "open_clip_model.safetensors"),
              metadata={"recipe": "counterclip.training.tiny", "seed": str(seed), "epochs": str(epochs)})
    cfg = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (output_dir / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    info = {"train_time_s": round(train_time, 1), "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "seed": seed, **({"max_images": max_images} if max_images is not None else {}),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "size_bytes": (output_dir / "open_clip_model.safetensors").stat().st_size}
    (output_dir / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    log(f"wrote {output_dir} in {train_time:.0f}s")
    return info
