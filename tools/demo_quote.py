"""The README's "a healthy demo says" block, generated from a finished demo run.

    python tools/demo_quote.py runs/demo/run                 # print the block
    python tools/demo_quote.py runs/demo/run --readme README.md --json quote.json

It reads ``RUN/report/report.json`` (the findings ``eigenmap report`` wrote) and ``RUN/demo.json``
(the demo's stage times) and quotes, in the report's own words: the eigenvalue order, the prefix
against the baselines at each length up to k/4, and the classification; then one sentence with
the full-length and chance mAP, the run's length, the demo's wall time and the date. With
``--readme`` it replaces the text between ``<!-- demo-quote:start -->`` and
``<!-- demo-quote:end -->`` in that file, so the README quotes what the current code gives.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.findings import findings_lines  # noqa: E402

START, END = "<!-- demo-quote:start -->", "<!-- demo-quote:end -->"


def quote(run_dir: Path, date: str) -> tuple[str, dict]:
    """The markdown block and the figures it quotes."""
    findings = json.loads((run_dir / "report" / "report.json").read_text())
    demo = json.loads((run_dir / "demo.json").read_text())
    r = findings["retrieval"]
    short = {**r, "lengths": [row for row in r["lengths"] if row["dim"] <= r["code_length"] // 4]}
    lines = findings_lines({**findings, "retrieval": short})
    wanted = [line for line in lines if line.startswith(("**Eigenvalue order:**", "- m = ", "**Classification:**"))]
    body = []
    for line in wanted:  # a blank quoted line between paragraphs, none inside the list
        if body and not (line.startswith("- m = ") and body[-1].startswith("> - m = ")):
            body.append(">")
        body.append(f"> {line}")
    seconds = sum(demo["stage_seconds"].values())
    steps = re.search(r"(\d[\d,]*) steps? on", findings["run"]["title"])
    figures = {"spearman": findings["eigenvalue_order"]["spearman"], "full_length_map": r["full_length_map"],
               "chance_map": r["chance"]["map"], "R": r["R"], "code_length": r["code_length"],
               "steps": steps.group(1) if steps else None, "demo_seconds": seconds, "date": date,
               "device": demo.get("device")}
    tail = (f"That is mAP@{r['R']} of {r['code_length']}-dimensional codes ({r['full_length_map']:.3f} at full "
            f"length, {r['chance']['map']:.3f} by chance) from {figures['steps']} steps, in {seconds:.0f} s of "
            f"demo on {figures['device']}, {date} (`python tools/demo_quote.py runs/demo/run` prints this block "
            "from the run).")
    return "\n".join(body) + "\n\n" + tail + "\n", figures


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the markers replaced by ``block``."""
    if START not in text or END not in text:
        raise ValueError(f"the file has no {START} ... {END} markers to replace between")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}{END}{tail}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a demo's run directory (runs/demo/run)")
    p.add_argument("--readme", type=Path, default=None, help="rewrite this file's block between the markers")
    p.add_argument("--date", default=datetime.date.today().isoformat(), help="the date to state (default today)")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the quoted figures here too")
    args = p.parse_args(argv)
    try:
        block, figures = quote(args.run, args.date)
    except (OSError, KeyError, ValueError) as e:
        print(f"demo_quote: error: {args.run} holds no finished demo report ({e}); run `eigenmap demo` first",
              file=sys.stderr)
        return 2
    if args.readme:
        args.readme.write_text(replace_block(args.readme.read_text(), block))
    else:
        print(block, end="")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
