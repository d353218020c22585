"""`python -m pipelines {demo,instance}`: what runs Dagster from the command line (the
domain's own commands are `python -m ids_lakehouse`)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate, ingest and materialize everything")
    demo.add_argument("--persons", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=42)
    sub.add_parser("instance", help="create the Dagster instance in DAGSTER_HOME")
    args = parser.parse_args(argv)
    os.umask(0o077)     # everything written (extracts, lake, instance) is private
    from ids_lakehouse.audit import AuditKeyError
    from ids_lakehouse.config import MissingSecretError
    from ids_lakehouse.locks import LockTimeout
    from ids_lakehouse.zones import ZoneError

    try:
        if args.command == "instance":
            from pipelines.instance import ensure_instance

            print(f"DAGSTER_HOME={ensure_instance()}")
            return 0
        from pipelines.demo import run_demo

        return run_demo(persons=args.persons, seed=args.seed)
    except (ZoneError, MissingSecretError, LockTimeout, AuditKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
