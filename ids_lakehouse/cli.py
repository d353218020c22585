"""Command line: `python -m ids_lakehouse {generate,demo,instance}`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> int:
    from ids_lakehouse.synth.generate import generate

    manifest = generate(args.persons, args.seed, Path(args.out), chunk_size=args.chunk_size,
                        progress=True if args.progress else None)
    for source, info in manifest["agencies"].items():
        print(f"{source:<12} {info['rows']:>10,} rows  {info['clients']:>9,} clients  "
              f"{info['file']}")
    print(f"truth: {Path(args.out) / '_truth'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ids_lakehouse.demo import run_demo

    return run_demo(persons=args.persons, seed=args.seed)


def _instance(args: argparse.Namespace) -> int:
    from ids_lakehouse.instance import ensure_instance

    print(f"DAGSTER_HOME={ensure_instance()}")
    return 0


def _steward(args: argparse.Namespace) -> int:
    from ids_lakehouse import audit, config
    from ids_lakehouse.identity.index import record_decision

    lake = config.lake()
    record_decision(lake, args.left, args.right, args.decision, args.steward, args.reason)
    audit.record(lake, "steward_decision", f"{args.decision}: {args.left} / {args.right}",
                 actor=args.steward, details={"left": args.left, "right": args.right,
                                              "decision": args.decision,
                                              "reason": args.reason})
    print(f"recorded: {args.decision} for {args.left} / {args.right}; honoured from the "
          "next identity run")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ids_lakehouse")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic population and agency extracts")
    gen.add_argument("--persons", type=int, required=True)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--out", required=True, help="landing root to write extracts into")
    gen.add_argument("--chunk-size", type=int, default=50_000)
    gen.add_argument("--progress", action="store_true", help="always show a progress bar")
    gen.set_defaults(func=_generate)

    demo = sub.add_parser("demo", help="generate, ingest and materialize everything")
    demo.add_argument("--persons", type=int, default=5000)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=_demo)

    inst = sub.add_parser("instance", help="create the Dagster instance in DAGSTER_HOME")
    inst.set_defaults(func=_instance)

    st = sub.add_parser("steward", help="record a steward decision on a pair of records")
    st.add_argument("--left", required=True, help="unique_id (source:record_id)")
    st.add_argument("--right", required=True, help="unique_id (source:record_id)")
    st.add_argument("--decision", required=True, choices=["match", "non_match"])
    st.add_argument("--steward", required=True, help="the steward's e-mail address")
    st.add_argument("--reason", required=True)
    st.set_defaults(func=_steward)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
