"""The lake's other tables: written by a step beside its own asset (quarantine and the
delivery ledger by ingest, conform's state by conform, linkage models by identity) or by
everything (the audit log). Declared here as external assets so the Dagster UI shows the
whole lake, with zone, owners and column schema; the step that writes one reports it (an
AssetMaterialization in its run), so its page shows when and what was written."""

import pyarrow as pa
from dagster import AssetKey, AssetSpec, TableColumn, TableSchema

from assets.keys import (
    AUDIT,
    CONFORMED,
    DELIVERIES,
    MODELS,
    OWNERS,
    quarantine_key,
    silver_key,
)
from ids_lakehouse.catalog import lake_inventory
from ids_lakehouse.sources import load_sources


def _described(layer: str, name: str) -> tuple[str, str]:
    """(description, zone) of a table, as the catalog's inventory has it."""
    for entry in lake_inventory():
        zone, _, path = entry.path.partition("/")
        if path == f"{layer}/{name}" or path.startswith(f"{layer}/{name}/"):
            return entry.description, zone
    raise KeyError(f"{layer}/{name} is not in the lake inventory")


def _schema(schema: pa.Schema, classification: dict[str, str]) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(f.name, str(f.type),
                    tags={"classification": classification.get(f.name, "non_identifying")})
        for f in schema])


def _spec(key: AssetKey, group: str, owners: list[str], kinds: set[str],
          schema: TableSchema | None = None, deps: list[AssetKey] | None = None) -> AssetSpec:
    description, zone = _described(key.path[0], key.path[1])
    return AssetSpec(key, description=description, group_name=group, owners=owners,
                     kinds=kinds, deps=deps or [],
                     tags={"ids/layer": key.path[0], "ids/zone": zone},
                     metadata={"dagster/column_schema": schema} if schema else None)


def lake_table_specs() -> list[AssetSpec]:
    from ids_lakehouse.audit import AUDIT_SCHEMA
    from ids_lakehouse.conform.state import STATE_SCHEMA
    from ids_lakehouse.ingest.bronze import QUARANTINE_SCHEMA
    from ids_lakehouse.ingest.delivery import LEDGER_SCHEMA

    specs = [_spec(quarantine_key(s), "ingest", [d.data_owner, d.steward], {"delta"},
                   _schema(QUARANTINE_SCHEMA, {"_raw": "direct_identifier"}))
             for s, d in load_sources().items()]
    specs += [
        _spec(DELIVERIES, "ingest", OWNERS, {"delta"}, _schema(LEDGER_SCHEMA, {})),
        _spec(CONFORMED, "conform", OWNERS, {"delta"}, _schema(STATE_SCHEMA, {})),
        _spec(MODELS, "identity", OWNERS, {"json", "parquet", "splink"},
              deps=[silver_key("person_record")]),
        _spec(AUDIT, "governance", OWNERS, {"delta"}, _schema(AUDIT_SCHEMA, {})),
    ]
    return specs
