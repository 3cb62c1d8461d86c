"""The ``counterclip`` command line: thin argument parsing over the library."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import CounterclipError
from .evaluation.signals import Preempted


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="tiny-fmnist (embedded, the default), an open_clip architecture (ViT-B-32), hf-hub:ORG/REPO, "
                        "local-dir:PATH, or hf:<hub id or dir>")
    p.add_argument("--pretrained", default=None,
                   help="open_clip pretrained tag (openai, laion2b_s34b_b79k, ...) or a local checkpoint file; "
                        "'random' for random initialisation")
    p.add_argument("--vision-checkpoint", default=None,
                   help="robust finetuned vision tower (TeCoA / PMG-AFT / FARE .pth.tar or safetensors)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def _add_data_args(p: argparse.ArgumentParser, required=True) -> None:
    p.add_argument("--dataset", required=required, help="registry key (fashion-mnist, imagefolder, ...)")
    p.add_argument("--data-root", default=None, help="where the dataset lives (imagefolder: its root folder)")
    p.add_argument("--download", action="store_true",
                   help="fetch a missing dataset: torchvision where its download works, else its webdataset mirror")
    p.add_argument("--allow-partial", action="store_true",
                   help="evaluate a dataset whose sample count differs from the known one (the record says so)")
    p.add_argument("--limit", type=int, default=None, help="evaluate N samples (picked with --seed)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)


def _add_prompts_arg(p: argparse.ArgumentParser, default="clip") -> None:
    p.add_argument("--prompts", choices=["clip", "reference"], default=default,
                   help="class names and templates: clip (curated lists) or reference (exactly as the reference "
                        "TTC code forms them; see `counterclip datasets show KEY --prompts reference`)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="counterclip",
        description="Test-time counterattacks (TTC) and zero-shot adversarial robustness evaluation for CLIP.")
    parser.add_argument("--version", action="version", version=f"counterclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("zeroshot", help="zero-shot top-1 accuracy of a model on a dataset (one JSON record)")
    _add_model_args(p)
    _add_data_args(p)
    _add_prompts_arg(p)
    p.add_argument("--output", required=True, help="directory for the JSON record")
    p.set_defaults(func=_cmd_zeroshot)

    p = sub.add_parser("train-tiny", help="retrain the tiny-fmnist CLIP into a folder (about 10 minutes on 2 CPU "
                                          "cores); use it with --model local-dir:FOLDER",
                       epilog="example: counterclip train-tiny --output my-tiny && counterclip zeroshot --model "
                              "local-dir:my-tiny --dataset fashion-mnist --output zeroshot-my-tiny")
    p.add_argument("--output", required=True,
                   help="model folder to write (open_clip local-dir layout); load it with --model local-dir:FOLDER")
    p.add_argument("--overwrite-embedded", action="store_true",
                   help="allow --output to be the package's own tiny-fmnist folder (replaces the shipped model)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (the shipped weights used 2)")
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=_cmd_train_tiny)

    from . import cli_build, cli_commands, cli_datasets, cli_finetune, methods

    cli_commands.register(sub, _add_model_args, _add_data_args)
    cli_finetune.register(sub, _add_model_args)
    cli_datasets.register(sub)
    cli_build.register(sub)
    methods.register(sub)
    return parser


def _cmd_zeroshot(args) -> int:
    from .evaluation.zeroshot import run_zeroshot

    rec = run_zeroshot(args.model or "tiny-fmnist", args.dataset, args.output, pretrained=args.pretrained,
                       vision_checkpoint=args.vision_checkpoint, data_root=args.data_root, download=args.download,
                       limit=args.limit, batch_size=args.batch_size, device=args.device, seed=args.seed,
                       prompts=args.prompts, allow_partial=args.allow_partial)
    m = rec["metrics"]
    lo, hi = m["clean_acc_ci95"]
    print(f"{rec['model']} on {rec['dataset']}: top-1 {m['clean_acc']:.4f} (95% CI {lo:.4f}-{hi:.4f}, "
          f"n={m['n_samples']}) -> {rec['_path']}")
    return 0


def _cmd_train_tiny(args) -> int:
    from .training.tiny import train_tiny

    train_tiny(args.output, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
               data_root=args.data_root, threads=args.threads, overwrite_embedded=args.overwrite_embedded)
    print(f"use it with --model local-dir:{args.output} (Python: counterclip.load_model('local-dir:{args.output}'))")
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"counterclip: warning: {message}\n"


def main(argv=None) -> int:
    import warnings

    saved = warnings.formatwarning, warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        from tqdm import tqdm

        # a warning during a progress bar: tqdm clears the bar and redraws it after (printed plainly, the
        # warning was glued to the end of the bar's line); still recorded where warnings are being caught
        with tqdm.external_write_mode(file=file or sys.stderr):
            saved[1](message, category, filename, lineno, file, line)

    warnings.formatwarning, warnings.showwarning = _one_line_warning, show  # one line naming the file
    try:
        return _main(argv)
    finally:
        warnings.formatwarning, warnings.showwarning = saved


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "device", None) is not None:
            from .devices import check_device

            check_device(args.device)
        return int(args.func(args) or 0)
    except CounterclipError as e:
        print(f"counterclip: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `counterclip datasets show imagenet | head`: the reader left, not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, as a shell tool killed by the pipe
    except (ValueError, OSError) as e:  # bad budgets, unwritable --output, ...: one line, no traceback
        print(f"counterclip: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncounterclip: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Preempted as e:  # SIGTERM / SIGINT: finished chunks and records are saved
        rank = os.environ.get("RANK")
        print(f"\ncounterclip: {e}{f' (rank {rank})' if rank else ''}; finished work is saved: re-run the same "
              "command to resume", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
