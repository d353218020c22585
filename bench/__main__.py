"""`python -m bench [--quick] [--only NAME]`: run the benchmarks and rewrite their sections
of docs/BENCHMARKS.md (the header section holds the machine, versions, date and command).

A benchmark is a module under bench/ with `SECTION` (its section name in the doc) and
`run(quick: bool, command: str) -> str` (the section's markdown). Add new ones to
BENCHMARKS, in the order their sections should appear."""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from bench.common import DOC, header_markdown, log, machine_info, write_section

BENCHMARKS = {"ingest": "bench.ingest", "conform": "bench.conform", "linkage": "bench.linkage",
              "pipeline": "bench.pipeline", "scale": "bench.scale",
              "disclosure": "bench.disclosure",
              "lookups": "bench.lookups", "queries": "bench.queries",
              "console": "bench.console"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and fewer runs: a smoke check, minutes not tens")
    parser.add_argument("--only", metavar="NAME", choices=sorted(BENCHMARKS),
                        help=f"run one benchmark: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    command = "python -m bench" + (" --quick" if args.quick else "") + \
        (f" --only {args.only}" if args.only else "")
    make = "make bench-quick" if args.quick else "make bench"
    shown = make if not args.only else command
    names = [args.only] if args.only else list(BENCHMARKS)
    started = time.perf_counter()
    info = machine_info()
    header = header_markdown(info, shown)
    write_section("header", header + "\n\n(Running...)")
    sections = ["header"] + [importlib.import_module(m).SECTION for m in BENCHMARKS.values()]
    for name in names:
        module = importlib.import_module(BENCHMARKS[name])
        log(f"{name}: starting ({'quick' if args.quick else 'full'})")
        t0 = time.perf_counter()
        body = module.run(quick=args.quick, command=shown)
        write_section(module.SECTION, body,
                      after=sections[:sections.index(module.SECTION)])
        log(f"{name}: done in {(time.perf_counter() - t0) / 60:.1f} min")
    total = time.perf_counter() - started
    write_section("header", header +
                  f"\n\nThat invocation took {total / 60:.1f} min of wall time.")
    log(f"all done in {total / 60:.1f} min; wrote {DOC.relative_to(DOC.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
