"""Great Expectations suites for the silver entities, derived from the data model, run as
a second, independent opinion next to the Pandera contracts, with Data Docs a steward can
open. GX is imported lazily (it costs seconds of import time). Results use a result format
that carries counts and row positions, never values: every GX run is persisted and
rendered into the docs site, so one default-format run would publish personal data."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ids_lakehouse import storage
from ids_lakehouse.model import DataModel, load_model
from ids_lakehouse.storage import LakePath, ObjectPath

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.expectations import Expectation

SAFE_RESULT_FORMAT = {"result_format": "SUMMARY", "exclude_unexpected_values": True,
                      "partial_unexpected_count": 0}
SITE = "ids_lakehouse"


def expectations(entity: str, model: DataModel) -> list[Expectation]:
    import great_expectations.expectations as gxe

    e = model.entities[entity]
    out: list[Expectation] = []
    for name, f in e.fields.items():
        if not f.nullable:
            out.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
        if f.code_list:
            out.append(gxe.ExpectColumnValuesToBeInSet(column=name,
                                                       value_set=model.codes(f.code_list)))
        if f.pattern:
            out.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=f.pattern))
    if e.key:
        out.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=e.key))
    if any(r.name == "end_not_before_start" for r in e.rules):
        out.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="end_date", column_B="start_date", or_equal=True,
            ignore_row_if="either_value_is_missing"))
    return out


def _failure(r: ExpectationValidationResult) -> dict[str, Any]:
    """A failed expectation: which, on which column(s), how many rows; never values."""
    config = r.expectation_config
    assert config is not None       # a checkpoint's results carry their expectation
    return {"expectation": config.type,
            "column": config.kwargs.get("column")
            or ",".join(config.kwargs.get("column_list", [])),
            "unexpected_count": int(r.result.get("unexpected_count") or 0)}


def run_suites(frames: dict[str, pl.DataFrame], docs_dir: LakePath
               ) -> dict[str, dict[str, Any]]:
    """Validate each entity's frame; build Data Docs into `docs_dir` (on an object store:
    built in a private local folder, then uploaded). Returns per entity
    {success, evaluated, failed: [{expectation, column, unexpected_count}]}."""
    if isinstance(docs_dir, ObjectPath):
        with tempfile.TemporaryDirectory(prefix="ids-data-docs-") as local:
            out = _run_suites(frames, Path(local))
            storage.upload_tree(Path(local), docs_dir)
        _write_results(docs_dir, out)
        return out
    out = _run_suites(frames, docs_dir)
    _write_results(docs_dir, out)
    return out


def _run_suites(frames: dict[str, pl.DataFrame], docs_dir: Path
                ) -> dict[str, dict[str, Any]]:
    import great_expectations as gx

    model = load_model()
    docs_dir.mkdir(parents=True, exist_ok=True)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    # GX's DataDocsSiteConfigTypedDict is incomplete: SiteBuilder takes show_how_to_buttons.
    ctx.add_data_docs_site(SITE, {  # type: ignore[typeddict-unknown-key]
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
    source = ctx.data_sources.add_pandas("silver")
    validations, pandas_frames = [], {}
    for entity, frame in frames.items():
        batch = source.add_dataframe_asset(entity).add_batch_definition_whole_dataframe("all")
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"silver_{entity}"))
        for expectation in expectations(entity, model):
            suite.add_expectation(expectation)
        validations.append(ctx.validation_definitions.add(
            gx.ValidationDefinition(name=entity, data=batch, suite=suite)))
        pandas_frames[entity] = frame.to_pandas()
    out: dict[str, dict[str, Any]] = {}
    for vd in validations:
        # Each result is stored in the context (the docs are built from the store), then
        # the site is built once for all of them (a checkpoint per entity rebuilt it each).
        run = vd.run(batch_parameters={"dataframe": pandas_frames[vd.name]},
                     result_format=SAFE_RESULT_FORMAT)
        failed = [_failure(r) for r in run.results if not r.success]
        out[vd.name] = {"success": bool(run.success),
                        "evaluated": run.statistics["evaluated_expectations"],
                        "failed": failed}
    ctx.build_data_docs(site_names=[SITE])
    return out


RESULTS = "results.json"


def _write_results(docs_dir: LakePath, out: dict[str, dict[str, Any]]) -> None:
    """The latest outcome per entity, beside the Data Docs (which need the internet to
    render): what the console's quality report reads. Rules and counts, never values."""
    import datetime as dt
    import json

    path = docs_dir / RESULTS
    kept = json.loads(path.read_text()) if path.exists() else {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    kept |= {entity: {**o, "checked_at": now} for entity, o in out.items()}
    storage.write_text_atomic(path, json.dumps(kept, indent=1, sort_keys=True))


def latest_results(docs_dir: LakePath) -> dict[str, dict[str, Any]]:
    """What `run_suites` last found per entity (empty before the first run)."""
    import json

    path = docs_dir / RESULTS
    found: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}
    return found
