"""``privagg study``: run the efficiency study (the committed one is docs/results/efficiency/).

Four studies, each writing CSV + PNG + ``report_<name>.md`` into ``OUT/<name>/``:
``sampling`` (private active vs uniform cohort sampling: rounds to 95 % of converged HR@10 at
ε ∈ {1, 8, ∞}), ``communication`` (total bytes vs HR@10 for the ring encodings),
``devices`` (heavy-tailed device simulator: round deadline vs dropouts, wall time and ε
charged) and ``context`` (HR@10 lift from on-device context that never enters an upload).
``all`` runs the four in that order (about 25 minutes on a 2-core machine) and writes
``OUT/report.md``, an index of the four reports. ``--quick`` is a smoke run (one seed,
small populations); its reports say so, and it is refused under docs/.

Results go to --out, by default a fresh folder under runs/; regenerating the committed
study is explicit: ``privagg study all --out docs/results/efficiency``.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

from analysis.outputs import fresh_out, refuse_smoke_run_in_docs
from analysis.studies import STUDIES, run_study

_LOCAL_LINK = re.compile(r"\]\((\./)?([^)/:#\s]+)\)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "study",
        help="regenerate the efficiency study (sampling, communication, devices, context)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=(*STUDIES, "all"), help="which study (or all)")
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: a fresh runs/study-<time>; the committed study is "
        "regenerated with --out docs/results/efficiency)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, small data")
    parser.set_defaults(func=run)


SMOKE_BANNER = (
    "> **Smoke run (`privagg study --quick`): one seed, small populations. These are not "
    "the committed figures.**"
)


def _mark_smoke_run(report: Path) -> None:
    if report.exists():
        text = report.read_text(encoding="utf-8")
        if SMOKE_BANNER not in text:
            report.write_text(SMOKE_BANNER + "\n\n" + text, encoding="utf-8")


def _index(out: Path, *, quick: bool = False) -> None:
    """``OUT/report.md``: the four reports in one document (headings one level down)."""
    lines = [
        "# Efficiency study: fewer rounds, fewer bytes, heterogeneous devices, on-device context",
        "",
        "Regenerate with `privagg study all --out docs/results/efficiency` (one study: "
        "`privagg study NAME`). Each section is also a file of its own; timings come from a "
        "shared 2-core machine.",
        "",
    ]
    if quick:
        lines[1:1] = ["", SMOKE_BANNER]
    for name in STUDIES:
        report = out / name / f"report_{name}.md"
        if not report.exists():
            continue
        lines.append(f"<!-- {name}/report_{name}.md; figures and CSVs in {name}/ -->")
        for line in report.read_text(encoding="utf-8").splitlines():
            # links relative to the study's folder now start one folder up
            line = _LOCAL_LINK.sub(rf"](\g<1>{name}/\g<2>)", line)
            lines.append("#" + line if line.startswith("#") else line)
        if (out / name / f"{name}.png").exists():
            lines += ["", f"![{name}]({name}/{name}.png)"]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    if args.out is None:
        args.out = fresh_out("study")
    if args.quick:
        refuse_smoke_run_in_docs(args.out, "privagg study")
    out = Path(args.out)
    names = STUDIES if args.name == "all" else (args.name,)
    for name in names:
        start = time.perf_counter()
        run_study(name, out / name, quick=args.quick)
        if args.quick:
            _mark_smoke_run(out / name / f"report_{name}.md")
        print(f"{name}: wrote {out / name} in {time.perf_counter() - start:.0f} s", flush=True)
    _index(out, quick=args.quick)
    print(f"wrote {out / 'report.md'}")
    return 0
