"""Generate a synthetic population and the agency extracts that describe it.

Output layout (`out` is a landing root):
    <out>/<source>/<file>                one extract per agency, in its own format
    <out>/_truth/person_truth.parquet    source, source_record_id -> true_person_id
    <out>/_truth/persons.parquet         the clean population (for quality checks and scans)
    <out>/_truth/manifest.json           parameters and counts

People are generated in chunks of whole households and streamed to disk, so memory does not
grow with the population. The output is a function of (persons, seed, chunk_size)."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ids_lakehouse.synth.agencies import AGENCIES, AgencySpec, demographics
from ids_lakehouse.synth.population import generate_persons

TRUTH_DIR = "_truth"
DEFAULT_CHUNK = 50_000
PARQUET_TYPES = {"child_id": pl.Int64, "child_dob": pl.Date, "subsidy_start": pl.Date,
                 "subsidy_end": pl.Date}


def record_id(source: str, seq: int, person: dict[str, Any]) -> str:
    """Agency-style identifiers: unique per agency (an affine permutation of a counter),
    carrying no personal data."""
    k = (seq * 7_654_321 + 1_234_567) % 10**9
    return {
        "medicaid": f"WA{k:09d}",
        "hmis": f"HM{k:09d}",
        "schools": f"{k + 10**9:010d}",
        "childcare": f"{k + 10**9}",
        "births": f"{person['dob'].year}{seq:07d}",
        "travellers": f"TR-{k:09d}",
    }[source]


class ExtractWriter:
    """Appends chunks of one agency's rows to its file in the agency's own format."""

    def __init__(self, spec: AgencySpec, path: Path):
        self.spec, self.path = spec, path
        self.rows = 0
        self._fh: BinaryIO | None = None
        self._parquet: pq.ParquetWriter | None = None
        self._book: Any = None          # openpyxl objects (untyped)
        self._sheet: Any = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        fmt = self.spec.fmt
        if fmt == "xlsx":
            self._write_xlsx(rows)
        elif fmt == "parquet":
            df = pl.DataFrame(rows, infer_schema_length=None).with_columns(
                [pl.col(c).cast(t) for c, t in PARQUET_TYPES.items()])
            df = df.with_columns([pl.col(c).cast(pl.String) for c, t in df.schema.items()
                                  if t == pl.Null])
            table = df.to_arrow()
            if self._parquet is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._parquet = pq.ParquetWriter(self.path, table.schema)
            self._parquet.write_table(table.cast(self._parquet.schema))
        else:
            self._append(self._text(rows))
        self.rows += len(rows)

    def _text(self, rows: list[dict[str, Any]]) -> bytes:
        fmt, enc = self.spec.fmt, self.spec.encoding
        if fmt == "fixed_width":
            lines = ("".join(str(r[name]).ljust(w)[:w] for name, w in self.spec.widths)
                     for r in rows)
            return ("\n".join(lines) + "\n").encode(enc)
        df = pl.DataFrame(rows, schema={k: (pl.Boolean if isinstance(v, bool) else pl.String)
                                        for k, v in rows[0].items()})
        buf = io.BytesIO()
        if fmt == "csv":
            df.write_csv(buf, include_header=self._fh is None)
        else:
            df.write_ndjson(buf)
        return buf.getvalue().decode("utf-8").encode(enc)

    def _append(self, data: bytes) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "wb")
        self._fh.write(data)

    def _write_xlsx(self, rows: list[dict[str, Any]]) -> None:
        if self._book is None:
            from openpyxl import Workbook

            self._book = Workbook(write_only=True)
            self._sheet = self._book.create_sheet("contacts")
            self._sheet.append(list(rows[0]))
        for r in rows:
            self._sheet.append(list(r.values()))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._parquet is not None:
            self._parquet.close()
        if self._book is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._book.save(self.path)


def _agency_chunk(spec: AgencySpec, persons: pl.DataFrame, people: list[dict[str, Any]],
                  rng: np.random.Generator, seq: int
                  ) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]], int]:
    eligible = spec.eligible(persons)
    p = np.where(persons["homeless"].to_numpy(), spec.homeless_rate, spec.rate)
    chosen = np.flatnonzero(eligible & (rng.random(persons.height) < p))
    copies = np.where(rng.random(len(chosen)) < spec.duplicate_rate, 2, 1)
    clients = rng.permutation(np.repeat(chosen, copies))
    rows, truth = [], []
    for i in clients:
        person = people[i]
        mother = people[person["mother_index"]] if person["mother_index"] >= 0 else None
        client = {"record_id": record_id(spec.source, seq, person), "person": person,
                  "mother": mother, "demo": demographics(person, rng, spec.errors)}
        seq += 1
        rows.extend(spec.rows(client, rng))
        truth.append((spec.source, client["record_id"], person["true_person_id"]))
    return rows, truth, seq


TRUTH_SCHEMA = pa.schema([("source", pa.string()), ("source_record_id", pa.string()),
                          ("true_person_id", pa.string())])


def generate(persons: int, seed: int, out: Path, chunk_size: int = DEFAULT_CHUNK,
             agencies: tuple[AgencySpec, ...] = AGENCIES, progress: bool | None = None
             ) -> dict[str, Any]:
    out = Path(out)
    truth_dir = out / TRUTH_DIR
    truth_dir.mkdir(parents=True, exist_ok=True)
    writers = {a.source: ExtractWriter(a, out / a.source / a.file_name) for a in agencies}
    seqs = {a.source: 0 for a in agencies}
    truth_writer = pq.ParquetWriter(truth_dir / "person_truth.parquet", TRUTH_SCHEMA)
    persons_writer = None
    if progress is None:
        progress = persons >= 100_000 and sys.stderr.isatty()
    from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs (types-tqdm) installed

    bar = tqdm(total=persons, unit="person", disable=not progress, desc="generating")
    made, chunk = 0, 0
    try:
        while made < persons:
            rng = np.random.default_rng([seed, chunk])
            df = generate_persons(rng, min(chunk_size, persons - made), made)
            people = df.to_dicts()
            for k, spec in enumerate(agencies):
                rows, truth, seqs[spec.source] = _agency_chunk(
                    spec, df, people, np.random.default_rng([seed, chunk, k + 1]),
                    seqs[spec.source])
                writers[spec.source].write(rows)
                if truth:
                    truth_writer.write_table(pa.Table.from_arrays(
                        [pa.array(col, pa.string()) for col in zip(*truth)],
                        schema=TRUTH_SCHEMA))
            table = df.drop("mother_index").to_arrow()
            if persons_writer is None:
                persons_writer = pq.ParquetWriter(truth_dir / "persons.parquet", table.schema)
            persons_writer.write_table(table.cast(persons_writer.schema))
            made += df.height
            chunk += 1
            bar.update(df.height)
    finally:
        bar.close()
        for w in writers.values():
            w.close()
        truth_writer.close()
        if persons_writer is not None:
            persons_writer.close()
    manifest = {
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "persons": made, "requested": persons, "seed": seed, "chunk_size": chunk_size,
        "agencies": {a.source: {"file": f"{a.source}/{a.file_name}", "format": a.fmt,
                                "encoding": a.encoding, "rows": writers[a.source].rows,
                                "clients": seqs[a.source], "rate": a.rate,
                                "homeless_rate": a.homeless_rate,
                                "duplicate_rate": a.duplicate_rate}
                     for a in agencies},
    }
    (truth_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
