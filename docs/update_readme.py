#!/usr/bin/env python
"""Regenerate the README's measured tables from a stage-1 ``report.json`` or a
``frontier.json``.

    python docs/update_readme.py runs/demo/stage1/report.json [README.md]
    python docs/update_readme.py runs/frontier/frontier.json [README.md]

Replaces the text between ``<!-- demo-report:begin -->`` and ``<!-- demo-report:end -->``
with :func:`deid.evaluation.stage1_report.readme_summary` of the report, or between
``<!-- frontier:begin -->`` and ``<!-- frontier:end -->`` with
:func:`deid.evaluation.frontier.frontier_markdown` (a ``frontier.json`` has ``points``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deid.evaluation.frontier import frontier_markdown  # noqa: E402
from deid.evaluation.stage1_report import readme_summary  # noqa: E402


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    readme = Path(args[1] if len(args) > 1 else Path(__file__).resolve().parents[1] / "README.md")
    try:
        report = json.loads(Path(args[0]).read_text())
        text = readme.read_text()
    except (OSError, ValueError) as e:
        print(f"update_readme: {e}", file=sys.stderr)
        return 1
    block, render = ("frontier", frontier_markdown) if "points" in report else (
        "demo-report", readme_summary)
    BEGIN, END = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    if BEGIN not in text or END not in text:
        print(f"{readme}: no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n{render(report)}\n{END}{tail}")
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
