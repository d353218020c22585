"""The console's catalog: every table the lakehouse writes (ids_lakehouse.catalog's
inventory), its columns with classification, legal regime and lineage as declared, and
what the lake says of it now (Delta version, last write, rows)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa
from deltalake import DeltaTable

from ids_lakehouse import delta, storage
from ids_lakehouse.catalog import column_classification, column_lineage, lake_inventory
from ids_lakehouse.config import Lake
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.model import load_model
from ids_lakehouse.sources import load_sources


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    classification: str
    legal_regime: str
    description: str
    lineage: list[str]          # upstream "layer/table.column"


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    zone: str
    description: str
    owners: list[str]
    updated: dt.datetime | None = None
    version: int | None = None
    rows: int | None = None
    columns: list[Column] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.layer}/{self.name}"


def tables() -> list[Table]:
    """Every Delta table of the inventory (files and per-version folders left out)."""
    owners = load_model().owners
    sources = load_sources()
    out = []
    for entry in lake_inventory():
        parts = entry.path.split("/")
        if len(parts) != 3 or "<" in entry.path or "." in parts[2]:
            continue
        _, layer, name = parts
        who = [sources[name].data_owner, sources[name].steward] \
            if layer in ("bronze", "quarantine") and name in sources else owners
        out.append(Table(layer, name, entry.zone, entry.description, who))
    return out


def _updated(lake: Lake, t: Table) -> dt.datetime | None:
    """When the table was last written: the time of its newest commit file (found by
    name, one stat: the audit log has a commit a second under load)."""
    log = lake.table(t.layer, t.name) / "_delta_log"
    if not log.is_dir():
        return None
    commits = [p.name for p in log.iterdir() if p.name.endswith(".json")]
    if not commits:
        return None
    newest = log / max(commits)         # zero-padded version numbers sort as numbers
    return dt.datetime.fromtimestamp(storage.mtime(newest), dt.timezone.utc)


def search(lake: Lake, q: str) -> list[Table]:
    """Tables whose name, description or column names contain every word of `q`."""
    words = q.lower().split()
    out = []
    for t in tables():
        text = " ".join([t.key, t.zone, t.description,
                         *(c.name for c in _declared(t))]).lower()
        if all(w in text for w in words):
            out.append(Table(t.layer, t.name, t.zone, t.description, t.owners,
                             updated=_updated(lake, t)))
    return out


def table(lake: Lake, layer: str, name: str) -> Table | None:
    found = next((t for t in tables() if t.layer == layer and t.name == name), None)
    if found is None:
        return None
    path = lake.table(layer, name)
    version = rows = None
    columns = _declared(found)
    if delta.exists(path):
        dt_ = delta.table(path)
        version = dt_.version()
        adds = dt_.get_add_actions(flatten=True)
        if "num_records" in adds.schema.names:
            rows = int(sum(v or 0 for v in adds.column("num_records").to_pylist()))
        if not columns:
            columns = [Column(f.name, str(f.type), "not declared", "", "", [])
                       for f in pa_schema(dt_)]
    return Table(layer, name, found.zone, found.description, found.owners,
                 updated=_updated(lake, found), version=version, rows=rows, columns=columns)


def _declared(t: Table) -> list[Column]:
    """The table's columns as the declarations describe them (empty when they do not)."""
    model = load_model()
    if t.layer == "silver" and t.name in model.entities:
        lineage = column_lineage(t.name)
        return [Column(n, f.type, f.classification, f.legal_regime, f.description,
                       [f"bronze/{s}.{c}" for s, c in lineage.get(n, [])])
                for n, f in model.entities[t.name].fields.items()]
    if t.layer == "gold":
        marts = load_marts().marts
        if t.name in marts:
            from ids_lakehouse.data_requests import lineage_regimes

            # A mart column's regimes are those of the fields it derives from.
            return [Column(n, c.type, c.classification, ", ".join(sorted(
                {r for _, r in lineage_regimes(list(c.lineage)) if r != "none"})) or "none",
                c.description, list(c.lineage))
                for n, c in marts[t.name].columns.items()]
    if t.layer == "bronze":
        sources = load_sources()
        if t.name in sources:
            classes = column_classification(sources[t.name], model)
            return [Column(c, "string", classes[c], "", "as delivered", [])
                    for c in sources[t.name].columns]
    return []


def pa_schema(table: DeltaTable) -> list[pa.Field]:
    schema: pa.Schema = pa.schema(table.schema().to_arrow())
    return list(schema)


@dataclass(frozen=True)
class Quality:
    """What the lake knows of a silver table's quality: the latest expectation suite's
    outcome (Great Expectations, derived from the model) and, per source, the share of
    delivered values of each identifying field that failed validation (nulled, flagged)."""
    checked_at: str | None
    success: bool | None
    evaluated: int
    failed: list[dict[str, object]]
    invalid: dict[str, dict[str, float]]      # source -> field -> share


def quality(lake: Lake, t: Table) -> Quality | None:
    from ids_lakehouse.conform.expectations import latest_results
    from ids_lakehouse.conform.state import conformed

    if t.layer != "silver" or t.name.startswith("_"):
        return None
    result = latest_results(lake.docs("data_docs")).get(t.name, {})
    invalid = {s: {f: float(v) for f, v in sorted(st["invalid_rates"].items())}
               for s, st in sorted(conformed(lake).items())} \
        if t.name == "person_record" else {}
    return Quality(result.get("checked_at"), result.get("success"),
                   int(result.get("evaluated", 0)), list(result.get("failed", [])), invalid)


@dataclass(frozen=True)
class Graph:
    width: int
    height: int
    nodes: list[tuple[int, int, str, str | None]]   # x, y, label, link (a table page)
    edges: list[tuple[int, int, int, int]]          # x1, y1, x2, y2


ROW = 22


def lineage_graph(t: Table) -> Graph | None:
    """Column lineage drawn left to right: upstream columns, then this table's columns."""
    upstream = sorted({u for c in t.columns for u in c.lineage})
    if not upstream:
        return None
    left = {u: 30 + i * ROW for i, u in enumerate(upstream)}
    mine = [c for c in t.columns if c.lineage]
    right = {c.name: 30 + i * ROW for i, c in enumerate(mine)}
    nodes: list[tuple[int, int, str, str | None]] = [
        (10, y, u, "/console/catalog/" + u.split(".", 1)[0]) for u, y in left.items()]
    nodes += [(560, y, f"{t.key}.{n}", None) for n, y in right.items()]
    edges = [(330, left[u] - 4, 550, right[c.name] - 4) for c in mine for u in c.lineage]
    return Graph(900, 20 + ROW * max(len(left), len(right)), nodes, edges)
