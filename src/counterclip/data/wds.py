"""Webdataset mirrors in CLIP_benchmark's layout (``--dataset wds/<name>``).

A mirror is a folder (or the Hugging Face dataset repo ``clip-benchmark/wds_<name with / -> ->``) holding::

    <split>/nshards.txt          number of shards N
    <split>/0.tar .. <N-1>.tar   samples: __key__, one image under webp/png/jpg/jpeg, the label under cls
    classnames.txt               one class name per line, in label order
    zeroshot_classification_templates.txt

It is found, in this order: ``--data-root`` itself when it is such a copy; ``<data root>/wds_<name>`` (so one
parent folder serves a comma list of datasets); the Hugging Face cache (never touching the network); with
``--download``, the hub repo fetched into that cache by ``huggingface_hub`` (offline mode honoured; without
network the fetch fails at once, see ``models.openclip_backend.hub_access``).

Samples are read in webdataset's order (shards 0..N-1, members in tar order, consecutive files with the same
key form one sample, as ``webdataset``'s ``group_by_keys`` does) and decoded with webdataset's own
``ImageHandler("pil")``, so sample ``i`` here is the ``i``-th sample CLIP_benchmark streams. A per-shard index
of member offsets gives random access, which the evaluation grid needs for ``--limit`` and sharding.
"""

from __future__ import annotations

import re
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import CounterclipError

HUB_ORG = "clip-benchmark"
IMAGE_EXTS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's to_tuple order
META_FILES = ("classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt")
_SKIP_META = re.compile(r"__[^/]*__($|/)")  # webdataset's tar_file_iterator skips these members


def cleaned(name: str) -> str:
    """CLIP_benchmark's ``dataset_cleaned``: ``vtab/cifar10`` -> ``vtab-cifar10``."""
    return name.replace("/", "-")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*")


def valid_name(name: str) -> bool:
    """``name`` of ``wds/<name>`` is usable as a hub repo id and as folders under ``--output``."""
    return bool(_NAME.fullmatch(name)) and ".." not in name


def repo_id(name: str) -> str:
    """The hub repo of ``wds/<name>``: ``clip-benchmark/wds_<name with / replaced by ->``."""
    return f"{HUB_ORG}/wds_{cleaned(name)}"


def is_mirror_copy(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "classnames.txt").is_file()
                                or any(folder.glob("*/nshards.txt")))


def local_copy(name: str, data_root) -> Path | None:
    """``data_root/wds_<name>`` when that is a copy of the mirror, else ``data_root`` itself when it is a copy
    (and not visibly another dataset's: a folder named ``wds_<other>``)."""
    if data_root is None:
        return None
    root = Path(data_root).expanduser()
    sub = root / f"wds_{cleaned(name)}"
    if is_mirror_copy(sub):
        return sub
    if is_mirror_copy(root) and not (root.name.startswith("wds_") and root.name != sub.name):
        return root
    return None


def _patterns(split: str) -> list[str]:
    return [f"{split}/*", *META_FILES]


def cached_copy(name: str, split: str) -> Path | None:
    """The hub repo's snapshot in the Hugging Face cache, looked up without any network access."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        path = Path(snapshot_download(repo_id(name), repo_type="dataset", local_files_only=True,
                                      allow_patterns=_patterns(split)))
    except Exception:  # LocalEntryNotFoundError, a malformed id, an unreadable cache: not cached
        return None
    return path if (path / split / "nshards.txt").is_file() else None


def hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:
        return "~/.cache/huggingface/hub"


def fetch(name: str, split: str) -> Path:
    """Download the mirror's ``split`` and metadata files into the Hugging Face cache (one line on failure)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CounterclipError("--download of a webdataset mirror needs huggingface_hub: "
                               "pip install huggingface_hub") from None
    from ..models.openclip_backend import hub_access

    repo = repo_id(name)
    with hub_access() as offline:
        try:
            return Path(snapshot_download(repo, repo_type="dataset", allow_patterns=_patterns(split)))
        except Exception as e:  # offline + not cached, 404, auth, disk full: one line naming the repo
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            why = "no network (offline mode) and no cached copy" if offline else reason
            raise CounterclipError(
                f"could not fetch the webdataset mirror {repo} (dataset wds/{name}) into the Hugging Face cache "
                f"{hub_cache_dir()}: {why}. Copy the repo onto this machine and pass --data-root DIR "
                f"(DIR/wds_{cleaned(name)} or the copy itself), or pre-fill the cache where there is network"
            ) from None


def locate(name: str, split: str, data_root, download: bool) -> tuple[Path, str]:
    """(folder of the mirror, how it was found) or one ``CounterclipError`` line naming every place looked."""
    from .paper import default_data_root

    root = default_data_root(data_root)
    found = local_copy(name, root)
    if found is not None:
        return found, "local copy"
    found = cached_copy(name, split)
    if found is not None and not (download and missing_shards(found, split)):
        return found, "Hugging Face cache"
    if download:  # not cached, or an interrupted download: huggingface_hub fetches what the cache lacks
        return fetch(name, split), "downloaded into the Hugging Face cache"
    raise CounterclipError(
        f"dataset wds/{name}: no copy of the mirror {repo_id(name)} with a {split}/ split in {root} (or "
        f"{root / ('wds_' + cleaned(name))}) nor in the Hugging Face cache {hub_cache_dir()}. Pass --download to "
        f"fetch it from the hub, or --data-root pointing at a local copy")


def read_lines(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def missing_shards(folder: Path, split: str) -> list[str]:
    """The shard files ``<split>/nshards.txt`` promises that are not in ``folder`` (an unreadable count: none)."""
    try:
        n = int((folder / split / "nshards.txt").read_text().strip())
    except (OSError, ValueError):
        return []
    return [f"{i}.tar" for i in range(n) if not (folder / split / f"{i}.tar").is_file()]


def splits_of(folder: Path) -> list[str]:
    return sorted(p.parent.name for p in folder.glob("*/nshards.txt"))


@dataclass(frozen=True)
class Sample:
    shard: int
    key: str
    ext: str
    offset: int
    size: int
    label: int


def index_shard(path: Path, shard: int) -> list[Sample]:
    """The samples of one shard, webdataset's grouping: consecutive members with the same key, the suffix after
    the key's first dot, lower-cased; ``__*__`` members skipped."""
    from webdataset.tariterators import base_plus_ext

    groups: list[tuple[str, dict]] = []
    with tarfile.open(path, "r:") as tar:
        for m in tar:
            if not m.isfile() or _SKIP_META.match(m.name):
                continue
            prefix, suffix = base_plus_ext(m.name)
            if prefix is None:
                continue
            suffix = suffix.lower()
            if not groups or groups[-1][0] != prefix:
                groups.append((prefix, {}))
            members = groups[-1][1]
            if suffix in members:
                raise CounterclipError(f"{path}: duplicate member {m.name} (a corrupt shard?)")
            if suffix == "cls":
                members["cls"] = tar.extractfile(m).read()
            else:
                members[suffix] = (m.offset_data, m.size)
        end = tar.offset  # where the end-of-archive marker (two zero blocks) starts
    if path.stat().st_size < end + 1024:
        raise CounterclipError(f"{path}: unreadable shard (truncated: no end-of-archive marker after "
                               f"{len(groups)} samples), a half-downloaded copy?")
    samples = []
    for key, members in groups:
        ext = next((e for e in IMAGE_EXTS if e in members), None)
        if ext is None or "cls" not in members:
            raise CounterclipError(f"{path}: sample {key!r} lacks an image (webp/png/jpg) or its cls label "
                                   f"(has {', '.join(sorted(members)) or 'nothing'})")
        try:
            label = int(members["cls"].decode().strip())
        except ValueError:
            raise CounterclipError(f"{path}: sample {key!r} has a non-integer cls label") from None
        offset, size = members[ext]
        samples.append(Sample(shard, key, ext, offset, size, label))
    return samples


class WdsMirror(Dataset):
    """Map-style view of a mirror split; items are ``(transform(PIL RGB image), label)``."""

    def __init__(self, folder: Path, split: str, transform=None, allow_partial: bool = False):
        self.folder, self.split, self.transform = Path(folder), split, transform
        nfile = self.folder / split / "nshards.txt"
        try:
            self.nshards = int(nfile.read_text().strip())
        except (OSError, ValueError):
            raise CounterclipError(f"{nfile}: missing or not a number (the mirror's shard count)") from None
        self.shards = [self.folder / split / f"{i}.tar" for i in range(self.nshards)]
        missing = [self.folder / split / m for m in missing_shards(self.folder, split)]
        if missing and not allow_partial:
            raise CounterclipError(f"{self.folder / split}: {len(missing)} of {self.nshards} shards missing "
                                   f"({missing[0].name} first): an incomplete copy (--download completes a copy in "
                                   "the Hugging Face cache; or pass --allow-partial to use what is there; the "
                                   "record then says so)")
        self.missing_shards = [p.name for p in missing]
        self.samples: list[Sample] = []
        for i, p in enumerate(self.shards):
            if p.is_file():
                try:
                    self.samples += index_shard(p, i)
                except (tarfile.TarError, OSError) as e:
                    raise CounterclipError(f"{p}: unreadable shard ({type(e).__name__}: {e})") from None
        self._local = threading.local()
        self._opened: list = []  # every thread's shard files, for close()
        from webdataset.autodecode import ImageHandler

        self._decode = ImageHandler("pil", extensions=list(IMAGE_EXTS))

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    def __len__(self):
        return len(self.samples)

    def _file(self, shard: int):
        files = getattr(self._local, "files", None)
        if files is None:
            files = self._local.files = {}
        if shard not in files:
            files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 - kept open per thread, closed by close()
            self._opened.append(files[shard])
        return files[shard]

    def close(self) -> None:
        """Close the shard files every thread opened (also when the dataset is garbage-collected)."""
        for f in self.__dict__.get("_opened", []):
            f.close()
        self._opened = []
        self._local = threading.local()

    def __del__(self):
        self.close()

    def raw(self, i: int) -> tuple[bytes, str]:
        s = self.samples[i]
        f = self._file(s.shard)
        f.seek(s.offset)
        return f.read(s.size), s.ext

    def __getitem__(self, i):
        data, ext = self.raw(int(i))
        s = self.samples[int(i)]
        try:
            image = self._decode(ext, data)
        except Exception as e:  # PIL's own message names a BytesIO object, not the sample
            raise CounterclipError(f"{self.shards[s.shard]}: sample {s.key!r} ({ext}, {s.size} bytes) is not a "
                                   f"decodable image ({type(e).__name__}); a damaged copy: re-fetch that shard"
                                   ) from None
        return (self.transform(image) if self.transform is not None else image), s.label

    def __getstate__(self):  # DataLoader workers: reopen files in each process
        state = dict(self.__dict__)
        state.pop("_local", None)
        state.pop("_opened", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()
        self._opened = []
