"""`reslab demo`: the paper's core result (Figure 6) in a few minutes, offline.

Plain and residual CIFAR-style nets of two depths are trained with one
recipe on scikit-learn's embedded 8x8 digits (upsampled to 16x16 in the
loader): the degradation experiment at demo size. He et al. 2015 show that
the deeper plain net trains *worse* while the deeper ResNet does not; on a
tiny, easy data set the effect can be weaker or absent, and the verdict line
says what this run measured, nothing more.
"""

from __future__ import annotations

from pathlib import Path

from .experiments import Row, digits_recipe, run_experiment


def run_demo(out: str | Path = "runs/demo", depths: tuple[int, int] = (20, 56), epochs: int = 10,
             resize: int = 16, threads: int = 1, seed: int = 0, progress: bool = True) -> list[Row]:
    """Trains plain-d and resnet-d for d in `depths` (lr 0.05, 2-epoch warm-up, cosine).

    threads: 1 by default: these nets are small, and threads that wait for each other on a
    busy machine collapse (measured: benchmarks/RESULTS_train.md, "`reslab demo`").

    Writes out/degradation/report.md (table and verdict) and degradation.png; a demo
    already there with the same recipe is reused, not trained again.
    """
    out = Path(out)
    base = digits_recipe(epochs, seed, threads).replace(resize=resize)
    rows = run_experiment("degradation", out, base, depths, progress=progress,
                          command=f"reslab demo --out {out} --depths {depths[0]} {depths[1]} --epochs {epochs} "
                                  f"--resize {resize}")
    report = out / "degradation" / "report.md"
    text = report.read_text().rstrip() + "\n\n## Verdict\n\n" + verdict(rows) + "\n"
    report.write_text(text)
    if progress:
        print("\n" + text + f"\nplot: {out / 'degradation' / 'degradation.png'}")
    return rows


def verdict(rows: list[Row]) -> str:
    """What the training errors show: degradation of the deeper plain net or not."""
    by = {r.label: r for r in rows}
    d1, d2 = sorted({int(r.label.split("-")[1]) for r in rows})
    plain_gap = by[f"plain-{d2}"].train_err - by[f"plain-{d1}"].train_err
    res_gap = by[f"resnet-{d2}"].train_err - by[f"resnet-{d1}"].train_err
    line = (f"plain {d1} -> {d2} layers: training error {plain_gap:+.2f} points; "
            f"residual {d1} -> {d2}: {res_gap:+.2f} points.\n")
    if plain_gap > 0 and res_gap <= plain_gap:
        return line + "As in the paper: the deeper plain net trains worse, the deeper ResNet does not degrade as much."
    return line + ("This run does not show the paper's degradation of the deeper plain net "
                   "(too little data or too short a schedule to separate them).")
