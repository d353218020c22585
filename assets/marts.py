"""Gold marts for the three purposes (ids_lakehouse/marts/publish.py), each with blocking
checks, and the DuckDB warehouse of read-only views over them. Every mart's description,
purpose, column schema, lineage and checks come from data_model/marts.yaml; this module
only translates the domain's results into Dagster events."""

from collections.abc import Callable, Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetOut,
    Failure,
    MaterializeResult,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
    asset,
    multi_asset,
)

from assets.keys import (
    MART_CHECKS,
    MART_FRESHNESS,
    OWNERS,
    disclosure_key,
    gold_key,
    identity_key,
    mart_checks,
    silver_key,
)
from ids_lakehouse import audit, config, warehouse
from ids_lakehouse.config import Lake
from ids_lakehouse.marts import publish
from ids_lakehouse.marts.declaration import MartDef, load_marts
from ids_lakehouse.validation import failure_counts
from pipelines.resources import LakeResource
from schemas.gold import contract

MARTS = load_marts().marts
RESEARCH, PUBLISHED = publish.RESEARCH, publish.PUBLISHED
DEPS = [identity_key("person_xref"), silver_key("person_record"), silver_key("enrollment")]


def _lineage(mart: MartDef) -> TableColumnLineage:
    return TableColumnLineage(deps_by_column={
        col: [TableColumnDep(asset_key=AssetKey(table.split("/")), column_name=c)
              for table, c in d.lineage_pairs()]
        for col, d in mart.columns.items() if d.lineage})


def _column_schema(mart: MartDef) -> TableSchema:
    return TableSchema(columns=[
        TableColumn(name, d.type, description=d.description,
                    tags={"classification": d.classification})
        for name, d in mart.columns.items()])


def _specs() -> list[AssetCheckSpec]:
    return [AssetCheckSpec(check, asset=gold_key(m), blocking=True,
                           description=MART_CHECKS[check])
            for m in MARTS for check in mart_checks(m)]


def _outs(marts: tuple[str, ...]) -> dict[str, AssetOut]:
    return {m: AssetOut(key=gold_key(m), description=MARTS[m].description, owners=OWNERS,
                        group_name="marts", kinds={"delta", "polars"},
                        tags={"ids/layer": "gold", "ids/purpose": MARTS[m].purpose},
                        metadata={"dagster/column_schema": _column_schema(MARTS[m])},
                        freshness_policy=MART_FRESHNESS) for m in marts}


def _register_outs() -> dict[str, AssetOut]:
    return {name: AssetOut(key=disclosure_key(name), description=f"RESTRICTED: {text}",
                           owners=OWNERS, group_name="marts", kinds={"delta", "polars"},
                           tags={"ids/layer": "disclosure"})
            for name, text in publish.REGISTERS.items()}


def _who(context: AssetExecutionContext) -> dict[str, str]:
    # The publishing steps pass `who` on to audit.record, where an absent actor and a None
    # one both mean the OS account: only the launcher's known values are passed.
    launcher = audit.launched_by(dict(context.run.tags))
    return {"run_id": context.run.run_id, **{k: v for k, v in launcher.items() if v is not None}}


def _events(context: AssetExecutionContext, lake: LakeResource,
            build: Callable[[Lake, dict[str, str]], publish.Published]
            ) -> Iterator[AssetCheckResult | MaterializeResult]:
    """Run one publishing step and translate what it published into Dagster events."""
    try:
        done = build(lake.layout(), _who(context))
    except config.MissingSecretError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
    for warning in done.warnings:
        context.log.error(warning)
    for mart, table in done.tables.items():
        yield AssetCheckResult(asset_key=gold_key(mart), check_name="contract",
                               passed=not (f := failure_counts(contract(mart), table)),
                               metadata={"failures": f})
    for check in done.checks:
        yield AssetCheckResult(asset_key=gold_key(check.table), check_name=check.name,
                               passed=check.passed, metadata=check.metadata)
    for mart, table in done.tables.items():
        yield MaterializeResult(asset_key=gold_key(mart), metadata={
            "dagster/row_count": table.height, "purpose": MARTS[mart].purpose,
            "dagster/column_lineage": _lineage(MARTS[mart]), **done.metadata.get(mart, {})})
    # No row counts: a register's size night to night tells what the hold-back kept.
    for name in done.registers:
        yield MaterializeResult(asset_key=disclosure_key(name), metadata={"zone": "restricted"})


@multi_asset(outs=_outs(PUBLISHED) | _register_outs(), deps=DEPS,
             check_specs=[s for s in _specs() if s.asset_key.path[-1] in PUBLISHED])
def marts(context: AssetExecutionContext, lake: LakeResource):
    """Indicators and overlap (cell-key perturbed, from the held-back basis) and the
    restricted contact directory."""
    yield from _events(context, lake, publish.publish_marts)


@multi_asset(outs=_outs(RESEARCH), deps=DEPS,
             check_specs=[s for s in _specs() if s.asset_key.path[-1] in RESEARCH])
def research_file(context: AssetExecutionContext, lake: LakeResource):
    """The de-identified research person file and its participation, k-anonymous over the
    whole record. A separate step: when the population cannot support it within the
    policy, its blocking checks stop the research release and nothing else."""
    yield from _events(context, lake, publish.publish_research)


@asset(
    key=AssetKey(["warehouse"]),
    deps=[gold_key(m) for m in MARTS],
    group_name="marts",
    description="LAKE_ROOT/internal/warehouse/warehouse.duckdb: read-only views over the gold "
                "marts, one schema per purpose: "
                + "; ".join(f"{schema}: {', '.join(views)}"
                            for schema, views in load_marts().views().items()) + ".",
    owners=OWNERS,
    kinds={"duckdb"},
    tags={"ids/layer": "gold"},
)
def warehouse_views(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    counts = warehouse.build(lake.layout())
    return MaterializeResult(metadata={"path": str(warehouse.path(lake.layout())),
                                       "rows_by_view": counts})
