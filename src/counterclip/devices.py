"""``--device`` checked before any work: a device that is not there is one clear line, not a CUDA traceback
half-way through a run."""

from __future__ import annotations

from .errors import CounterclipError


def check_device(name) -> str:
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CounterclipError(f"--device {name}: not a device name torch knows ({e}); use cpu, cuda, "
                               "cuda:N, mps, ...") from None
    if dev.type == "cpu":
        return str(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise CounterclipError(f"--device {name}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise CounterclipError(f"--device {name}: there is no such GPU ({count} visible: "
                                   f"{', '.join(f'cuda:{i}' for i in range(count))})")
        return str(name)
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is not None and not available():
        raise CounterclipError(f"--device {name}: {dev.type} is not available on this machine; use --device cpu")
    try:
        torch.empty(1, device=dev)
    except Exception as e:
        raise CounterclipError(f"--device {name}: cannot allocate on it ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return str(name)
