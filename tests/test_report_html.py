"""`reslab report`: one self-contained HTML page whose tables hold the numbers `reslab eval` gives,
whose images all decode, and whose experiment sections put the paper's numbers beside ours."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import photos
from reslab.cli import main
from reslab.experiments.paper import PAPER_TABLE6
from reslab.predict import evaluate_checkpoint, split_loader
from reslab.runtime import amp_dtype
from reslab.train import evaluate
from reslab.train.record import load_trained

DOCS = Path(__file__).resolve().parents[1] / "docs" / "paper"
CLASSES = ("ant", "bee", "cat")
TEST_PER_CLASS = 8


class Page(HTMLParser):
    """The parts of a report the tests read: tables by class (rows of cell texts), images, sections."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: dict[str, list[list[list[str]]]] = {}  # class -> tables -> rows -> cells
        self.images: list[dict[str, str]] = []
        self.sections: list[dict[str, str]] = []
        self.thumbs = 0
        self.skipped: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._skip: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = []
            self.tables.setdefault(a.get("class", ""), []).append(self._table)
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a)
        elif tag == "section":
            self.sections.append(a)
        elif tag == "figure" and a.get("class") == "thumb":
            self.thumbs += 1
        elif tag == "p" and a.get("class") == "skipped":
            self._skip = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "p" and self._skip is not None:
            self.skipped.append("".join(self._skip))
            self._skip = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._skip is not None:
            self._skip.append(data)

    def table(self, cls: str, index: int = 0) -> list[list[str]]:
        return self.tables[cls][index]


def _folder(root: Path) -> Path:
    """train/ and test/ class folders of random 16x16 RGB PNGs (8 training and 8 test images a class)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True)
            for i in range(TEST_PER_CLASS):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished two-step run on a folder with a test split; the data cache in the same temporary tree."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESLAB_DATA", str(root / "cache"))
        imgs = _folder(root / "imgs")
        out = root / "run"
        assert main(["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "2", "--quiet",
                     "--set", "batch_size=4", "--set", "val_size=3", "--set", "threads=1", "--set", "compile=off",
                     "--set", "device=cpu", "--out", str(out)]) == 0
        yield out


@pytest.fixture(autouse=True)
def _cache(run, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(run.parent / "cache"))


def _decoded(img: dict[str, str]) -> Image.Image:
    head, _, data = img["src"].partition(",")
    assert head == "data:image/png;base64", head[:40]
    pic = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
    pic.load()
    assert pic.format == "PNG" and pic.size[0] > 0 and pic.size[1] > 0
    return pic


def _report(args, capsys) -> Page:
    out = Path(args[args.index("--out") + 1])
    capsys.readouterr()
    assert main(["report", *args]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip() == str(out)
    return Page(out.read_text())


def test_run_page_holds_what_eval_measures(run, tmp_path, capsys):
    page = _report([str(run), "--out", str(tmp_path / "r.html"), "--misclassified", "5", "--gradcam", "2"], capsys)
    r, trained = evaluate_checkpoint(run)
    assert r.n == len(CLASSES) * TEST_PER_CLASS

    per_class = page.table("per-class")
    assert per_class[0][:4] == ["class", "images", "correct", "accuracy %"]
    assert [row[:4] for row in per_class[1:]] == [
        [c, str(int(r.confusion[i].sum())), str(int(r.confusion[i, i])), f"{100 * a:.2f}"]
        for i, (c, a) in enumerate(zip(trained.record.classes, r.per_class, strict=True))]

    confusion = page.table("confusion")
    assert confusion[0][1:-1] == list(CLASSES)
    counts = [[int(v) for v in row[1:-1]] for row in confusion[1:]]
    assert counts == r.confusion.tolist()
    assert sum(map(sum, counts)) == r.n == sum(int(row[-1]) for row in confusion[1:])

    wrong = r.n - int(r.confusion.trace())
    assert wrong > 5  # random images: the cap below is what limits the grid
    assert page.thumbs == min(5, wrong)
    final = dict(row for row in page.table("metrics")[1:])
    assert final["steps"] == "2/2" and final["checkpoint tested"] == "best.pt"
    # curves, 5 mistakes, 2 Grad-CAM maps: every image a PNG that decodes
    assert len(page.images) == 1 + 5 + 2
    sizes = [_decoded(img).size for img in page.images]
    assert sizes[1:6] == [(16, 16)] * 5  # the test images themselves
    assert [s["class"] for s in page.sections] == ["run"] and not page.skipped


def test_limit_evaluates_a_fixed_sample_and_every_mistake_is_shown(run, tmp_path, capsys):
    page = _report([str(run), "--out", str(tmp_path / "r.html"), "--limit", "10", "--misclassified", "100",
                    "--gradcam", "0"], capsys)
    trained = load_trained(run)
    r = evaluate(trained.model, split_loader(trained, limit=10), len(CLASSES),
                 amp_dtype(trained.config, torch.device("cpu")))  # as `reslab eval` does
    counts = [[int(v) for v in row[1:-1]] for row in page.table("confusion")[1:]]
    assert counts == r.confusion.tolist() and sum(map(sum, counts)) == 10
    assert page.thumbs == 10 - int(r.confusion.trace())
    assert len(page.images) == 1 + page.thumbs


def test_experiment_page_has_the_papers_numbers_beside_ours(tmp_path, capsys):
    page = _report([str(DOCS / "degradation"), str(DOCS / "responses"), "--out", str(tmp_path / "e.html")], capsys)
    results = json.loads((DOCS / "degradation" / "results.json").read_text())
    table = page.table("results")
    header = table[0]
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in table[1:]}
    assert list(rows) == [s["label"] for s in results["summary"]]
    for s in results["summary"]:
        row = rows[s["label"]]
        assert row["test error %: best (mean +- std)"] == f"{s['test_best']:.2f}"  # ours
        assert row["train error %"] == f"{s['train_err']:.2f}"
        paper = PAPER_TABLE6.get(s["label"], ("-",))[0]
        assert row["paper's test error %"] == paper  # the paper's
    assert rows["resnet-20"]["paper's test error %"] == "8.75" and rows["resnet-56"]["paper's test error %"] == "6.97"

    responses = json.loads((DOCS / "responses" / "responses.json").read_text())
    assert {row[0]: row[2] for row in page.table("results", 1)[1:]} == \
        {k: f"{sum(v) / len(v):.3f}" for k, v in responses.items()}
    assert [s["class"] for s in page.sections] == ["experiment", "experiment"]
    assert len(page.images) == 2 and all(_decoded(img).size[0] > 500 for img in page.images)


def test_a_fresh_experiment_says_how_to_reproduce_it_and_what_is_missing(tmp_path, capsys):
    from reslab.experiments import digits_recipe, run_experiment

    (row,) = run_experiment("degradation", tmp_path, digits_recipe(epochs=1, threads=1), depths=(8,),
                            nets=["resnet-8"], progress=False, command="reslab experiment degradation --depths 8")
    page = _report([str(tmp_path / "degradation"), "--out", str(tmp_path / "e.html")], capsys)
    html = (tmp_path / "e.html").read_text()
    (line,) = page.table("results")[1:]
    assert line[0] == "resnet-8" and line[5] == f"{row.test_err:.2f}" and line[6] == "-"  # no paper figure at 8
    assert "reslab experiment degradation --depths 8" in html and "Not finished yet: plain-8." in html
    assert len(page.images) == 1 and _decoded(page.images[0])


def test_without_its_data_a_run_still_renders_and_says_what_it_skipped(run, tmp_path, capsys):
    data = run.parent / "imgs"
    data.rename(run.parent / "away")
    try:
        page = _report([str(run), "--out", str(tmp_path / "r.html")], capsys)
    finally:
        (run.parent / "away").rename(data)
    (line,) = page.skipped
    assert "Skipped the test-set views" in line and "does not exist" in line
    assert "per-class" not in page.tables and "confusion" not in page.tables and page.thumbs == 0
    assert dict(page.table("metrics")[1:])["status"] == "done"
    assert len(page.images) == 1 and _decoded(page.images[0])  # the curves


def test_one_bad_path_writes_nothing(run, tmp_path, capsys):
    out = tmp_path / "r.html"
    capsys.readouterr()
    assert main(["report", str(run), str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such run or experiment directory" in err
    assert not out.exists()
    (tmp_path / "runs").mkdir()
    shutil.copytree(DOCS / "depth", tmp_path / "runs" / "depth")
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 2
    assert "neither a run directory" in capsys.readouterr().err and not out.exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CIFAR_RUN = Path("/work/runs/paper-8k/runs/resnet-20-s0")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
@pytest.mark.skipif(not CIFAR_RUN.is_dir(), reason=f"no finished CIFAR-10 run at {CIFAR_RUN}")
def test_a_browser_loads_every_image_of_a_real_report(tmp_path):
    """A real ResNet-20 run on CIFAR-10 and the degradation experiment, rendered by headless Chromium:
    every image decoded by the browser, the tables there; the screenshot kept beside the page."""
    run = shutil.copytree(CIFAR_RUN, tmp_path / CIFAR_RUN.name)  # the run itself is never written to
    out = tmp_path / "report.html"
    assert main(["report", str(run), str(DOCS / "degradation"), "--out", str(out)]) == 0
    # a copy with a probe after the body: it marks each image loaded (complete, with a width) in the DOM
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
             "document.body.dataset.images = imgs.length; "
             "document.body.dataset.loaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length; });"
             "</script>")
    chrome = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]

    def rendered(text: str, name: str) -> str:
        probed = tmp_path / name
        probed.write_text(text.replace("</body>", probe + "</body>"))
        return subprocess.run([*chrome, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                              capture_output=True, text=True, timeout=120).stdout

    n = len(Page(out.read_text()).images)
    assert n == 1 + 24 + 6 + 1  # curves, mistakes, Grad-CAM maps, the experiment's figure
    dom = rendered(out.read_text(), "probed.html")
    assert f'data-images="{n}"' in dom and f'data-loaded="{n}"' in dom
    # the probe tells a broken image: one more that does not decode is counted, not loaded
    broken = rendered(out.read_text().replace("<main>", '<main><img alt="x" src="data:image/png;base64,AAAA">'),
                      "broken.html")
    assert f'data-images="{n + 1}"' in broken and f'data-loaded="{n}"' in broken
    page = Page(dom)
    assert {"metrics", "per-class", "confusion", "results"} <= set(page.tables)
    assert sum(int(row[-1].replace(",", "")) for row in page.table("confusion")[1:]) == 10_000
    shot = tmp_path / "report.png"
    subprocess.run([*chrome, "--window-size=1200,3000", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert Image.open(shot).size == (1200, 3000)
    print(f"screenshot: {shot}")


# --- streamed runs: the mistakes and Grad-CAM maps decoded from the files or shards alone ----------
def _photos(root: Path, per_class: int, seed: int) -> Path:
    """root/<class>/NN.jpg (every third a .png): random RGB images of 40-60 px a side, each its own size."""
    return photos(root, CLASSES, per_class, seed, png_every=3)


def _streamed_run(tmp_path: Path, data: str) -> Path:
    """Four steps of ResNet-20 at 32x32 on streamed data, no decode processes."""
    from reslab.train import TrainConfig, train

    cfg = TrainConfig(model="resnet20", data=data, iters=4, batch_size=8, val_size=0, lr=0.05, compile="off",
                      seed=0, threads=1, device="cpu", amp="none", loader="stream", resize=32, workers=0, test=False)
    train(cfg, tmp_path / "run", progress=False)
    return tmp_path / "run"


def _check_image_views(run: Path, page: Page, limit: int | None, misclassified: int, gradcam: int) -> None:
    """The thumbnails are, pixel for pixel, the images the evaluation fed the model for the surest mistakes,
    in that order; the Grad-CAM maps are of one test image per class, given the model's input of evaluation."""
    from reslab.predict import model_input, normalize
    from reslab.report import _one_per_class

    trained = load_trained(run)
    loader = split_loader(trained, limit=limit)
    assert loader.dataset.meta.get("sample_of") == (None if limit is None else 3 * 4)
    batches = list(loader)  # the evaluation's own batches: (normalized images, labels)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    r = evaluate(trained.model, loader, len(CLASSES), keep_logits=True)
    assert torch.equal(r.labels, y) and len(r.logits) == len(x) == (limit or 12)
    probs = torch.softmax(r.logits, 1)
    wrong = (r.logits.argmax(1) != y).nonzero().flatten()
    worst = wrong[probs[wrong, y[wrong]].argsort()][:misclassified].tolist()

    thumbs = [img for img in page.images if img["alt"].startswith("misclassified ")]
    assert page.thumbs == len(thumbs) == min(misclassified, len(wrong)) == len(worst) > 0
    for i, img in zip(worst, thumbs, strict=True):
        pixels = torch.from_numpy(np.array(_decoded(img).convert("RGB"))).permute(2, 0, 1)
        assert pixels.shape == (3, 32, 32) and img["alt"] == f"misclassified {CLASSES[int(y[i])]}"
        assert torch.equal(normalize(trained, pixels[None])[0], x[i])  # what the model saw as test image i

    picked = _one_per_class(y, gradcam)
    cams = [img["alt"] for img in page.images if img["alt"].startswith("Grad-CAM of test image")]
    assert cams == [f"Grad-CAM of test image {i}" for i in picked] and len(cams) == min(gradcam, len(x))
    assert torch.equal(model_input(trained, loader.decoded(picked)), x[picked])
    assert "streams its images" not in (run.parent / "r.html").read_text() and not page.skipped


def test_a_streamed_folder_run_shows_its_mistakes_and_grad_cams(tmp_path, capsys):
    base = tmp_path / "set"
    _photos(base / "train", 8, 0)
    _photos(base / "test", 4, 1)
    run = _streamed_run(tmp_path, f"imagefolder:{base}")
    page = _report([str(run), "--out", str(tmp_path / "r.html"), "--limit", "9", "--misclassified", "3",
                    "--gradcam", "2"], capsys)
    assert "a fixed sample of 9 of the 12 test images" in (tmp_path / "r.html").read_text()
    _check_image_views(run, page, 9, 3, 2)


def test_a_shard_run_shows_its_mistakes_and_grad_cams(tmp_path, capsys):
    from reslab.data import write_shards

    base = tmp_path / "set"
    _photos(base / "train", 8, 0)
    _photos(base / "test", 4, 1)
    write_shards(f"imagefolder:{base}", tmp_path / "shards", shard_size=5)  # test: shards of 5, 5 and 2
    run = _streamed_run(tmp_path, f"shards:{tmp_path / 'shards'}")
    page = _report([str(run), "--out", str(tmp_path / "r.html"), "--limit", "10", "--misclassified", "100",
                    "--gradcam", "3"], capsys)
    _check_image_views(run, page, 10, 100, 3)
