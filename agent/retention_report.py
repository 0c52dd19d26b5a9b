"""What `recsync retention` prints of a pass: lines for people, a document for scripts."""

from __future__ import annotations

from typing import Any

from agent.roles.retention import Report


def report_json(report: Report) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "removed": [
            {"id": r.id, "path": r.path, "size": r.size, "rule": r.rule} for r in report.retired
        ],
        "freed_bytes": report.freed,
        "expired": [{"id": r.id, "file": r.path, "size": r.size} for r in report.expired],
        "requeued": [{"id": rid, "reason": why} for rid, why in report.requeued],
        "kept": dict(report.kept),
        "spool_free_percent": None if report.disk is None else round(report.disk.free_percent, 2),
        "low_disk": report.low_disk,
        "stopped": report.stopped,
    }


def report_lines(report: Report) -> list[str]:
    verb = "would be removed" if report.dry_run else "removed"
    lines = []
    for rule in ("age", "low-disk"):
        gone = [r for r in report.retired if r.rule == rule]
        if gone or rule == "age":
            size = sum(r.size for r in gone) / 1e6
            lines.append(f"{rule}: {len(gone)} original(s), {size:.1f} MB, {verb}")
        lines += [f"  {r.path}" for r in gone] if report.dry_run else []
    if report.dry_run and report.retired:
        lines.append("  (each only once its remote copy checks out again)")
    if report.expired:
        size = sum(r.size for r in report.expired) / 1e6
        verb = "would leave" if report.dry_run else "left"
        lines.append(f"destination: {len(report.expired)} recording(s), {size:.1f} MB, {verb}")
    for rid, why in report.requeued:
        lines.append(f"shipped again (#{rid}): {why}")
    for why, count in sorted(report.kept.items()):
        lines.append(f"kept, {why}: {count}")
    if report.disk is not None:
        low = " (below retention.min_free_percent)" if report.low_disk else ""
        lines.append(f"spool disk: {report.disk.free_percent:.1f}% free{low}")
    if report.stopped:
        lines.append(f"stopped: {report.stopped}")
    return lines
