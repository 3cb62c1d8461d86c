"""Ship a trained tower as package data: the checkpoint's tower in fp16 safetensors (half the bytes; upcast to
fp32 at load, as the embedded model's weights are), with the run's ``counterclip`` block as JSON metadata."""

from __future__ import annotations

import json
from pathlib import Path


def ship_tower(checkpoint, dest) -> Path:
    from safetensors.torch import save_file

    from ..models.checkpoints import extract_vision_state_dict, read_state_dict

    obj = read_state_dict(checkpoint)
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous()
          for k, v in extract_vision_state_dict(obj).items()}
    meta = obj.get("counterclip", {}) if isinstance(obj, dict) else {}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dest), metadata={"counterclip": json.dumps(meta, sort_keys=True), "dtype": "float16",
                                      "source": Path(checkpoint).name})
    return dest


def shipped_metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("counterclip", "{}"))


__all__ = ["ship_tower", "shipped_metadata"]
