"""``bitnet validate``: run the validation suite on a backend now and print every case."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate",
                              help="check a backend's ops against the reference backend")
    p.add_argument("--device", metavar="SPEC",
                   help="backend or device to check, e.g. cpu, cuda:1 (default: $BITNET_DEVICE, "
                        "else every available device)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="print failures and totals only")
    p.set_defaults(func=run)


def _as_dict(check: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"device": check.spec, "backend": check.plugin.name,
                           "name": check.device.name}
    if check.failure is not None and check.result is None:
        out.update(passed=False, stage=check.failure.stage, cause=check.failure.cause,
                   remedy=check.failure.remedy, cases=[])
        return out
    out.update(passed=check.result.passed, summary=check.result.summary(),
               seconds=check.result.seconds, cases=[r.__dict__ for r in check.result.results])
    return out


def run(args: argparse.Namespace) -> int:
    from bitnet.registry import BackendSelectionError
    from bitnet.registry.devices import validate_devices

    def on_case(spec: str, result: Any) -> None:
        if not args.json and (not args.quiet or not result.passed):
            print(f"{spec}  {result.line()}", flush=True)

    try:
        checks = validate_devices(args.device, on_case=on_case)
    except (BackendSelectionError, ValueError) as exc:
        print(f"bitnet: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([_as_dict(c) for c in checks], indent=1, default=str))
    else:
        for check in checks:
            if check.result is not None:
                verdict = "PASSED" if check.result.passed else "FAILED"
                print(f"{check.spec}: {verdict}: {check.result.summary()} "
                      f"({check.result.seconds:.1f} s)")
            else:
                print(f"{check.spec}: FAILED: {check.failure}")
    return 0 if all(c.result is not None and c.result.passed for c in checks) else 1
