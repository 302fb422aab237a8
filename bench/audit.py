"""`make audit`: pip-audit against the installed environment (the service, its tools and
their dependencies), failing on any known vulnerability not accepted in
`audit-exceptions.txt` (each with its reason).

pip-audit asks PyPI's JSON API (or OSV) for advisories. A package it could not look up is
*not* reported as safe: the summary counts it, and `--strict` (or AUDIT_STRICT=1) fails the
run when any could not be audited. Without `--strict` an unreachable advisory service is a
warning, so a network without it (this workplace's CI reaches the package index but not the
JSON API) does not block a build, and says so."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXCEPTIONS = ROOT / "audit-exceptions.txt"


def accepted() -> dict[str, str]:
    """Vulnerability id -> the documented reason it is accepted."""
    out = {}
    for raw in EXCEPTIONS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise SystemExit(f"{EXCEPTIONS}: {raw!r}: give ID, package and the reason")
        out[parts[0]] = parts[2]
    return out


def figures(installed: int, audited: int, found: int, accepted: int, service: str) -> dict:
    """RELIABILITY.md's figures. With no package audited there is no vulnerability count to
    give: "vulnerabilities: 0" would read as a clean bill."""
    return {
        "installed packages": installed,
        "audited": audited,
        "vulnerabilities": found if audited else "not audited",
        "accepted exceptions": accepted,
        "advisory service": service if audited else f"{service} (unreachable)",
    }


def _record(installed: int, audited: int, found: int, accepted: int, service: str) -> None:
    """RELIABILITY.md's row, when `make reliability` collects figures (ADUAN_FIGURES)."""
    folder = os.environ.get("ADUAN_FIGURES")
    if not folder:
        return
    row = {
        "test": "dependency_audit",
        "what": "pip-audit against the installed environment; unaccepted vulnerabilities fail",
        "figures": figures(installed, audited, found, accepted, service),
        "command": "make audit",
    }
    path = Path(folder) / "dependency_audit.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strict", action="store_true", default=bool(os.environ.get("AUDIT_STRICT"))
    )
    parser.add_argument("--service", default="pypi", choices=("pypi", "osv"))
    parser.add_argument(
        "--report", type=Path, help="summarise this pip-audit JSON report instead of running it"
    )
    args = parser.parse_args(argv)
    ignore = accepted()
    if args.report:
        return summarise(json.loads(args.report.read_text()), ignore, args)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [
            str(Path(sys.executable).with_name("pip-audit")),
            "--vulnerability-service",
            args.service,
            "--skip-editable",
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
        ]
        for vuln in ignore:
            command += ["--ignore-vuln", vuln]
        proc = subprocess.run(command, capture_output=True, text=True)
        if not report.exists():
            print(proc.stdout + proc.stderr, file=sys.stderr)
            return 2
        data = json.loads(report.read_text())
    return summarise(data, ignore, args)


def summarise(data: dict, ignore: dict[str, str], args: argparse.Namespace) -> int:
    """Print and record what a pip-audit JSON report says; the exit code."""
    dependencies = [
        d for d in data["dependencies"] if d.get("skip_reason") != "distribution marked as editable"
    ]
    unaudited = [d["name"] for d in dependencies if "skip_reason" in d]
    found = [(d["name"], d["version"], v) for d in dependencies for v in d.get("vulns", [])]
    audited = len(dependencies) - len(unaudited)
    print(
        f"pip-audit ({args.service}): {len(dependencies)} installed package(s), {audited} audited"
    )
    for vuln_id, reason in ignore.items():
        print(f"  accepted {vuln_id}: {reason}")
    for name, version, vuln in found:
        fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"  VULNERABLE {name} {version}: {vuln['id']} (fixed in {fixes})")
    if unaudited:
        print(
            f"  WARNING: {len(unaudited)} package(s) could not be looked up (advisory service "
            f"unreachable or package unknown to it), so nothing is claimed about them: "
            f"{', '.join(unaudited[:8])}{' ...' if len(unaudited) > 8 else ''}"
        )
    _record(len(dependencies), audited, len(found), len(ignore), args.service)
    if found:
        return 1
    if unaudited and args.strict:
        return 2
    if not audited:
        print("NOT AUDITED: no package could be looked up, so nothing is known about any")
        return 0
    print("no known vulnerability" + (" among the audited packages" if unaudited else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
