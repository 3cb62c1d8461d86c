"""``imagefolder``: a folder of class sub-folders (torchvision's ImageFolder); class names from folder names.

Scraped folders hold anything, so every file is checked before it becomes a sample, within bounded memory:
zero-byte files, symlink loops and dangling links, files that are not images (whatever their extension says),
decompression bombs and gigantic images (judged from the header, before any pixel is decoded: more than
``MAX_PIXELS``, settable with ``COUNTERCLIP_MAX_IMAGE_PIXELS``), and images whose data does not decode (lying
or truncated headers). Each is skipped with one warning naming it; the count goes into the records. Directory
symlink loops are walked once (torchvision's own walk follows them until the path is too long, listing the same
images many times).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import CounterclipError

MAX_PIXELS = 64 * 2 ** 20  # ~8k x 8k: at most ~200 MB decoded, RGB


def max_pixels() -> int:
    return int(os.environ.get("COUNTERCLIP_MAX_IMAGE_PIXELS", MAX_PIXELS))


def image_problem(path: str, limit: int | None = None) -> str | None:
    """Why ``path`` cannot be a sample, or None. Reads the header first and decodes only a bounded image."""
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels() if limit is None else limit
    try:
        st = os.stat(path)
    except OSError as e:  # ELOOP: a symlink loop; ENOENT: a dangling link
        return f"unreadable ({e.strerror})"
    if st.st_size == 0:
        return "empty file"
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit  # PIL refuses (does not just warn) above twice this
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # lazy: the header only
                w, h = im.size
                if w * h > limit:
                    return f"too large ({w}x{h} pixels > {limit}; COUNTERCLIP_MAX_IMAGE_PIXELS raises the limit)"
                im.load()  # decodes: a lying or truncated header fails here, not in the middle of a run
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return f"decompression bomb ({e})"
    except UnidentifiedImageError:
        return "not an image"
    except Exception as e:  # noqa: BLE001 - any decoder error means: not a usable image
        return f"does not decode ({type(e).__name__}: {e})"
    finally:
        Image.MAX_IMAGE_PIXELS = old
    return None


def _walk(top: Path, skipped: list, seen: set) -> list[str]:
    """Files under a class folder ``top``, following directory links but entering each real directory once:
    ``seen`` holds the (device, inode) of the dataset root and of every class folder, so a link back up (a
    loop) or into another class is walked never, not once per class."""
    files = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True, onerror=lambda e: skipped.append(
            (e.filename, f"unreadable directory ({e.strerror})"))):
        st = os.stat(dirpath)
        if dirpath != str(top) and (st.st_dev, st.st_ino) in seen:
            skipped.append((dirpath, "symlink loop or link to a folder walked elsewhere; not followed"))
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        files += [os.path.join(dirpath, f) for f in sorted(filenames)]
    return files


def build(data_root, transform):
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if data_root is None:
        raise CounterclipError("imagefolder needs --data-root DIR (a folder with one sub-folder per class)")
    root = Path(data_root)
    if not root.is_dir():
        raise CounterclipError(f"imagefolder: {root} is not a directory (expected one sub-folder per class)")
    skipped: list[tuple[str, str]] = []

    class SafeImageFolder(ImageFolder):
        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
            samples = []
            tops = [Path(directory)] + [Path(directory) / c for c in class_to_idx]
            seen = {(st.st_dev, st.st_ino) for st in map(os.stat, tops)}
            for cls in sorted(class_to_idx):
                for path in _walk(Path(directory) / cls, skipped, seen):
                    if not path.lower().endswith(IMG_EXTENSIONS):
                        continue
                    problem = image_problem(path)
                    if problem is None:
                        samples.append((path, class_to_idx[cls]))
                    else:
                        skipped.append((path, problem))
            return samples

    try:
        ds = SafeImageFolder(str(root), transform=transform, allow_empty=True)
    except (FileNotFoundError, RuntimeError) as e:
        raise CounterclipError(f"imagefolder: {e}") from None
    for path, why in skipped:
        warnings.warn(f"imagefolder: skipping {path}: {why}", stacklevel=2)
    ds.skipped = len(skipped)
    if not ds.samples:
        raise CounterclipError(f"imagefolder: no readable images under {root}")
    classnames = [c.replace("_", " ") for c in ds.classes]
    return ds, classnames
