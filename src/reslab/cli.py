"""The `reslab` command: thin argparse subcommands over typed library functions.

Each subcommand has an `_add_<name>(sub)` that declares its arguments and
sets `func`, a function of the parsed namespace that calls the library.
Errors a user can fix (ReslabError, a missing file) are printed as one line
and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import ReslabError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for our own errors
        self.exit(EXIT_USAGE, f"reslab: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32)


# --- models -----------------------------------------------------------------
def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered models", formatter_class=_formatter)
    p.add_argument("pattern", nargs="?", default=None, help="glob or substring, e.g. 'resnet*' or 'preact'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from .models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        raise ReslabError(f"no model matches {args.pattern!r}; run `reslab models` for all names")
    infos = [model_info(n) for n in names]
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return
    w = max(len(n) for n in names)
    print(f"{'name':<{w}}  {'params':>12}  {'GMACs':>7}  {'input':<11}  reference")
    for i in infos:
        size = "x".join(str(s) for s in i.input_size)
        print(f"{i.name:<{w}}  {i.params:>12,}  {i.macs / 1e9:>7.3f}  {size:<11}  {i.reference}")


# --- summary ----------------------------------------------------------------
def _add_summary(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shapes, parameters, MACs",
                       formatter_class=_formatter)
    p.add_argument("name", help="a registered model name (see `reslab models`)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="input size; the model's default when omitted")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size N")
    p.add_argument("--depth", type=_positive_int, default=2, help="deepest module level shown")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_summary)


def _run_summary(args: argparse.Namespace) -> None:
    from .summary import summary

    s = summary(args.name, tuple(args.input_size) if args.input_size else None, args.batch, args.depth)
    print(s.to_json() if args.json else s)


# --- data, training, evaluation (train/, data/): train, eval, predict, plot, demo, experiment

# --- performance (bench.py, export.py): bench, export

# --- shared argument types --------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# --- entry point ------------------------------------------------------------
SUBCOMMANDS = [_add_models, _add_summary]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="reslab", description="Deep residual networks: build, train, measure, export.")
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ReslabError as e:
        print(f"reslab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as e:
        print(f"reslab: error: no such file or directory: {e.filename or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
