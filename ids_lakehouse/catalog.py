"""The catalog, generated from the declarations: a data dictionary (Markdown) and a
machine-readable DCAT-US 1.1 catalog (JSON, as federal data inventories publish), plus the
column classifications and column lineage that the Dagster assets carry as metadata."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from ids_lakehouse.agreements import load_agreements
from ids_lakehouse.identity.mpi import STEWARD_TABLE, TABLES
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.marts.publish import REGISTERS
from ids_lakehouse.model import DataModel, load_model
from ids_lakehouse.sources import SourceDefinition, load_sources
from ids_lakehouse.storage import LakePath

SENSITIVITY = ["non_identifying", "sensitive", "quasi_identifier", "direct_identifier"]


@dataclass(frozen=True)
class Entry:
    path: str           # relative to LAKE_ROOT; <x> stands for each name of a kind
    zone: str
    description: str


def lake_inventory() -> list[Entry]:
    """Every table and file the lakehouse writes, where it lives and in which access zone
    (data_model/zones.yaml), generated from the declarations."""
    from ids_lakehouse.identity.linkage import TF_COLUMNS
    from ids_lakehouse.zones import zone_of

    model, sources, agreements = load_model(), load_sources(), load_agreements()

    def entry(layer: str, name: str | None, description: str) -> Entry:
        path = f"{layer}/{name}" if name else layer
        return Entry(f"{zone_of(layer, name)}/{path}", zone_of(layer, name), description)

    out = [entry("bronze", s, f"Raw rows of {d.agency}, as delivered.")
           for s, d in sources.items()]
    out.append(entry("bronze", "_deliveries", "The delivery ledger: each delivered file "
                     "version, whether it was accepted, and its row counts."))
    out += [entry("quarantine", s, f"Rejected rows of {s}, with the delivered text and the "
                  "rule each broke.") for s in sources]
    out += [entry("silver", n, model.entities[n].description)
            for n in model.published_entities()]
    out.append(entry("silver", "_conformed", "Conform's state: which delivery of each "
                     "source the silver tables hold."))
    out.append(entry("silver", "_conform_rows", "Conform's row cache: what conform made of "
                     "each distinct delivered row (standardised fields, failures), keyed by a "
                     "hash of the row's values; a later delivery repeating the row reuses it."))
    out += [entry("identity", n, d) for n, d in [*TABLES.items(), STEWARD_TABLE]]
    models = entry("models", "linkage", "")
    out.append(Entry(f"{models.path}/linkage_model_v<n>.json", models.zone, "A linkage model: "
                     "Splink settings with trained m/u probabilities."))
    out += [Entry(f"{models.path}/linkage_model_v<n>.tf_{c}.parquet", models.zone,
                  f"Every {c} in the population with its frequency (term-frequency "
                  "adjustment of the model): as sensitive as a list of names.")
            for c in TF_COLUMNS]
    out += [entry("disclosure", n, d) for n, d in REGISTERS.items()]
    out.append(entry("audit", "events", "The audit log (hash-chained, append-only)."))
    out.append(entry("audit", None, "anchors.jsonl: signed (seq, hash) of every audit event "
                     "(unless IDS_AUDIT_ANCHORS puts it elsewhere)."))
    marts = load_marts()
    out += [entry("gold", m, marts.marts[m].description)
            for p in marts.purposes for m in marts.of_purpose(p)]
    out += [Entry(f"{zone_of('releases', a.purpose)}/releases/{a.id}",
                  zone_of("releases", a.purpose),
                  f"Versioned releases to {a.recipient.organisation} ({a.purpose}).")
            for a in agreements.values()]
    out.append(entry("warehouse", None, "warehouse.duckdb: read-only views over the marts "
                     f"{', '.join(m for v in marts.views().values() for m in v.values())}."))
    out.append(entry("data_docs", None, "Great Expectations validation results of silver."))
    out.append(entry("catalog", None, "This data dictionary and the DCAT catalog."))
    out.append(entry("_spill", None, "Temporary spill of the linkage engine (record "
                     "comparisons); emptied after each run."))
    out.append(entry("_locks", None, "Lock files serialising writers."))
    out.append(entry("sharing", "tokens", "Recipient tokens of the sharing gateway: SHA-256 "
                     "hashes only, with agreement, expiry and revocation."))
    return out


def column_classification(defn: SourceDefinition, model: DataModel) -> dict[str, str]:
    """Delivered column -> the most sensitive classification of the canonical fields it
    fills; columns the mapping does not use are 'unmapped'."""
    out: dict[str, str] = {}
    for entity, fields in defn.mapping.items():
        for name, fm in fields.items():
            c = model.entities[entity].fields[name].classification
            for column in fm.source_columns:
                prev = out.get(column)
                out[column] = c if prev is None else max(prev, c, key=SENSITIVITY.index)
    out.setdefault(defn.record_id, "direct_identifier")
    return {c: out.get(c, "unmapped") for c in defn.columns}


def column_lineage(entity: str) -> dict[str, list[tuple[str, str]]]:
    """Silver field -> [(source, delivered column)] over every source mapping."""
    lineage: dict[str, list[tuple[str, str]]] = {}
    for source, defn in load_sources().items():
        fields = defn.mapping.get(entity)
        if fields is None and entity != "person_record":
            continue
        lineage.setdefault("source_record_id", []).append((source, defn.record_id))
        for name, fm in (fields or {}).items():
            for column in fm.source_columns:
                lineage.setdefault(name, []).append((source, column))
    return lineage


def data_dictionary() -> str:
    model, sources, agreements = load_model(), load_sources(), load_agreements()
    out = ["# ids-lakehouse data dictionary", "",
           f"Generated {dt.date.today().isoformat()} from `data_model/`. Reference date for "
           f"plausibility rules: {model.as_of}.", ""]
    for name, entity in model.entities.items():
        out += [f"## Entity `{name}`", "", entity.description, ""]
        if entity.key:
            out += [f"Key: {', '.join(entity.key)}", ""]
        out += ["| field | type | classification | legal regime | code list | description |",
                "|---|---|---|---|---|---|"]
        out += [f"| `{f}` | {d.type} | {d.classification} | {d.legal_regime} | "
                f"{d.code_list or ''} | {d.description} |" for f, d in entity.fields.items()]
        out.append("")
    out += ["## Code lists", "", "| code list | description | codes |", "|---|---|---|"]
    out += [f"| `{n}` | {c.description} | {', '.join(model.codes(n))} |"
            for n, c in model.code_lists.items()]
    out.append("")
    for source, defn in sources.items():
        classes = column_classification(defn, model)
        out += [f"## Source `{source}`: {defn.agency}", "", defn.description, "",
                f"Format {defn.format}, encoding {defn.encoding}; data owner "
                f"{defn.data_owner}; steward {defn.steward}.", "",
                "| delivered column | classification | canonical fields |", "|---|---|---|"]
        for col in defn.columns:
            targets = [f"{e}.{f}" for e, fs in defn.mapping.items() for f, fm in fs.items()
                       if col in fm.source_columns]
            out.append(f"| `{col}` | {classes[col]} | {', '.join(targets)} |")
        out.append("")
    marts = load_marts()
    out += ["## Marts", "", "| mart | purpose | description |", "|---|---|---|"]
    for purpose in marts.purposes:
        out += [f"| `gold/{m}` | {purpose} | {marts.marts[m].description} |"
                for m in marts.of_purpose(purpose)]
    for name, mart in marts.marts.items():
        out += ["", f"### Mart `{name}`", "", "| column | type | classification | "
                "derived from | description |", "|---|---|---|---|---|"]
        out += [f"| `{c}` | {d.type} | {d.classification} | {', '.join(d.lineage)} | "
                f"{d.description} |" for c, d in mart.columns.items()]
    out += ["", "## Agreements", "", "| agreement | recipient | purpose | in force | marts | "
            "sources |", "|---|---|---|---|---|---|"]
    out += [f"| `{a.id}` | {a.recipient.organisation} | {a.purpose} | {a.effective} to "
            f"{a.expires} | {', '.join(a.release)} | {', '.join(a.sources)} |"
            for a in agreements.values()]
    out += ["", "## Lake inventory and access zones", "",
            "Every table and file the lakehouse writes, under LAKE_ROOT (zones: "
            "data_model/zones.yaml).", "", "| path | zone | what |", "|---|---|---|"]
    out += [f"| `{e.path}` | {e.zone} | {e.description} |" for e in lake_inventory()]
    return "\n".join(out) + "\n"


def _dataset(identifier: str, title: str, description: str, keywords: list[str],
             access: str, contact: str, publisher: str) -> dict[str, Any]:
    return {
        "@type": "dcat:Dataset", "identifier": identifier, "title": title,
        "description": description, "keyword": keywords,
        "modified": dt.date.today().isoformat(), "accessLevel": access,
        "publisher": {"@type": "org:Organization", "name": publisher},
        "contactPoint": {"@type": "vcard:Contact", "fn": contact,
                         "hasEmail": f"mailto:{contact}"},
        "bureauCode": ["000:00"], "programCode": ["000:000"],
        **({"rights": "Restricted: available only under a data sharing agreement."}
           if access != "public" else {}),
    }


def service_urls() -> tuple[str, str]:
    """(the sharing gateway's public URL, the console's URL), as configured
    (IDS_SHARING_PUBLIC_URL, IDS_CONSOLE_URL; both default to `make console`'s)."""
    import os

    gateway = (os.environ.get("IDS_SHARING_PUBLIC_URL") or "http://127.0.0.1:8080").rstrip("/")
    return gateway, (os.environ.get("IDS_CONSOLE_URL") or gateway).rstrip("/")


def _distributions(mart: str, gateway: str, console: str) -> list[dict[str, Any]]:
    """Where a mart can be had: its console page (for the catalog's readers) and, per
    agreement that releases it over Delta Sharing, the table of that share."""
    from ids_lakehouse.sharing import protocol

    out: list[dict[str, Any]] = [{
        "@type": "dcat:Distribution", "title": f"{mart}: columns, lineage and quality",
        "description": "The table's page in the steward's console (sign-in required); "
                       "data requests are filed there.",
        "accessURL": f"{console}/console/catalog/gold/{mart}", "format": "HTML",
        "mediaType": "text/html"}]
    for a in load_agreements().values():
        if mart in protocol.tables(a):
            out.append({
                "@type": "dcat:Distribution", "title": f"{mart} released under {a.id}",
                "description": f"Versioned releases to {a.recipient.organisation} "
                               f"({a.purpose}), over Delta Sharing with the recipient's "
                               "token.",
                "accessURL": f"{gateway}/delta-sharing/shares/{a.id}/schemas/"
                             f"{protocol.schema_name(a)}/tables/{mart}",
                "format": "Delta Sharing", "mediaType": "application/x-ndjson",
                "conformsTo": "https://github.com/delta-io/delta-sharing/blob/main/"
                              "PROTOCOL.md"})
    return out


def dcat_catalog(urls: tuple[str, str] | None = None) -> dict[str, Any]:
    """The DCAT-US catalog; `urls` (gateway, console) where the service is reached, by
    default as configured (service_urls)."""
    model, sources, marts = load_model(), load_sources(), load_marts()
    gateway, console = urls or service_urls()
    datasets = [
        _dataset(f"ids-lakehouse/bronze/{s}", f"{d.agency}: raw extract", d.description,
                 ["bronze", s, d.format], "non-public", d.steward, d.agency)
        for s, d in sources.items()]
    datasets += [
        _dataset(f"ids-lakehouse/silver/{n}", f"Conformed {n.replace('_', ' ')}",
                 model.entities[n].description, ["silver", n], "non-public", model.owners[0],
                 "Integrated Data System") for n in model.published_entities()]
    datasets += [
        _dataset(f"ids-lakehouse/gold/{m}", f"{m.replace('_', ' ').capitalize()} mart",
                 marts.marts[m].description, ["gold", purpose, m],
                 marts.purposes[purpose].access_level,
                 model.owners[0], "Integrated Data System")
        for purpose in marts.purposes for m in marts.of_purpose(purpose)]
    for d in datasets:
        layer, _, name = d["identifier"].removeprefix("ids-lakehouse/").partition("/")
        if layer == "gold":
            d["distribution"] = _distributions(name, gateway, console)
    listed = {d["identifier"].removeprefix("ids-lakehouse/") for d in datasets}
    zones = {e.path.split("/", 1)[1]: e.zone for e in lake_inventory()}
    for d in datasets:
        d["keyword"].append(f"zone:{zones[d['identifier'].removeprefix('ids-lakehouse/')]}")
    datasets += [
        _dataset(f"ids-lakehouse/{e.path.split('/', 1)[1]}", e.path.split("/", 1)[1],
                 e.description, [f"zone:{e.zone}"], "non-public",
                 model.owners[0], "Integrated Data System")
        for e in lake_inventory() if e.zone != "published"
        and e.path.split("/", 1)[1] not in listed and "/" in e.path.split("/", 1)[1]]
    return {"@context": "https://project-open-data.cio.gov/v1.1/schema/catalog.jsonld",
            "@type": "dcat:Catalog",
            "conformsTo": "https://project-open-data.cio.gov/v1.1/schema",
            "describedBy": "https://project-open-data.cio.gov/v1.1/schema/catalog.json",
            "dataset": datasets}


def write(folder: LakePath) -> dict[str, LakePath]:
    folder.mkdir(parents=True, exist_ok=True)
    dictionary, catalog = folder / "data_dictionary.md", folder / "catalog.json"
    dictionary.write_text(data_dictionary())
    catalog.write_text(json.dumps(dcat_catalog(), indent=2))
    return {"data_dictionary": dictionary, "catalog": catalog}
