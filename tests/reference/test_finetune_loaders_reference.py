"""Dev-only yardstick (issue 18): a tower written by ``counterclip finetune`` loads with the peers' own loading
statements and then embeds images bit-identically to ``load_model(..., vision_checkpoint=)``.

- The reference TTC code (COUNTERCLIP_REFERENCE_REPO, a work tree or git directory of
  Sxing2/CLIP-Test-time-Counterattacks, checked at 793fbff):
  ``code/utils.py``'s ``load_resume_file`` and ``load_checkpoints2`` (their un-mapped ``torch.load``, the
  ``epoch`` they print, the ``vision_encoder_state_dict`` they load into ``model.visual`` with ``strict=False``),
  called by the ``if args.victim_resume:`` block of ``code/test_time_counterattack.py``'s main.
- RobustVLM (COUNTERCLIP_ROBUSTVLM_REPO, a work tree or git directory of chs20/RobustVLM, checked at
  7de10ee): the ``if pretrained != 'openai':`` block of ``CLIP_eval/eval_utils.py``'s ``load_clip_model`` (strict
  ``model.visual.load_state_dict``), on the TeCoA file and on the raw ``--format fare`` ``.pt``.

Their statements are read from the snapshot at run time and executed against the embedded tiny model with the
names they use bound here; the one change is that their ``torch.load`` reads with ``weights_only=True`` (the
project never unpickles code, and a file of ours must load that way anyway). Each test skips without its
snapshot; the fine-tuning run behind them happens only when a snapshot is there."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peer_snapshot import definitions

from counterclip.finetune import finetune
from counterclip.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "tiny-fmnist"


class TorchReadingData:
    """``torch`` as their statements see it, except that ``load`` is always ``weights_only=True``."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def load(f, *args, **kwargs):
        return torch.load(f, *args, **{**kwargs, "weights_only": True})


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A function giving the folder of one tiny real TeCoA run (2 steps of 32 images, both file layouts), run on
    first use only, so that a skipped yardstick costs nothing."""
    made = {}

    def get() -> Path:
        if "out" not in made:
            out = tmp_path_factory.mktemp("finetune")
            finetune(out, "tecoa", "toy", log=lambda *a: None, limit=256, max_steps=2, batch_size=32,
                     eval_limit=0, threads=1, format="both")
            made["out"] = out
        return made["out"]

    return get


def peer_source(root: Path, rel: str, tmp: Path) -> tuple[Path, str]:
    """``rel`` (its path and text) from a work tree, else from HEAD of a git directory (a fetched bare
    snapshot), written under ``tmp``."""
    if (root / rel).is_file():
        return root / rel, (root / rel).read_text(encoding="utf-8")
    res = subprocess.run(["git", f"--git-dir={root}", "show", f"HEAD:{rel}"], capture_output=True)
    if res.returncode != 0:
        pytest.fail(f"{root}: holds no {rel} (neither a work tree nor a readable git directory)")
    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp / rel).write_bytes(res.stdout)
    return tmp / rel, res.stdout.decode()


def find_if(tree: ast.AST, source: str, where: str, condition: str) -> ast.If:
    """The one ``if`` statement whose condition reads exactly ``condition`` (inside function ``where``)."""
    func = next((n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == where), None)
    hits = [n for n in ast.walk(func or ast.Module(body=[], type_ignores=[]))
            if isinstance(n, ast.If) and ast.get_source_segment(source, n.test) == condition]
    if len(hits) != 1:
        pytest.fail(f"{where} has {len(hits)} `if {condition}:` blocks, not one: the snapshot differs from the "
                    "one checked")
    return hits[0]


def run_statements(nodes: list, filename: str, namespace: dict) -> dict:
    exec(compile(ast.Module(body=nodes, type_ignores=[]), filename, "exec"), namespace)  # noqa: S102 (theirs)
    return namespace


def assert_loaded_like_ours(model, base, sd: dict, path: Path, images: torch.Tensor) -> None:
    """Every tensor of the tower is the checkpoint's (so ``strict=False`` skipped nothing), the tower moved away
    from the base one, and the embeddings equal ``load_model(vision_checkpoint=path)``'s bit for bit."""
    tower = model.visual.state_dict()
    assert set(tower) == set(sd), (sorted(set(tower) ^ set(sd)))[:8]
    assert all(torch.equal(tower[k], sd[k]) for k in sd)
    base_sd = base.visual.state_dict()
    assert any(not torch.equal(tower[k], base_sd[k]) for k in sd), "their lines left the base tower in place"
    ours = load_model(MODEL, vision_checkpoint=str(path))
    with torch.no_grad():
        theirs_emb, ours_emb, base_emb = (m.encode_image(images) for m in (model, ours, base))
    assert torch.equal(theirs_emb, ours_emb)
    assert not torch.allclose(theirs_emb, base_emb)


def test_ttc_victim_resume_lines_load_our_checkpoint(reference_repo, finetuned, batch, tmp_path):
    utils_path, _ = peer_source(reference_repo, "code/utils.py", tmp_path)
    main_path, main_src = peer_source(reference_repo, "code/test_time_counterattack.py", tmp_path)
    printed = []
    ns = {"os": os, "print": lambda *a, **k: printed.append(" ".join(map(str, a)))}
    definitions(utils_path, ["load_resume_file", "load_checkpoints2"], ns)
    ns["torch"] = TorchReadingData()  # their functions' globals: the reads below are weights_only=True
    tree = ast.parse(main_src, filename=str(main_path))
    dcopy = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "copy"]
    block = find_if(tree, main_src, "main", "args.victim_resume")
    assert "load_checkpoints2" in ast.get_source_segment(main_src, block)

    ckpt = finetuned() / "TeCoA.pth.tar"
    base = load_model(MODEL)
    ns |= {"args": SimpleNamespace(victim_resume=str(ckpt)), "model": load_model(MODEL)}
    run_statements(dcopy + [block], str(main_path), ns)

    assert ns["clip_visual"] is not None  # their TTC-on-a-finetuned-tower branch ran
    assert any(p.startswith("=> loaded checkpoint") and p.endswith("(epoch 1)") for p in printed), printed
    assert not any("no checkpoint found" in p for p in printed)
    sd = torch.load(ckpt, weights_only=True)["vision_encoder_state_dict"]
    assert_loaded_like_ours(ns["model"], base, sd, ckpt, batch[0][:16])
    # their kept copy of the original tower (TTC's tau reference) is the base tower, as ours is
    for k, v in base.visual.state_dict().items():
        assert torch.equal(ns["clip_visual"].state_dict()[k], v), k


@pytest.fixture
def robustvlm_repo():
    path = os.environ.get("COUNTERCLIP_ROBUSTVLM_REPO")
    if not path:
        pytest.skip("no snapshot of RobustVLM (set COUNTERCLIP_ROBUSTVLM_REPO to a clone or its git directory)")
    if not Path(path).is_dir():
        pytest.fail(f"COUNTERCLIP_ROBUSTVLM_REPO={path} is not a folder")
    return Path(path)


@pytest.mark.parametrize("name", ["TeCoA.pth.tar", "TeCoA.pt"])
def test_robustvlm_load_clip_model_lines_load_our_checkpoint(robustvlm_repo, finetuned, batch, name, tmp_path):
    path, src = peer_source(robustvlm_repo, "CLIP_eval/eval_utils.py", tmp_path)
    block = find_if(ast.parse(src, filename=str(path)), src, "load_clip_model", "pretrained != 'openai'")
    ckpt = finetuned() / name
    base = load_model(MODEL)
    ns = {"torch": TorchReadingData(), "pretrained": str(ckpt), "beta": 0.0, "model": load_model(MODEL),
          "print": lambda *a, **k: None}
    run_statements([block], str(path), ns)  # strict load_state_dict: a key mismatch raises here

    obj = torch.load(ckpt, weights_only=True)
    sd = obj["vision_encoder_state_dict"] if name.endswith(".tar") else obj
    assert ("vision_encoder_state_dict" in ns["checkpoint"]) == name.endswith(".tar")
    assert_loaded_like_ours(ns["model"], base, sd, ckpt, batch[0][:16])
