"""Independent readers of the generated extracts, for tests (not the ingest code)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ids_lakehouse.synth.agencies import AGENCIES, BIRTH_WIDTHS

ID_COLUMN = {"medicaid": "member_id", "hmis": "PersonalID", "schools": "student_id",
             "childcare": "child_id", "births": "cert_number", "travellers": "traveller_ref"}


def read_extract(landing: Path, source: str) -> pl.DataFrame:
    spec = next(a for a in AGENCIES if a.source == source)
    path = landing / source / spec.file_name
    if spec.fmt == "csv":
        text = path.read_bytes().decode(spec.encoding)
        return pl.read_csv(text.encode(), infer_schema=False)
    if spec.fmt == "jsonl":
        return pl.read_ndjson(path)
    if spec.fmt == "parquet":
        return pl.read_parquet(path).with_columns(pl.col("child_id").cast(pl.String))
    if spec.fmt == "fixed_width":
        rows, pos = [], 0
        cuts = []
        for name, width in BIRTH_WIDTHS:
            cuts.append((name, pos, pos + width))
            pos += width
        for line in path.read_text(encoding=spec.encoding).splitlines():
            rows.append({n: line[a:b].rstrip() for n, a, b in cuts})
        return pl.DataFrame(rows)
    from openpyxl import load_workbook

    sheet = load_workbook(path, read_only=True).active
    values = list(sheet.iter_rows(values_only=True))
    return pl.DataFrame([dict(zip(values[0], r)) for r in values[1:]], infer_schema_length=None)
