"""Hugging Face transformers CLIP (``hf:<hub id or local dir>``), through the ``hf`` extra."""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ..errors import CounterclipError
from .clip_model import ClipModel
from .preprocessing import from_hf_processor


class _HFVision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


class _HFText:
    """list of str -> text embeddings; a plain object so that the model pickles and deep-copies cleanly."""

    def __init__(self, model, tokenizer, max_len: int):
        self.model, self.tokenizer, self.max_len = model, tokenizer, max_len

    def __call__(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        enc = {k: v.to(next(self.model.parameters()).device) for k, v in enc.items()}
        out = self.model.get_text_features(**enc)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    # token-embedding access (R-TPT's learnable context): the text model after the embedding lookup (positions
    # added by its embeddings module, causal + padding mask, final norm, EOS pooling, projection), as
    # ``CLIPTextModel.forward`` does; tests/test_hf_backend.py checks that the two agree
    def tokenize(self, texts):
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
        dev = next(self.model.parameters()).device
        return {"ids": enc["input_ids"].to(dev), "attention_mask": enc["attention_mask"].to(dev)}

    def embed(self, ids):
        return self.model.text_model.embeddings.token_embedding(ids)

    def encode_embeddings(self, embeds, tokens):
        from transformers.masking_utils import create_causal_mask

        text = self.model.text_model
        ids = tokens["ids"]
        hidden = text.embeddings(inputs_embeds=embeds)
        mask = create_causal_mask(config=text.config, inputs_embeds=hidden, attention_mask=tokens["attention_mask"],
                                  cache=None)
        out = text.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True)
        last = text.final_layer_norm(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0])
        rows = torch.arange(last.shape[0], device=last.device)
        if text.eos_token_id == 2:  # legacy configs: the EOS token has the largest id
            pos = ids.to(torch.int).argmax(dim=-1)
        else:
            pos = (ids.to(torch.int) == text.eos_token_id).int().argmax(dim=-1)
        return self.model.text_projection(last[rows, pos])


_PROBES = ("a photo of a cat.", "a sketch of the sea")


def _check_tokenizer(tokenizer, ident: str) -> None:
    """A folder saved without its tokenizer files still loads a tokenizer that maps every word to the unknown
    token, so every class prompt gets the same text embedding: refuse it."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = [[i for i in tokenizer(t)["input_ids"] if i not in special or i == unk] for t in _PROBES]
    if ids[0] == ids[1] or all(i == unk for i in ids[0] + ids[1]):
        raise CounterclipError(
            f"hf model {ident!r} has no usable tokenizer (every word maps to the unknown token, so all classes "
            "would get the same text embedding): save it beside the model (tokenizer.save_pretrained(DIR): "
            "vocab.json + merges.txt or tokenizer.json)")


# transformers' weight files that are pickles: reading one runs whatever code its pickle names
_PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def refuse_pickled_weights(folder: str) -> None:
    """Refuse a save_pretrained folder whose weights are pickled (no ``.safetensors`` to read instead), before
    transformers opens anything; ``build`` then asks transformers for safetensors only."""
    import json

    names = os.listdir(folder)
    try:  # a config may name its weights file itself ("transformers_weights"), which transformers reads first
        with open(os.path.join(folder, "config.json")) as f:
            named = json.load(f).get("transformers_weights")
    except (OSError, ValueError, AttributeError):
        named = None
    named_pickle = isinstance(named, str) and named.endswith(_PICKLED)
    if any(n.endswith(".safetensors") for n in names) and not named_pickle:
        return
    pickled = sorted(n for n in names if n.endswith(_PICKLED) or n.endswith(".bin.index.json"))
    if pickled or named_pickle:
        shown = ", ".join(([named] if named_pickle else []) + pickled[:4])
        raise CounterclipError(
            f"refusing to load hf model {folder}: its weights ({shown}) are a pickle, which can run code when read; "
            "counterclip reads Hugging Face weights only from a .safetensors file. Convert once, on a machine "
            "where you trust the file: python -c \"from transformers import CLIPModel; "
            f"CLIPModel.from_pretrained('{folder}').save_pretrained('{folder}')\" (writes model.safetensors)")


def _is_local_path(ident: str) -> bool:
    return ident.startswith(("/", "./", "../", "~", ".\\")) or os.path.isabs(ident) or os.path.isdir(ident)


def build(name: str, device="cpu") -> ClipModel:
    ident = name[len("hf:"):]
    local = _is_local_path(ident)
    if local:
        ident = os.path.expanduser(ident)
        if not os.path.isdir(ident):
            raise CounterclipError(f"hf: model directory not found: {ident} (expected a folder written by "
                                   "save_pretrained, with config.json, the weights and the tokenizer files)")
        refuse_pickled_weights(ident)
    try:
        import transformers
    except ImportError:
        raise CounterclipError("hf: models need transformers: pip install 'counterclip[hf]'") from None
    from .openclip_backend import hub_access

    mean, std, interp = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711), "bicubic"
    with contextlib.nullcontext() if local else hub_access():
        try:
            # safetensors only (a hub repo with pickled weights alone is refused too); no trust_remote_code: a
            # folder's own modelling code never runs
            model = transformers.CLIPModel.from_pretrained(ident, use_safetensors=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(ident)
        except (OSError, ValueError) as e:  # ValueError: huggingface_hub's HFValidationError for a malformed id
            reason = str(e).strip().splitlines()[0]
            raise CounterclipError(
                f"could not load Hugging Face CLIP {ident!r} ({reason[:300]}). Offline: pass a local directory "
                "(hf:/path/to/dir with config.json and weights) or pre-fill the Hugging Face cache (HF_HOME) on a "
                "machine with network and set HF_HUB_OFFLINE=1") from None
        _check_tokenizer(tokenizer, ident)
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(ident)
            mean, std = tuple(proc.image_mean), tuple(proc.image_std)
        except Exception:  # no preprocessor_config.json: CLIP's own statistics and geometry
            proc = None
    max_len = getattr(model.config.text_config, "max_position_embeddings", 77)
    image_size = model.config.vision_config.image_size
    try:
        geometry = from_hf_processor(proc, image_size) if proc is not None else None
    except ValueError as e:
        raise CounterclipError(f"hf model {ident!r}: {e}") from None
    if geometry is not None:
        interp = geometry.interpolation if geometry.interpolation in ("bicubic", "bilinear") else "bilinear"

    clip = ClipModel(_HFVision(model), _HFText(model, tokenizer, max_len),
                     image_size=image_size, logit_scale=model.logit_scale.exp().item(), mean=mean, std=std,
                     interpolation=interp, name=name, pretrained=None, backbone=model, geometry=geometry)
    acts = {model.config.vision_config.hidden_act, model.config.text_config.hidden_act}
    clip.activation = acts.pop() if len(acts) == 1 else "mixed"
    return clip.to(device)
