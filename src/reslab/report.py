"""One self-contained HTML page of runs and experiments: `reslab report`.

    reslab report runs/r20 runs/plain20 docs/paper/degradation --out report.html

A run's section: where it stands and its final metrics, its curves and config; then its
chosen checkpoint (summary.json's, else best.pt, else last.pt) evaluated again on the test
split of its own data: per-class accuracy, the confusion matrix, the misclassified test
images with their top-3 classes, and Grad-CAM maps of a few test images. Where the
checkpoint or the test data is missing, the section says so in one line and shows the rest.

An experiment's section (a directory `reslab experiment` wrote): its recipe, its table with
the paper's numbers beside ours, the paper's findings against ours, and its figures.

Images are PNG data URIs and the style is one <style> block: the file opens in any browser,
offline, without scripts or a server.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import __version__
from .errors import ReslabError
from .evaluate import EvalResult, evaluate
from .experiments.report import ExperimentReport, is_experiment_dir, read_experiment
from .explain import grad_cam, gradcam_figure
from .outputs import check_output, save_figure, write_text
from .predict import model_input, split_loader
from .rundir import CURVES, RunDir, Summary
from .runtime import amp_dtype
from .train.logging import plot_confusion, plot_runs, run_summary
from .train.record import Trained, load_trained

SUFFIXES = (".html", ".htm")
WHAT = "HTML report"
CONFUSION_TABLE_MAX = 20  # classes up to which the confusion matrix is a table of counts; beyond, a picture
THUMB_MAX = 128  # longest side of a misclassified image's thumbnail, pixels


def html_report(paths: Sequence[str | Path], out: str | Path = "report.html", *, limit: int | None = None,
                misclassified: int = 24, gradcam: int = 6, batch_size: int = 512, data_dir: str | None = None,
                device: str = "cpu", log: Callable[[str], None] | None = None) -> Path:
    """Writes one HTML page with a section per run or experiment directory; returns its path.

    limit: evaluate a run on at most this many test images (a fixed sample; all when None);
    misclassified: mistakes shown per run (the most confident first); gradcam: Grad-CAM maps
    per run; data_dir: the data cache (the run's own when None). Every path is checked, and
    the output too, before anything is evaluated.
    """
    if not paths:
        raise ReslabError("give at least one run or experiment directory")
    check_output(out, SUFFIXES, WHAT)
    paths = [Path(p) for p in paths]
    experiments = {i: read_experiment(p) for i, p in enumerate(paths) if source_kind(p) == "experiment"}
    sections = []
    with tempfile.TemporaryDirectory(prefix="reslab-report-") as tmp:
        for i, path in enumerate(paths):
            name = path.resolve().name
            if i in experiments:
                anchor = f"experiment-{i + 1}-{_slug(name)}"
                sections.append((anchor, f"experiment {experiments[i].name} ({path})",
                                 experiment_section(experiments[i], anchor)))
            else:
                anchor = f"run-{i + 1}-{_slug(name)}"
                sections.append((anchor, f"run {name}", run_section(path, anchor, Path(tmp) / str(i), limit,
                                                                    misclassified, gradcam, batch_size, data_dir,
                                                                    device, log)))
    return write_text(out, _page(sections), SUFFIXES, WHAT)


def source_kind(path: str | Path) -> str:
    """"run" or "experiment"; a ReslabError for anything else."""
    path = Path(path)
    if not path.exists():
        raise ReslabError(f"no such run or experiment directory: {path}")
    if path.is_dir() and RunDir(path).is_run():
        return "run"
    if path.is_dir() and is_experiment_dir(path):
        return "experiment"
    hint = ""
    if path.is_dir():
        inside = [d for d in sorted(path.iterdir()) if d.is_dir() and (RunDir(d).is_run() or is_experiment_dir(d))]
        if inside:
            hint = f"; it holds {len(inside)} (e.g. {inside[0]}): name those"
    raise ReslabError(f"{path} is neither a run directory (config.json and metrics.jsonl) nor an experiment "
                      f"directory (results.json from `reslab experiment`){hint}")


# --- a run ------------------------------------------------------------------------------------
def run_section(run: Path, anchor: str, tmp: Path, limit: int | None = None, misclassified: int = 24,
                gradcam: int = 6, batch_size: int = 512, data_dir: str | None = None, device: str = "cpu",
                log: Callable[[str], None] | None = None) -> str:
    """A run's <section>: overview, final metrics, curves, the test set evaluated again, config."""
    tmp.mkdir(parents=True, exist_ok=True)
    row = run_summary(run)
    config = RunDir(run).config(missing_ok=False)
    final = RunDir(run).summary()
    parts = [f'<section class="run" id="{anchor}">', f"<h2>Run <code>{_e(run.resolve().name)}</code></h2>",
             f'<p class="meta">{_e(run)} &middot; {_e(row["model"])} on {_e(row["data"])} &middot; '
             f"{_e(row['status'])}, {_steps(row)} steps"
             + (f" &middot; {row['minutes']} min" if row["minutes"] else "") + "</p>"]
    curves = plot_runs([run], tmp / CURVES, [run.name])
    parts.append('<div class="row">')
    parts.append(f'<div class="col"><h3>Final metrics</h3>{_final_table(row, final)}</div>')
    parts.append(f'<div class="col wide"><h3>Curves</h3>{_img(curves.read_bytes(), "curves", "curves")}</div>')
    parts.append("</div>")
    try:
        trained, loader, result = _evaluate(run, limit, batch_size, data_dir, device, log)
    except ReslabError as e:
        parts.append(f'<p class="skipped">Skipped the test-set views (per-class accuracy, confusion matrix, '
                     f"mistakes, Grad-CAM): {_e(e)}</p>")
        if log:
            log(f"{run}: skipped the test-set views: {e}")
    else:
        parts.append(_test_views(trained, loader, result, tmp, misclassified, gradcam))
    parts.append("<h3>Config</h3>" + _config_list({k: v for k, v in config.items() if k != "env"}, "config"))
    if config.get("env"):
        parts.append("<h4>Environment</h4>" + _config_list(config["env"], "env"))
    parts.append("</section>")
    return "\n".join(parts)


def _evaluate(run: Path, limit: int | None, batch_size: int, data_dir: str | None, device: str,
              log: Callable[[str], None] | None) -> tuple[Trained, Any, EvalResult]:
    """The chosen checkpoint on the run's test split: (model, loader, result with logits)."""
    trained = load_trained(run, device)  # the checkpoint the run chose
    try:
        loader = split_loader(trained, split="test", data_dir=data_dir, batch_size=batch_size, device=device,
                              limit=limit)
    except OSError as e:
        raise ReslabError(f"cannot read the test data of {trained.config.data}: {e}") from None
    if log:
        log(f"{run}: evaluating on {len(loader.dataset):,} test images of {trained.config.data}")
    amp = amp_dtype(trained.config, torch.device(device))
    return trained, loader, evaluate(trained.model, loader, len(trained.record.classes), amp, keep_logits=True)


def _final_table(row: dict, final: Summary | None) -> str:
    test = (final.test if final else None) or {}
    rows = [("status", row["status"]), ("steps", _steps(row)),
            ("best validation accuracy %", _pct(row["best_val_acc"])),
            ("test top-1 %", _pct(test.get("top1"))), ("test top-5 %", _pct(test.get("top5"))),
            ("test loss", f"{test['loss']:.4f}" if test.get("loss") is not None else "-"),
            ("test images", f"{test['n']:,}" if test.get("n") else "-"),
            ("checkpoint tested", final.chosen if final else "-"),
            ("training minutes", row["minutes"] if row["minutes"] is not None else "-"),
            ("training images/s", f"{row['img_s']:.0f}" if row["img_s"] else "-")]
    return _table(["metric", "value"], [[k, str(v)] for k, v in rows], "metrics")


def _test_views(trained: Trained, loader: Any, r: EvalResult, tmp: Path, misclassified: int, gradcam: int) -> str:
    classes, k = trained.record.classes, len(trained.record.classes)
    whole = getattr(loader.dataset, "meta", {}).get("sample_of")
    sample = f"a fixed sample of {r.n:,} of the {whole:,} test images" if whole else f"the {r.n:,} test images"
    if loader.unreadable:
        sample += f" ({len(loader.unreadable):,} unreadable skipped)"
    parts = [f"<h3>Test set: {_e(trained.config.data)}</h3>",
             f'<p class="meta">Checkpoint of step {trained.step:,} evaluated again on {sample}: top-1 '
             f"{100 * r.top1:.2f}%, top-5 {100 * r.top5:.2f}%, loss {r.loss:.4f}.</p>",
             '<div class="row">',
             f'<div class="col"><h4>Per-class accuracy</h4>{_per_class_table(r, classes)}</div>',
             f'<div class="col wide"><h4>Confusion matrix</h4>{_confusion(r, classes, tmp)}</div>',
             "</div>"]
    labels = r.labels
    probs = F.softmax(r.logits, 1)
    top = r.logits.topk(min(5, k), 1).indices  # as `evaluate` ranks them
    wrong = (top[:, 0] != labels).nonzero().flatten()
    worst = wrong[probs[wrong, labels[wrong]].argsort()][:misclassified].tolist()  # the surest mistakes first
    picked = _one_per_class(labels, gradcam)
    try:
        images = _images(loader, sorted(set(worst) | set(picked)))
    except ReslabError as e:
        parts.append(f'<p class="note">The misclassified images and Grad-CAM maps are not drawn: {_e(e)}</p>')
        return "\n".join(parts)

    parts.append(f"<h4>Misclassified: {len(worst)} of {len(wrong):,}</h4>")
    if worst:
        parts.append('<p class="note">The surest mistakes first (the least probability on the true class): '
                     "the true class, then the model's top 3 with their probabilities.</p>")
        parts.append('<div class="thumbs">' + "".join(
            _thumb(images[i], classes, int(labels[i]), top[i, :3].tolist(), probs[i]) for i in worst) + "</div>")

    if picked:
        cams, explained = _grad_cams(trained, torch.stack([images[i] for i in picked]), loader.batch_size)
        figures = []
        for j, (i, cam, c) in enumerate(zip(picked, cams, explained.tolist(), strict=True)):
            fig = gradcam_figure(images[i], cam, f"test image {i}: {classes[int(labels[i])]}",
                                 f"Grad-CAM: {classes[c]} ({100 * probs[i, c]:.1f}%)")
            png = save_figure(fig, tmp / f"gradcam-{j}.png", "Grad-CAM image")
            figures.append(f'<figure>{_img(png.read_bytes(), f"Grad-CAM of test image {i}")}</figure>')
        parts.append(f"<h4>Grad-CAM: where {len(picked)} test images' predicted class was found</h4>")
        parts.append('<div class="cams">' + "".join(figures) + "</div>")
    return "\n".join(parts)


def _images(loader: Any, rows: list[int]) -> dict[int, torch.Tensor]:
    """{row: (C, H, W) uint8} of the evaluated images of `rows` (rows of the logits), decoded
    alone as the evaluation decoded them: a streamed split reads just these files or samples."""
    if not rows:
        return {}
    return dict(zip(rows, loader.decoded(loader.evaluated()[rows]), strict=True))


def _per_class_table(r: EvalResult, classes: list[str]) -> str:
    support = r.confusion.sum(1).tolist()
    correct = r.confusion.diag().tolist()
    rows = [[c, f"{n:,}", f"{h:,}", f"{100 * a:.2f}", f'<span class="bar" style="width:{100 * a:.0f}%"></span>']
            for c, n, h, a in zip(classes, support, correct, r.per_class, strict=True)]
    return _table(["class", "images", "correct", "accuracy %", ""], rows, "per-class", raw_last=True)


def _confusion(r: EvalResult, classes: list[str], tmp: Path) -> str:
    k = len(classes)
    if k > CONFUSION_TABLE_MAX:
        png = plot_confusion(r.confusion, classes, tmp / "confusion.png")
        return _img(png.read_bytes(), "confusion matrix", "confusion")
    m = r.confusion.tolist()
    head = "".join(f'<th class="pred" title="{_e(c)}">{_e(c)}</th>' for c in classes)
    lines = [f'<table class="confusion"><thead><tr><th class="corner">true \\ predicted</th>{head}'
             '<th class="num">images</th></tr></thead><tbody>']
    for i, c in enumerate(classes):
        total = sum(m[i])
        cells = []
        for j in range(k):
            share = m[i][j] / total if total else 0.0
            ink = "#fff" if share > 0.5 else "#111"
            cells.append(f'<td{_class("num diag" if i == j else "num")} style="background:rgba(31,119,180,'
                         f'{share:.3f});color:{ink}">{m[i][j]}</td>')
        lines.append(f'<tr><th>{_e(c)}</th>{"".join(cells)}<td class="num total">{total}</td></tr>')
    lines.append("</tbody></table>")
    lines.append('<p class="note">Rows: the true class; columns: the predicted one; shaded by the share of the '
                 "row.</p>")
    return "".join(lines)


def _thumb(image: torch.Tensor, classes: list[str], truth: int, top3: list[int], probs: torch.Tensor) -> str:
    from PIL import Image

    a = image.permute(1, 2, 0).squeeze(-1).cpu().numpy()
    pic = Image.fromarray(a, "L" if a.ndim == 2 else "RGB")
    pic.thumbnail((THUMB_MAX, THUMB_MAX))
    buf = io.BytesIO()
    pic.save(buf, format="PNG")
    guesses = "".join(f"<li{_class('truth' if c == truth else '')}>{_e(classes[c])} "
                      f'<span class="p">{100 * probs[c]:.1f}%</span></li>' for c in top3)
    return (f'<figure class="thumb">{_img(buf.getvalue(), "misclassified " + classes[truth])}'
            f'<figcaption><b>{_e(classes[truth])}</b><ol>{guesses}</ol></figcaption></figure>')


def _one_per_class(labels: torch.Tensor, n: int) -> list[int]:
    """Up to n test indices: the first image of each class, then the second of each, ..."""
    per_class = [(labels == c).nonzero().flatten().tolist() for c in range(int(labels.max()) + 1)] if len(labels) \
        else []
    out: list[int] = []
    for rank in range(max(map(len, per_class), default=0)):
        out += [idx[rank] for idx in per_class if rank < len(idx)]
        if len(out) >= n:
            break
    return sorted(out[:n], key=lambda i: int(labels[i]))


def _grad_cams(trained: Trained, images: torch.Tensor, batch_size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Grad-CAM maps of (N, C, H, W) uint8 test images, made the model's input as its loader makes
    it (`model_input`), and the classes they explain."""
    cams, explained = [], []
    for chunk in images.split(batch_size):
        cam, cls = grad_cam(trained.model, model_input(trained, chunk))
        cams += list(cam.cpu())
        explained.append(cls.cpu())
    return cams, torch.cat(explained)


# --- an experiment --------------------------------------------------------------------------
def experiment_section(report: ExperimentReport, anchor: str) -> str:
    """An experiment's <section>: recipe, its table with the paper's numbers beside ours, findings, figures."""
    meta = [_e(report.folder)]
    if report.data:
        meta.append(f"on {_e(report.data)}")
    if report.seeds:
        meta.append("seed 0" if report.seeds == 1 else f"seeds 0-{report.seeds - 1}")
    if report.environment:
        meta.append(_e(report.environment))
    parts = [f'<section class="experiment" id="{anchor}">', f"<h2>{_e(report.title)}</h2>",
             f'<p class="meta">{" &middot; ".join(meta)}</p>']
    if report.command:
        parts.append(f'<p>Reproduce with <code class="cmd">{_e(report.command)}</code></p>')
    if report.recipe:
        parts.append("<h3>Recipe</h3><ul>" + "".join(f"<li>{_e(s)}</li>" for s in report.recipe) + "</ul>")
    paper = [i for i, h in enumerate(report.header) if h.startswith("paper")]
    parts.append("<h3>Results</h3>" + _table(report.header, report.rows, "results", highlight=paper))
    if report.missing:
        parts.append(f'<p class="note">Not finished yet: {_e(", ".join(report.missing))}.</p>')
    parts.append("<h3>Against the paper</h3><ul>" + "".join(f"<li>{_e(f)}</li>" for f in report.findings) + "</ul>")
    for path in report.figures:
        data = path.read_bytes()
        if data.startswith(b"\x89PNG"):
            parts.append(f"<figure>{_img(data, path.stem, 'figure')}<figcaption>{_e(path.name)}</figcaption></figure>")
    parts.append(f'<p class="note">{_e(report.note)}</p></section>')
    return "\n".join(parts)


# --- HTML ---------------------------------------------------------------------------------------
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _class(names: str) -> str:
    """ class="names" (with its leading space), or nothing for no names."""
    return f' class="{names}"' if names else ""


def _img(png: bytes, alt: str, cls: str = "") -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return f'<img{_class(cls)} alt="{_e(alt)}" src="{uri}">'


def _table(header: list[str], rows: list[list[str]], cls: str, highlight: Sequence[int] = (),
           raw_last: bool = False) -> str:
    """A table; cells are escaped (the last one kept as HTML when raw_last); columns after the
    first are right-aligned numbers; `highlight`: columns to set apart (the paper's)."""
    def cell(tag: str, j: int, text: str, raw: bool = False) -> str:
        classes = " ".join(c for c in ("num" if j else "", "paper" if j in highlight else "") if c)
        return f"<{tag}{_class(classes)}>{text if raw else _e(text)}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", j, c, raw_last and j == len(r) - 1) for j, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _config_list(values: dict[str, Any], cls: str) -> str:
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v if isinstance(v, str) else json.dumps(v))}</dd></div>"
                    for k, v in values.items())
    return f'<dl class="{cls}">{items}</dl>'


def _steps(row: dict) -> str:
    return f"{row['steps']:,}/{row['total_steps']:,}" if row["total_steps"] else f"{row['steps']:,}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _page(sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t, _ in sections)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>reslab report: {_e(', '.join(t for _, t, _ in sections))}</title>", f"<style>{CSS}</style></head>",
        "<body><header><h1>reslab report</h1>",
        f'<p class="meta">Written {time.strftime("%Y-%m-%d %H:%M")} by reslab {__version__}.</p>',
        f"<nav><ol>{nav}</ol></nav></header>", "<main>", *(s for _, _, s in sections), "</main></body></html>", ""])


CSS = """
:root { --ink: #1b1f24; --muted: #5b6470; --line: #d8dde3; --soft: #f5f7f9; --accent: #1f77b4; --paper: #fff4e0; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
header, main { max-width: 1180px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 16px; border-bottom: 1px solid var(--line); }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 21px; margin: 0 0 4px; }
h3 { font-size: 17px; margin: 22px 0 8px; }
h4 { font-size: 15px; margin: 18px 0 6px; }
nav ol { margin: 6px 0 14px; padding-left: 22px; }
section { padding: 22px 0 26px; border-bottom: 3px solid var(--line); }
code { font: 13px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; }
code.cmd { display: block; background: var(--soft); padding: 8px 10px; border-radius: 4px; overflow-x: auto;
           white-space: pre; margin-top: 4px; }
.meta, .note { color: var(--muted); font-size: 13.5px; margin: 2px 0 8px; }
.skipped { background: #fff3cd; border-left: 4px solid #e0a800; padding: 8px 12px; margin: 18px 0; }
.row { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.col { flex: 0 1 auto; min-width: 0; max-width: 100%; }
.col.wide { flex: 1 1 520px; }
img { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; }
thead th { background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; }
th.paper, td.paper { background: var(--paper); }
table.per-class td:last-child { width: 90px; padding: 3px 6px; }
.bar { display: block; height: 9px; background: var(--accent); border-radius: 2px; }
table.confusion { font-size: 12px; }
table.confusion td { min-width: 34px; padding: 3px 5px; }
table.confusion td.diag { font-weight: 700; outline: 1px solid #0b3d66; outline-offset: -1px; }
table.confusion th.pred { writing-mode: vertical-rl; transform: rotate(180deg); vertical-align: bottom;
                          padding: 6px 3px; max-height: 110px; font-weight: 500; }
table.confusion th.corner { font-weight: 500; color: var(--muted); font-size: 11px; vertical-align: bottom; }
table.confusion td.total { color: var(--muted); }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(136px, 1fr)); gap: 10px; }
figure { margin: 0; }
figure.thumb { border: 1px solid var(--line); border-radius: 4px; padding: 6px; background: var(--soft); }
figure.thumb img { width: 96px; height: 96px; object-fit: contain; image-rendering: pixelated; margin: 0 auto 4px;
                   background: #fff; }
figcaption { font-size: 12px; line-height: 1.3; }
figure.thumb ol { margin: 2px 0 0; padding-left: 18px; }
figure.thumb li.truth { color: #1a7f37; font-weight: 600; }
figure.thumb .p { color: var(--muted); }
.cams { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 10px; }
.cams img { border: 1px solid var(--line); }
section.experiment figure { margin: 12px 0; }
section.experiment figcaption { color: var(--muted); }
dl.config, dl.env { columns: 3 250px; column-gap: 28px; margin: 0; font-size: 13px; }
dl div { break-inside: avoid; display: flex; gap: 8px; padding: 1px 0; border-bottom: 1px dotted var(--line); }
dt { color: var(--muted); min-width: 140px; }
dd { margin: 0; font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
"""
