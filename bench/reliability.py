"""Render RELIABILITY.md's table from the figures `make reliability` collected in
bench/results/reliability/ (one JSON per test or script), between the markers in the file."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "bench" / "results" / "reliability"
DOC = ROOT / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


def _cell(value: object) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def table() -> str:
    rows = [json.loads(p.read_text()) for p in sorted(FIGURES.glob("*.json"))]
    lines = ["| test | what it does | figures | command |", "| --- | --- | --- | --- |"]
    for row in rows:
        figures = "; ".join(f"{k}: {_cell(v)}" for k, v in row["figures"].items())
        lines.append(
            f"| `{row['test']}` | {_cell(row['what'])} | {figures} | `{_cell(row['command'])}` |"
        )
    machines = sorted({row["machine"] for row in rows if row.get("machine")})
    when = sorted({row["measured_at"] for row in rows if row.get("measured_at")})
    if when:
        lines.append("")
        lines.append(
            f"Measured {when[0]} to {when[-1]} UTC on {'; '.join(machines[:3])} (load averages "
            "as read when each test ended: the machine is shared)."
        )
    return "\n".join(lines)


def main() -> None:
    text = DOC.read_text()
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    DOC.write_text(f"{before}{START}\n{table()}\n{END}{after}")
    print(f"{DOC}: {len(list(FIGURES.glob('*.json')))} row(s)")


if __name__ == "__main__":
    main()
