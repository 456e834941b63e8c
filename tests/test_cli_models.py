"""`reslab models` and `reslab summary`: output and one-line errors."""

import json

import pytest

from reslab.cli import main


def run(capsys, *argv):
    """Runs the CLI in-process; argparse errors exit through SystemExit."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_models_table(capsys):
    code, out, _ = run(capsys, "models", "resnet5*")
    assert code == 0
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines[1:]] == ["resnet50", "resnet50_v1", "resnet56"]
    assert "25,557,032" in lines[1] and "4.089" in lines[1] and "3x224x224" in lines[1]


def test_models_json(capsys):
    code, out, _ = run(capsys, "models", "resnet20", "--json")
    assert code == 0
    (info,) = json.loads(out)
    assert info["params"] == 269_722 and info["input_size"] == [3, 32, 32]


def test_summary_json(capsys):
    code, out, _ = run(capsys, "summary", "resnet34", "--depth", "1", "--json")
    assert code == 0
    rows = {r["name"]: r["output_shape"] for r in json.loads(out)["rows"]}
    assert rows["layer4"] == [1, 512, 7, 7] and rows["maxpool"] == [1, 64, 56, 56]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["summary", "resnt50"], "did you mean resnet50"),
        (["summary", "resnet50", "--input-size", "3", "8", "8"], "at least 32"),
        (["summary", "resnet20", "--batch", "0"], "positive integer"),
        (["summary", "resnet20", "--input-size", "3", "x", "32"], "invalid int"),
        (["models", "nothing-like-this"], "no model matches"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help_and_version_do_not_import_torch():
    """`reslab --help` answers at once: neither the parser nor `import reslab` pulls in torch."""
    import subprocess
    import sys

    code = ("import sys, reslab; from reslab.cli import build_parser; p = build_parser(); "
            "p.format_help(); [a.choices[c].format_help() for a in p._subparsers._group_actions for c in a.choices]; "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_lazy_exports_resolve():
    import reslab
    import reslab.optimize as optimize_module  # importing the module keeps reslab.optimize callable

    assert callable(reslab.optimize) and callable(optimize_module) and reslab.summary("resnet20").params == 269_722
    assert reslab.model_info("resnet50").params == 25_557_032
    assert set(reslab.__all__) <= set(dir(reslab))
    import pytest

    with pytest.raises(AttributeError):
        reslab.no_such_name  # noqa: B018
