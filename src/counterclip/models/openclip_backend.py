"""open_clip backend: architectures with a pretrained tag, a local checkpoint, ``hf-hub:`` ids and ``local-dir:``."""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

from torch import nn

from ..errors import CounterclipError, UnknownNameError
from .checkpoints import checkpoint_allowlist, load_strict, refusal_error
from .clip_model import ClipModel
from .torchscript import is_torchscript_archive, read_torchscript_state_dict, uses_quick_gelu
from .preprocessing import from_open_clip

_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_reachable(endpoint: str, timeout: float) -> bool:
    """A TCP connection to the hub endpoint within ``timeout`` s (a thread, since DNS itself can hang)."""
    if any(os.environ.get(v) for v in _PROXY_VARS):  # reachable only through the proxy: let the hub client try
        return True
    url = urlparse(endpoint)
    if not url.hostname:
        return True
    port = url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


@contextlib.contextmanager
def hub_access(timeout: float = 3.0):
    """Fail fast without network. huggingface_hub retries an unreachable hub 5 times per file with backoff
    (about 25 s a file, 50 s for an open_clip tag); when ``HF_HUB_OFFLINE`` is set (even after import) or the
    endpoint does not answer within ``timeout``, run in its offline mode instead: cached files still load,
    missing ones fail at once."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield False
        return
    old = constants.HF_HUB_OFFLINE
    offline = bool(old or _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")
                   or not _hub_reachable(constants.ENDPOINT, timeout))
    constants.HF_HUB_OFFLINE = offline
    try:
        yield offline
    finally:
        constants.HF_HUB_OFFLINE = old


@contextlib.contextmanager
def _quiet_root_logging():
    """open_clip logs its failures on the root logger before raising; the user gets our one-line error."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def _offline_error(what: str, e: Exception) -> CounterclipError:
    reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return CounterclipError(
        f"could not get weights for {what} ({reason[:300]}). No network, or no cached copy: pass a local "
        "checkpoint file with --pretrained PATH (e.g. open_clip_pytorch_model.bin / .safetensors), or pre-fill "
        "the Hugging Face cache (HF_HOME / HF_HUB_CACHE) on a machine with network and set HF_HUB_OFFLINE=1")


def build(name: str, pretrained: str | None, device="cpu", random_init: bool = False) -> ClipModel:
    import open_clip

    arch = name
    load_weights = not random_init
    scripted = None  # a TorchScript archive's tensors, loaded after the model is built
    if name.startswith(("hf-hub:", "local-dir:")):
        kwargs = {}
        label = name
    else:
        if arch not in open_clip.list_models():
            from .registry import EMBEDDED

            raise UnknownNameError("model", name, list(EMBEDDED) + open_clip.list_models()
                                   + ["hf:<hub id or local dir>", "hf-hub:<org/repo>"])
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained is None:
            raise CounterclipError(f"model {arch!r} needs --pretrained: one of {', '.join(tags) or '(no tags)'}, "
                                   "a local checkpoint file, or 'random' for random initialisation")
        if pretrained == "random":
            load_weights = False
        elif pretrained not in tags and not os.path.isfile(pretrained):
            raise CounterclipError(f"unknown pretrained tag {pretrained!r} for {arch}, and no such file; valid "
                                   f"tags: {', '.join(tags) or '(none)'}")
        kwargs = {"pretrained": None if pretrained == "random" else pretrained}
        if pretrained in tags and open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu"):
            kwargs["force_quick_gelu"] = True  # OpenAI weights were trained with QuickGELU (spec section 7)
        elif pretrained != "random" and is_torchscript_archive(pretrained):
            # OpenAI's own .pt release: read as data, never run; its module classes say which activation it has
            scripted, classes = read_torchscript_state_dict(pretrained)
            kwargs.update(pretrained=None, force_quick_gelu=uses_quick_gelu(classes))
            load_weights = False
        elif pretrained != "random":
            _warn_activation(arch, tags)
        label = f"{arch} / {pretrained}"
    from_hub = name.startswith("hf-hub:") or (load_weights and kwargs.get("pretrained") is not None
                                              and not os.path.isfile(kwargs["pretrained"]))
    with hub_access() if from_hub else contextlib.nullcontext(), _quiet_root_logging(), checkpoint_allowlist():
        try:
            model = open_clip.create_model(name, load_weights=load_weights, device=device, weights_only=True,
                                           **kwargs)
            tokenizer = open_clip.get_tokenizer(name)
        except pickle.UnpicklingError as e:  # a local file that needs more than weights_only=True allows
            raise refusal_error(_weights_file(name, pretrained), e) from None
        except (RuntimeError, OSError, ValueError) as e:
            if not from_hub:
                raise CounterclipError(f"cannot load {name}: {e}") from None
            raise _offline_error(label, e) from None
    if scripted is not None:  # a scripted module also stores non-persistent buffers (attn_mask): not weights
        transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())
        load_strict(model, {k: v for k, v in scripted.items() if k not in transient},
                    f"TorchScript archive {pretrained}", f"the {arch} architecture")
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    image_size = model.visual.image_size
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size

    clip = ClipModel(model.visual, OpenClipText(model, tokenizer), image_size=image_size, logit_scale=model.logit_scale.exp().item(),
                     mean=pp.get("mean", None) or (0.48145466, 0.4578275, 0.40821073),
                     std=pp.get("std", None) or (0.26862954, 0.26130258, 0.27577711),
                     interpolation=_interp(pp.get("interpolation", "bicubic")), name=name, pretrained=pretrained,
                     backbone=model, geometry=from_open_clip(pp, image_size))
    clip.activation = activation_of(model)
    return clip.to(device)


def _weights_file(name: str, pretrained) -> Path:
    """The file open_clip read for ``name`` (for a ``local-dir:`` folder, the checkpoint it picks there)."""
    if name.startswith("local-dir:"):
        try:
            from open_clip.factory import _find_checkpoint_in_dir  # open_clip's own choice, not a second copy
        except ImportError:
            return Path(name.split(":", 1)[1])
        found = _find_checkpoint_in_dir(Path(name.split(":", 1)[1]).expanduser())
        return Path(found or name.split(":", 1)[1])
    return Path(str(pretrained if pretrained is not None else name))


class OpenClipText:
    """list of str -> text embeddings. A plain object, not a closure: the model pickles (``torch.save``) and a
    deep copy encodes text with its own copied weights."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def __call__(self, texts):
        tokens = self.tokenizer(texts).to(next(self.model.parameters()).device)
        return self.model.encode_text(tokens)

    # token-embedding access (R-TPT's learnable context): ``CLIP.encode_text`` after the embedding lookup, for
    # open_clip's CLIP (and a CustomTextCLIP whose ``text`` tower is a plain TextTransformer); tests/test_rtpt.py
    # checks that the two agree
    @property
    def _tower(self):
        tower = self.model.text if hasattr(self.model, "text") else self.model
        if not hasattr(tower, "token_embedding") or getattr(tower, "cls_emb", None) is not None:
            raise NotImplementedError("this open_clip text tower has no plain token-embedding layer")
        return tower

    def tokenize(self, texts):
        return {"ids": self.tokenizer(texts).to(next(self.model.parameters()).device), "attention_mask": None}

    def embed(self, ids):
        return self._tower.token_embedding(ids)

    def encode_embeddings(self, embeds, tokens):
        from open_clip.transformer import text_global_pool

        tower = self._tower
        cast = tower.transformer.get_cast_dtype()
        n = embeds.shape[1]  # may be shorter than the context length (a causal prompt cut after its end token)
        x = embeds.to(cast) + tower.positional_embedding[:n].to(cast)
        mask = tower.attn_mask[:n, :n] if tower.attn_mask is not None else None
        x = tower.transformer(x, attn_mask=mask)
        x = tower.ln_final(x)
        x = text_global_pool(x, tokens["ids"], getattr(tower, "text_pool_type", "argmax"),
                             eos_token_id=getattr(tower, "text_eos_id", None))
        proj = tower.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return x


def _warn_activation(arch: str, tags: list[str]) -> None:
    """A local checkpoint under a plain-GELU architecture that open_clip also lists QuickGELU weights for (OpenAI's):
    a state dict cannot say which activation it was trained with, so say it once rather than guess."""
    import open_clip

    cfg = open_clip.get_model_config(arch) or {}
    if cfg.get("quick_gelu"):
        return
    quick = [t for t in tags if open_clip.get_pretrained_cfg(arch, t).get("quick_gelu")]
    if not quick:
        return
    alt = f"{arch}-quickgelu"
    fix = f"use --model {alt}" if alt in open_clip.list_models() else "build it with QuickGELU"
    warnings.warn(f"{arch} builds plain GELU, but open_clip's {', '.join(quick)} weights for it were trained with "
                  f"QuickGELU; if this checkpoint holds such weights, {fix} (a state dict cannot tell which "
                  "activation it was trained with)", UserWarning, stacklevel=4)


def activation_of(model) -> str:
    """``quick_gelu``, ``gelu`` or ``mixed``: the MLP activation(s) the built network really uses."""
    from open_clip.transformer import QuickGELU
    from torch import nn

    kinds = {"quick_gelu" if isinstance(m, QuickGELU) else "gelu" for m in model.modules()
             if isinstance(m, (QuickGELU, nn.GELU))}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "none")


def _interp(name: str) -> str:
    return name if name in ("bicubic", "bilinear", "nearest") else "bicubic"
