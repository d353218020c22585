"""What every asset module shares, in one leaf module (it imports no other asset module):
asset keys per layer, the platform's owners, the retry policy, the marts' freshness."""

import datetime as dt

from dagster import (
    AssetKey,
    Backoff,
    DynamicPartitionsDefinition,
    FreshnessPolicy,
    RetryPolicy,
)

from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.model import load_model

# The conformed, identity and gold layers' owners, as data_model/model.yaml declares them
# (a source's bronze is owned by its data owner and steward).
OWNERS = list(load_model().owners)
# Transient I/O (a busy disk, a Delta commit race) is retried; a bad file is not.
TRANSIENT_RETRY = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL)
# The marts are published nightly; older than 36 hours means the nightly run failed twice.
MART_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=36),
                                             warn_window=dt.timedelta(hours=26))


def bronze_key(source: str) -> AssetKey:
    return AssetKey(["bronze", source])


def silver_key(entity: str) -> AssetKey:
    return AssetKey(["silver", entity])


def identity_key(table: str) -> AssetKey:
    return AssetKey(["identity", table])


def disclosure_key(table: str) -> AssetKey:
    return AssetKey(["disclosure", table])


def gold_key(mart: str) -> AssetKey:
    return AssetKey(["gold", mart])


def release_key(agreement_id: str) -> AssetKey:
    return AssetKey(["releases", agreement_id])


def quarantine_key(source: str) -> AssetKey:
    return AssetKey(["quarantine", source])


# The lake's other tables (assets/lake_tables.py): reported by the steps that write them.
DELIVERIES = AssetKey(["bronze", "_deliveries"])
CONFORMED = AssetKey(["silver", "_conformed"])
MODELS = AssetKey(["models", "linkage"])
AUDIT = AssetKey(["audit", "events"])


def files_partitions_name(source: str) -> str:
    """The name of the source's dynamic partitions (the instance stores them under it)."""
    return f"{source}_files"


def files_partitions(source: str) -> DynamicPartitionsDefinition:
    """One partition per landed file of the source."""
    return DynamicPartitionsDefinition(name=files_partitions_name(source))


# The blocking checks of the gold marts (the release gate requires every one of a mart's).
MART_CHECKS = {
    "contract": "Passes the mart's Pandera contract.",
    "no_direct_identifiers": "No SSN, phone, e-mail, full date, person_id or silver full "
                             "name anywhere in the mart.",
    "min_cell_size": "No published count under the minimum cell size (counts are cell-key "
                     "perturbed).",
    "k_anonymity": "Every class of whole records (person row and participation) has >= k "
                   "people.",
    "local_suppression": "Local suppression removed no more records than the policy allows.",
}


def mart_checks(mart: str) -> list[str]:
    """The names of the blocking checks on a mart, from its declaration."""
    declared = load_marts().marts[mart]
    return ["contract",
            *(["no_direct_identifiers"] if declared.identifier_free else []),
            *(["min_cell_size"] if declared.aggregate else []),
            *(["k_anonymity", "local_suppression"] if declared.k_anonymous else [])]
