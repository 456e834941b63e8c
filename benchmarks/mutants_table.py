"""The mutation score of each module `make mutants` covers, as a Markdown table.

    python benchmarks/mutants_table.py [mutants/]     # after (or during) `make mutants`

Reads mutmut's per-file results (mutants/**/*.py.meta). Score = (killed + timeout) / (killed +
survived + timeout + no tests): a mutant in a function no test reaches counts as not caught.
"not checked" are mutants the run has not reached yet.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code


def main(root: str = "mutants") -> None:
    rows, total = [], Counter()
    for meta in sorted(Path(root).rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        count = Counter(status_by_exit_code[c] for c in codes.values())
        total += count
        rows.append((str(meta.relative_to(root))[: -len(".meta")], count))
    print("| module | mutants | killed | survived | timeout | no tests | not checked | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, c in [*rows, ("all", total)]:
        tried = c["killed"] + c["survived"] + c["timeout"] + c["no tests"]
        score = f"{100 * (c['killed'] + c['timeout']) / tried:.1f}%" if tried else "-"
        print(f"| {name} | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['timeout']} | "
              f"{c['no tests']} | {c['not checked']} | {score} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
