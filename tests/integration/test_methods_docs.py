"""docs/methods.md is the registries' own output (``counterclip methods --markdown``): a method registered
without regenerating it fails here, so the docs' tables never drift from the code."""

import re
from pathlib import Path

from counterclip.methods import markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "methods.md"


def test_docs_methods_table_is_generated_from_the_registries():
    assert DOC.read_text() == markdown(), "run `counterclip methods --markdown > docs/methods.md`"


def test_every_registered_defense_and_attack_is_in_the_eval_help():
    from counterclip.attacks import ADAPTIVE, ATTACKS
    from counterclip.cli import build_parser
    from counterclip.defenses import DEFENSES

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    text = re.sub(r"-\s+", "-", sub.choices["eval"].format_help())  # argparse wraps lines at hyphens
    for name in [*DEFENSES.names(), *ATTACKS.names(), *ADAPTIVE.names()]:
        assert name in text, f"{name} missing from eval --help"
