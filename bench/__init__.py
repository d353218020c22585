"""Benchmark harness: `python -m bench [--quick] [--only NAME]` (or `make bench`,
`make bench-quick`). Every measured operation runs in a fresh subprocess; results are
written to docs/BENCHMARKS.md, one marked section per benchmark."""
