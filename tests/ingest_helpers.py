from __future__ import annotations

from pathlib import Path

from ids_lakehouse import delta
from ids_lakehouse.config import Lake
from ids_lakehouse.ingest.bronze import IngestResult, count_rows, ingest_file
from ids_lakehouse.ingest.landing import landed_file
from ids_lakehouse.ingest.reconcile import reconcile
from ids_lakehouse.sources import SourceDefinition

BASE = {
    "source": "agency", "agency": "Test agency", "description": "test",
    "data_owner": "owner@example.gov", "steward": "steward@example.gov",
    "columns": ["id", "first_name", "last_name", "dob"],
    "required_columns": ["id", "last_name"], "record_id": "id",
}


def definition(**overrides) -> SourceDefinition:
    return SourceDefinition.model_validate({**BASE, "format": "csv", **overrides})


def land(root: Path, name: str, data: bytes | str, encoding: str = "utf-8") -> Path:
    path = root / "agency" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode(encoding) if isinstance(data, str) else data)
    return path


def ingest(defn: SourceDefinition, root: Path, path: Path, lake: Lake,
           run_id: str = "run-1") -> IngestResult:
    landed = landed_file(root, defn, path)
    result = ingest_file(defn, landed, lake, run_id)
    rec = reconcile(defn, landed, lake, result.rows_read)
    assert rec.passed, rec
    assert result.rows_written == rec.bronze and result.rows_quarantined == rec.quarantined
    return result


def bronze_rows(lake: Lake, sha: str | None = None) -> int:
    path = lake.bronze("agency")
    return count_rows(path, sha) if sha else delta.count(path)
