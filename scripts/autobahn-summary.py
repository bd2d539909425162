#!/usr/bin/env python3
"""Counts the outcomes in an Autobahn|Testsuite report (the index.json that wstest writes).

    scripts/autobahn-summary.py [--label NAME] [--unimplemented-fails] REPORTS/index.json

Every case lands in exactly one of five outcomes, printed per agent of the report:

- its `behavior` (what wstest judged of the exchange) when that is OK, NON-STRICT,
  INFORMATIONAL or UNIMPLEMENTED and its `behaviorClose` (the closing handshake) is one of
  OK, NON-STRICT, INFORMATIONAL or UNIMPLEMENTED too;
- FAILED otherwise: a FAILED behavior, any other verdict wstest has (WRONG CODE, UNCLEAN,
  FAILED BY CLIENT, NO_CLOSE) in either field, or an unknown one.

OK, NON-STRICT and INFORMATIONAL pass. UNIMPLEMENTED (wstest's verdict on the
permessage-deflate cases 12.* and 13.* when the peer does not offer or accept that extension)
passes, unless --unimplemented-fails (which scripts/autobahn-run.sh passes by default). The failing cases are listed with both verdicts, and
the last line is `NAME: N passed, N failed`. Exits 1 when a case failed, when the report is
missing or unreadable, or when it holds no case at all.
"""

import argparse
import json
import sys

OUTCOMES = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
NOT_FAILED = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}


def case_key(case_id):
    """Orders "1.1.10" after "1.1.9"."""
    return [int(p) if p.isdigit() else 0 for p in case_id.split(".")]


def outcome(result):
    behavior = result.get("behavior")
    close = result.get("behaviorClose")
    if behavior in NOT_FAILED and close in NOT_FAILED:
        return behavior
    return "FAILED"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index", help="the report's index.json")
    ap.add_argument("--label", default="autobahn", help="one word printed before the counts")
    ap.add_argument("--unimplemented-fails", action="store_true",
                    help="count UNIMPLEMENTED cases as failed")
    args = ap.parse_args()
    failing = {"FAILED"} | ({"UNIMPLEMENTED"} if args.unimplemented_fails else set())

    try:
        with open(args.index, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        print(f"{args.label}: no usable Autobahn report: {e}")
        print(f"{args.label}: 0 passed, 1 failed")
        return 1

    passed = failed = 0
    for agent, results in sorted(report.items()):
        counts = dict.fromkeys(OUTCOMES, 0)
        bad = []
        for case_id in sorted(results, key=case_key):
            result = results[case_id]
            got = outcome(result)
            counts[got] += 1
            if got in failing:
                bad.append(f"{case_id} ({result.get('behavior')}/{result.get('behaviorClose')})")
        print(f"{args.label} [{agent}]: {len(results)} cases: "
              + ", ".join(f"{name} {counts[name]}" for name in OUTCOMES)
              + ("  (UNIMPLEMENTED counts as failed)" if args.unimplemented_fails else ""))
        if bad:
            print(f"  failing ({len(bad)}), as behavior/closing behavior:")
            for i in range(0, len(bad), 6):
                print("    " + "  ".join(bad[i:i + 6]))
        failed += len(bad)
        passed += len(results) - len(bad)

    if passed + failed == 0:
        print(f"{args.label}: the report holds no case")
        print(f"{args.label}: 0 passed, 1 failed")
        return 1
    print(f"{args.label}: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
