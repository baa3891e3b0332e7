"""The doctor's findings as a table for people, or JSON for machines."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence

from pman.backends.kit.doctor import Finding, Status

HEADINGS = ("RESOURCE", "CHECK", "RESULT", "DETAIL")


def as_json(findings: Sequence[Finding]) -> str:
    """A list of objects with the keys resource, check, result, detail, fix."""
    return json.dumps([f.as_json() for f in findings], indent=2)


def as_table(findings: Sequence[Finding], width: int = 120) -> str:
    """One row a finding (the detail wrapped under its column), a problem's fix
    on the lines below it, and a summary line."""
    rows = [(f.resource or "-", f.check, f.status.value) for f in findings]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(HEADINGS[:3])]
    indent = sum(widths) + 2 * len(widths)
    room = max(40, width - indent)
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADINGS, [*widths, 0], strict=True)).rstrip()]
    for row, finding in zip(rows, findings, strict=True):
        head = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + "  "
        detail = textwrap.wrap(finding.detail, room) or [""]
        lines.append(head + detail[0])
        lines += [" " * indent + more for more in detail[1:]]
        if finding.status is Status.PROBLEM and finding.fix:
            fix = textwrap.wrap("fix: " + finding.fix, room, subsequent_indent="     ")
            lines += [" " * indent + part for part in fix]
    lines.append("")
    lines.append(summary(findings))
    return "\n".join(lines) + "\n"


def summary(findings: Sequence[Finding]) -> str:
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    problems = counts[Status.PROBLEM]
    said = f"{problems} problem{'s' if problems != 1 else ''}"
    return f"{said}, {counts[Status.OK]} OK, {counts[Status.SKIPPED]} skipped"
