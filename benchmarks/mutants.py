"""mutmut's results for the modules `make mutants` covers: the score table, and a saved copy that
lets a run continue on another machine.

    python benchmarks/mutants.py table [mutants/ | results.json]   # after (or during) a run
    python benchmarks/mutants.py save [mutants/] [results.json]      # keep the verdicts so far
    python benchmarks/mutants.py restore [results.json] [mutants/]   # before `mutmut run`
    python benchmarks/mutants.py unchecked train/step.py ...        # names not tried yet

mutmut keeps one `<module>.py.meta` per mutated file under `mutants/src/`: each mutant's exit code
and a hash of each function's source. `save` writes both to one JSON file
(benchmarks/results/mutants.json by default); `restore` writes them back where mutmut reads them, so
`mutmut run` keeps every verdict whose function is unchanged (it compares those hashes itself) and
tries only the rest. `make mutants` restores when `mutants/` has no results of its own.

Score = (killed + timeout) / (killed + survived + timeout + no tests): a mutant in a function no
test reaches counts as not caught. "not checked" are mutants the run has not reached yet.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

RESULTS = "benchmarks/results/mutants.json"
KEPT = ("exit_code_by_key", "hash_by_function_name")


def read(source: str) -> dict[str, dict]:
    """{module path under src/: {exit_code_by_key, hash_by_function_name}} from a run or a saved file."""
    path = Path(source)
    if path.is_file():
        return json.loads(path.read_text())["modules"]
    src = path / "src"
    return {str(meta.relative_to(src))[: -len(".meta")]: {k: data.get(k, {}) for k in KEPT}
            for meta in sorted(src.rglob("*.py.meta")) if (data := json.loads(meta.read_text()))}


def table(source: str = "mutants") -> None:
    from mutmut.stats import status_by_exit_code

    rows, total = [], Counter()
    for name, data in read(source).items():
        count = Counter(status_by_exit_code[c] for c in data["exit_code_by_key"].values())
        total += count
        rows.append((name.removeprefix("reslab/"), count))
    print("| module | mutants | killed | survived | timeout | no tests | not checked | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, c in [*rows, ("all", total)]:
        tried = c["killed"] + c["survived"] + c["timeout"] + c["no tests"]
        score = f"{100 * (c['killed'] + c['timeout']) / tried:.1f}%" if tried else "-"
        print(f"| {name} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['timeout']} | "
              f"{c['no tests']} | {c['not checked']} | {score} |")


def save(root: str = "mutants", out: str = RESULTS) -> None:
    modules = read(root)
    if not modules:
        sys.exit(f"error: no mutmut results under {root}/src; run `make mutants` first")
    Path(out).write_text(json.dumps({"modules": modules}, indent=0, sort_keys=True) + "\n")
    tried = sum(c is not None for m in modules.values() for c in m["exit_code_by_key"].values())
    print(f"saved {tried} verdicts of {sum(len(m['exit_code_by_key']) for m in modules.values())} "
          f"mutants to {out}")


def restore(results: str = RESULTS, root: str = "mutants") -> None:
    src = Path(root) / "src"
    if any(src.rglob("*.py.meta")):
        print(f"{root}/ has results of its own; nothing restored")
        return
    if not Path(results).is_file():
        print(f"no saved results at {results}; the run starts from the first mutant")
        return
    modules = read(results)
    for name, data in modules.items():
        meta = src / f"{name}.meta"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({**data, "type_check_error_by_key": {}, "durations_by_key": {},
                                    "estimated_durations_by_key": {}}))
    print(f"restored the results of {len(modules)} modules from {results} into {src}")


def unchecked(*modules: str) -> None:
    """The mutants of these modules (as in the table: train/step.py) that the run has not tried:
    `mutmut run` given names tries just those (given a pattern it tries its matches again)."""
    names = [k for name, data in read("mutants").items() if name.removeprefix("reslab/") in modules
             for k, c in data["exit_code_by_key"].items() if c is None]
    if not names:
        sys.exit(f"error: no mutant of {' '.join(modules)} is left to try (module names as in the table)")
    print("\n".join(names))


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["table"]
    {"table": table, "save": save, "restore": restore, "unchecked": unchecked}[command](*args)
