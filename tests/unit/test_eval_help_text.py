"""eval --help shows the real defaults and examples that parse."""

import shlex

from counterclip.cli import build_parser
from counterclip.cli_commands import EVAL_EXAMPLES, eval_config


def _eval_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices["eval"].format_help()


def test_help_shows_real_defaults_not_none():
    _, text = _eval_help()
    flat = " ".join(text.split())
    assert "(default: None)" not in flat and "(default: False)" not in flat
    for shown in ("--eps", "(default: 1/255;", "(default: 10;", "(default: auto;", "(default: clip;",
                  "(default: 4/255)", "(default: every test image)", "(default: 64)"):
        assert shown in flat, shown


def test_help_examples_parse_and_build_configs():
    parser, text = _eval_help()
    assert "examples:" in text and "counterclip report" in text
    commands = [c for c in EVAL_EXAMPLES.replace("\\\n", " ").splitlines() if c.strip().startswith("counterclip eval")]
    assert len(commands) >= 3
    for line in commands:
        argv = shlex.split(line.split("#")[0])[1:]
        cfg = eval_config(parser.parse_args(argv))
        if not any(":" in d for d in cfg.defenses):  # a plugin needs its file; the rest validate fully
            cfg.validate()
