"""Runs one benchmark task in this (fresh) process and prints its result as one JSON line.

    python -m bench.worker MODULE:FUNCTION '{"param": ...}'

The task function lives in `bench.MODULE`, takes the JSON parameters as keywords and returns
a dict with at least `seconds` (its measured section) and `base_rss_mb` (peak RSS just before
that section). It may return `peak_rss_mb` read right after the measured section (so that
checks done afterwards do not count); otherwise the worker reads it when the task returns.
"""

from __future__ import annotations

import importlib
import json
import sys

from bench.common import RESULT_PREFIX, rss_mb


def main(argv: list[str]) -> int:
    if len(argv) != 2 or ":" not in argv[0]:
        print(__doc__, file=sys.stderr)
        return 2
    module, func = argv[0].split(":", 1)
    task = getattr(importlib.import_module(f"bench.{module}"), func)
    result = dict(task(**json.loads(argv[1])))
    result.setdefault("peak_rss_mb", rss_mb())
    print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
