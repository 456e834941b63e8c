"""mkdocs hooks: the reference pages, written from the code at every build so that they cannot drift.

- reference/cli.md: every `reslab` command and flag, from the argparse parsers of reslab.cli;
- reference/config.md: every TrainConfig field with its type, default and meaning (the comments
  beside and above the field in train/config.py), its allowed values (from `__post_init__`), and
  the presets;
- reference/api/*.md: one page per package and module, mkdocstrings directives over the names
  each one exports (`__all__`, and the lazy `_WHERE` tables);
- results/*.md: benchmarks/RESULTS*.md, and changelog.md: CHANGELOG.md, as they are in the repository.

`python docs/hooks.py OUT` writes the same pages into OUT without mkdocs (to read them or diff them).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import io
import json
import sys
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
if str(SRC) not in sys.path:  # document this checkout's code, whatever else is installed
    sys.path.insert(0, str(SRC))

# benchmarks/ files shown as pages: (page, file, title)
RESULTS = [
    ("results/inference-and-speed.md", "benchmarks/RESULTS.md", "Speed: inference, training, GPU"),
    ("results/training.md", "benchmarks/RESULTS_train.md", "Training on real data"),
    ("results/data.md", "benchmarks/RESULTS_data.md", "Data loading and decoding"),
]


# --- CLI reference ---------------------------------------------------------------------------
def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order `reslab --help` lists them."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    return [(name, helps.get(name) or "", p) for name, p in sub.choices.items()]


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=80)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _argument(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(f"`{o}`" for o in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar
    if metavar is None:
        metavar = "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    elif action.nargs in ("+", "*"):
        metavar = f"{metavar} ..."
    elif isinstance(action.nargs, int) and action.nargs > 1:
        metavar = " ".join([metavar] * action.nargs)
    return f"{names} `{metavar}`"


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.required or action.default in (None, argparse.SUPPRESS, []):
        return "required" if action.required else ""
    if isinstance(action.default, list | tuple):
        return "`" + " ".join(map(str, action.default)) + "`"
    return f"`{action.default}`"


def _cell(text: str) -> str:
    """Text for a table cell: one line, pipes escaped, and what Markdown would take for HTML
    (`KEY.<ext>`) or for attributes (`e.g. {"shortcut":"B"}`) written as entities."""
    text = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("{", "&#123;").replace("}", "&#125;")


def _sentence(text: str) -> str:
    text = _cell(text)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def cli_page() -> str:
    """Markdown of every command of `reslab` and every argument, from reslab.cli.build_parser()."""
    from reslab.cli import build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    lines = [
        "# Command line reference",
        "",
        "Generated from the argparse parsers of `reslab.cli` when the site is built, so it lists what",
        "`reslab COMMAND --help` prints. Errors a user can fix print one line and exit with status 2.",
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        "| command | what it does |",
        "| --- | --- |",
        *[f"| [`reslab {name}`](#reslab-{name}) | {_cell(help_)} |" for name, help_, _ in commands],
        "",
        "`reslab --version` prints the version; `python -m reslab` is the same program.",
    ]
    for name, help_, p in commands:
        lines += ["", f"## reslab {name} {{#reslab-{name}}}", "", _sentence(help_), ""]
        if p.description:
            lines += [_cell(p.description), ""]
        lines += ["```text", _usage(p), "```", "", "| argument | default | meaning |", "| --- | --- | --- |"]
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            meaning = _cell(action.help or "")
            if action.choices and action.metavar is not None and action.option_strings:
                meaning += " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
            lines.append(f"| {_argument(action)} | {_default(action)} | {meaning} |")
        if name == "train":
            lines += ["", "`--set KEY=VALUE` changes any field of the recipe: [the configuration reference]"
                          "(config.md) lists each with its default and meaning. Values parse as JSON "
                          "(`--set milestones=[0.5,0.75]`), `none`/`null` as None, anything else as a string."]
    return "\n".join(lines) + "\n"


# --- TrainConfig reference -------------------------------------------------------------------
@dataclasses.dataclass
class Field:
    name: str
    type: str
    default: Any
    meaning: str
    section: str
    allowed: str = ""


def _comments(source: str) -> dict[int, str]:
    """line number -> the text of the comment on that line."""
    return {tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}


def _allowed(tree: ast.Module, module: Any) -> dict[str, str]:
    """field -> its allowed values, read from the checks in TrainConfig.__post_init__."""
    out: dict[str, str] = {}
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    post = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__post_init__")
    for call in ast.walk(post):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.args
                and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
            continue
        name, kind = call.args[0].value, call.func.id
        if kind == "_choice" and isinstance(call.args[2], ast.Name):
            values = getattr(module, call.args[2].id, None)
            if values is None:  # imported inside __post_init__ (`from ..data.loader import AUGMENTS`)
                imp = next(n for n in ast.walk(post) if isinstance(n, ast.ImportFrom)
                           and any(a.name == call.args[2].id for a in n.names))
                source = importlib.import_module("." * imp.level + (imp.module or ""), module.__package__)
                values = getattr(source, call.args[2].id)
            out[name] = "one of " + ", ".join(f"`{'none' if v is None else v}`" for v in values)
        elif kind == "_positive":
            allow_none = any(k.arg == "allow_none" and getattr(k.value, "value", False) for k in call.keywords)
            out[name] = "a positive integer" + (" or `none`" if allow_none else "")
        elif kind == "_range":
            low, high = (ast.literal_eval(a) if not isinstance(a, ast.Call) else float("inf") for a in call.args[2:4])
            flags = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            out.setdefault(name, f"in {'(' if flags.get('low_open') else '['}{low}, {high}"
                                 f"{')' if flags.get('high_open') else ']'}")
    return out


def config_fields() -> list[Field]:
    """Every TrainConfig field in the order of the class, with its meaning from train/config.py's comments.

    A comment on the field's own line is its meaning, and a one-line comment above such a field
    names the section that starts there; a field without a comment of its own means what the block of
    comment lines right above it says.
    """
    from reslab.train import config

    path = Path(config.__file__)
    source = path.read_text()
    tree = ast.parse(source)
    comments = _comments(source)
    lines = source.splitlines()
    allowed = _allowed(tree, config)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    line_of = {n.target.id: n.lineno for n in cls.body if isinstance(n, ast.AnnAssign)}
    out, section = [], "the model and the data"
    for f in dataclasses.fields(config.TrainConfig):
        n = line_of[f.name]
        above, k = [], n - 1
        while k in comments and lines[k - 1].strip().startswith("#"):
            above.insert(0, comments[k])
            k -= 1
        own = comments.get(n, "")
        if own and len(above) == 1:
            section, meaning = above[0], own
        else:
            meaning = " ".join([*above, own]).strip()
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append(Field(f.name, str(f.type), default, meaning, section, allowed.get(f.name, "")))
    return out


def set_value(value: Any) -> str:
    """A value as `--set key=VALUE` spells it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def config_page() -> str:
    from reslab.train import config

    lines = [
        "# Configuration reference",
        "",
        "Every field of `reslab.train.TrainConfig`, generated from `src/reslab/train/config.py` when the",
        "site is built: the default, the meaning (the comment on or above the field) and the values",
        "`__post_init__` accepts. A run is fully described by these fields: `config.json` in a run",
        "directory holds them. Change one with `reslab train --set KEY=VALUE` (repeatable; values",
        "parse as JSON, `none` as None) or in Python with `TrainConfig(...)`, `cfg.replace(...)` or",
        "`preset(name, **fields)`. Giving one of `epochs` and `iters` clears the other.",
    ]
    section = None
    for f in config_fields():
        if f.section != section:
            section = f.section
            lines += ["", f"## {section[0].upper() + section[1:]}", "",
                      "| field | type | default | meaning | values |", "| --- | --- | --- | --- | --- |"]
        lines.append(f'| <a id="{f.name}"></a>`{f.name}` | `{f.type}` | `{set_value(f.default)}` '
                     f"| {_cell(f.meaning)} | {f.allowed} |")  # a pipe inside backticks stays in its cell
    lines += ["", "`compile=auto` compiles runs of at least "
                  f"`COMPILE_AUTO_MIN_STEPS` = {config.COMPILE_AUTO_MIN_STEPS:,} steps.",
              "Fields that change only how fast a run goes or where it is cached or tracked (a resumed or "
              "restarted run may change them): " + ", ".join(f"`{n}`" for n in config.SPEED_ONLY) + ".",
              "", "## Presets", "",
              "`--preset NAME` (or `preset(NAME, **fields)`) starts from the defaults above and sets:", "",
              "| preset | fields it sets |", "| --- | --- |"]
    for name, values in config.PRESETS.items():
        cells = ", ".join(f"`{k}={set_value(v)}`" for k, v in values.items())
        lines.append(f"| `{name}` | {cells} |")
    deep = config.preset("paper-cifar", model="resnet110")
    lines += ["", "With `paper-cifar`, CIFAR nets of 110 layers and more (`resnet110`, `resnet1202`, `plain110`, "
              "`preact_resnet110`, ...) also get the paper's warm-up: "
              f"`warmup_lr={set_value(deep.warmup_lr)}` until the training "
              f"error is under `warmup_until_error={set_value(deep.warmup_until_error)}`."]
    return "\n".join(lines) + "\n"


# --- API reference ---------------------------------------------------------------------------
# Pages of the Python API: (page, title, module, what the page is for).
API = [
    ("reslab", "reslab", "The top-level names: `import reslab` loads nothing heavy until one is used."),
    ("models", "reslab.models", "The blocks, the two network classes, the registry, weights conversion."),
    ("weights", "reslab.weights", "Weights files, read by one reader for every path that takes them."),
    ("train", "reslab.train", "The recipe, the loop, checkpoints and run outputs."),
    ("data", "reslab.data", "Datasets as uint8 tensors, loaders, streaming and shards."),
    ("experiments", "reslab.experiments", "The paper's experiments."),
    ("launch", "reslab.launch", "Where runs train: here, or as Slurm jobs through submitit."),
    ("optimize", "reslab.optimize", "Fast inference."),
    ("backends", "reslab.backends", "OpenVINO and ONNX Runtime."),
    ("quantize", "reslab.quantize", "int8 post-training quantization."),
    ("export", "reslab.export", "ONNX, torch.export/AOTInductor and safetensors files."),
    ("predict", "reslab.predict", "Predictions and evaluation from a checkpoint or an exported file."),
    ("evaluate", "reslab.evaluate", "Top-1/top-5, loss, per-class accuracy, confusion matrix."),
    ("explain", "reslab.explain", "Grad-CAM."),
    ("report", "reslab.report", "The HTML report."),
    ("bench", "reslab.bench", "Throughput and latency side by side."),
    ("summary", "reslab.summary", "Per-layer tables."),
    ("runtime", "reslab.runtime", "Device, autocast, threads, the allocator, the environment."),
    ("outputs", "reslab.outputs", "Files written on request, never over yours."),
    ("rundir", "reslab.rundir", "A run directory's files: the summary, the chosen checkpoint, the lock."),
    ("atomic", "reslab.atomic", "The one atomic write."),
    ("errors", "reslab.errors", "Errors a user can fix."),
]


def _lazy_table(module: Any) -> dict[str, str] | None:
    """name -> absolute module of a package that exports lazily (a `_WHERE` table), else None."""
    where = getattr(module, "_WHERE", None)
    if where is None:
        return None
    base = module.__name__
    out = {}
    for name, rel in where.items():
        if not rel:
            out[name] = f"{base}.{name}"  # a submodule
            continue
        dots = len(rel) - len(rel.lstrip("."))
        parent = base.rsplit(".", dots - 1)[0] if dots > 1 else base
        out[name] = f"{parent}.{rel.lstrip('.')}"
    return out


def api_page(title: str, intro: str) -> str:
    """A package or module page: mkdocstrings directives for what it exports. A lazily exported name
    whose module is outside the package is linked to the page that documents it, not shown twice."""
    module = importlib.import_module(title)
    lines = [f"# `{title}`", "", intro, ""]
    lazy = _lazy_table(module)
    if lazy is None:
        lines += [f"::: {title}", "    options:", "      show_root_heading: false", "      show_root_toc_entry: false"]
        return "\n".join(lines) + "\n"
    lines += [f"::: {title}", "    options:", "      members: false", "      show_root_heading: false",
              "      show_root_toc_entry: false", ""]
    pages = {t: p for p, t, _ in API}
    elsewhere = []
    for name in module.__all__:
        where = lazy[name]
        if where == f"{title}.{name}":  # a submodule: its page, or the command it serves
            target = f"[`{where}`]({pages[where]}.md)" if where in pages else "the [command line](../cli.md)"
            elsewhere.append(f"| `{title}.{name}` | {target} |")
        elif where.startswith(title + ".") and where not in pages:
            lines += [f"::: {where}.{name}", "    options:", "      heading_level: 2", ""]
        else:  # documented on the page of its module, under the identifier it has there
            where = _defining(where, name)
            elsewhere.append(f"| `{title}.{name}` | [`{where}.{name}`][{where}.{name}] |")
    if elsewhere:
        lines += ["", "## Documented with their modules" if len(lines) > 12 else "## Names", "",
                  "| name | documented as |", "| --- | --- |", *elsewhere]
    return "\n".join(lines) + "\n"


def _defining(module: str, name: str) -> str:
    """The module whose page documents `name`: lazy tables followed to the end."""
    lazy = _lazy_table(importlib.import_module(module))
    while lazy is not None and name in lazy and lazy[name] != module and lazy[name] != f"{module}.{name}":
        module = lazy[name]
        lazy = _lazy_table(importlib.import_module(module))
    return module


def api_pages() -> dict[str, str]:
    return {f"reference/api/{page}.md": api_page(title, intro) for page, title, intro in API}


# --- pages copied from the repository --------------------------------------------------------
def results_page(source: str, title: str) -> str:
    text = (ROOT / source).read_text()
    note = (f"\n!!! note \"From the repository\"\n    This page is `{source}` as it is in the repository; "
            "the files it names are there.\n\n")
    first, _, rest = text.partition("\n")
    return first + "\n" + note + rest if first.startswith("# ") else f"# {title}\n{note}{text}"


def pages() -> dict[str, str]:
    """Every generated page: path under docs/ -> Markdown."""
    out = {"reference/cli.md": cli_page(), "reference/config.md": config_page(), **api_pages()}
    for page, source, title in RESULTS:
        out[page] = results_page(source, title)
    out["changelog.md"] = (ROOT / "CHANGELOG.md").read_text()
    return out


# --- mkdocs events ---------------------------------------------------------------------------
def on_files(files, config):
    from mkdocs.structure.files import File

    for path, text in pages().items():
        files.append(File.generated(config, path, content=text))
    return files


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-pages")
    for path, text in pages().items():
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text(text)
        print(out / path)
