#!/usr/bin/env python3
"""Run SQL on a current ClickHouse engine (chDB, embedded) for the Grafana panel tests.

Reads one JSON object on stdin:
  {"statements": ["CREATE ...", "INSERT ...", ...], "queries": {"name": "SELECT ...", ...}}
runs the statements in order in a fresh chDB session (a temporary folder), then every query,
and prints one JSON object on stdout:
  {"version": "...", "results": {"name": {"tsv": "..."} | {"error": "..."}}}
A failing statement stops the run (exit 1, the error on stderr). Exit 3 when chDB is not
installed (`pip install chdb`, done by scripts/setup.sh), so the caller can skip clearly.
Times are UTC, as on the test's clickhouse-server.
"""

import json
import os
import sys
import tempfile

os.environ["TZ"] = "UTC"

try:
    from chdb import session
except ImportError as e:  # not installed: the caller skips with this message
    print(f"chdb is not installed ({e}); install it with: pip install chdb", file=sys.stderr)
    sys.exit(3)


def main() -> int:
    job = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="wardline-chdb-") as path:
        s = session.Session(path)
        version = str(s.query("SELECT version()", "TabSeparated")).strip()
        for i, sql in enumerate(job.get("statements", [])):
            try:
                s.query(sql)
            except Exception as e:  # report which statement, then stop
                print(f"chDB {version}: statement {i} failed: {e}\n--- statement ---\n{sql[:2000]}", file=sys.stderr)
                return 1
        results = {}
        for name, sql in job.get("queries", {}).items():
            try:
                results[name] = {"tsv": str(s.query(sql, "TabSeparated"))}
            except Exception as e:
                results[name] = {"error": str(e)}
        s.close()
    json.dump({"version": version, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
