"""Clusters of records -> stable person IDs.

Clustering alone renumbers people whenever data arrive; the index must not. Given the
previous index (record -> person_id, and when each person_id was minted):
- a cluster whose records all had one person_id keeps it;
- when clusters merge, the OLDEST person_id survives and each other one gets a `merged`
  event naming the survivor;
- when a cluster splits, the LARGEST part keeps the person_id and each other part gets a
  new ID with a `split` event naming where it came from;
- a cluster of new records gets a new opaque ID (random, never derived from personal data)
  with a `created` event.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import polars as pl

# Column name -> Polars type (a type class such as pl.String, or an instance: a Datetime).
ColumnTypes = dict[str, pl.DataType | type[pl.DataType]]

XREF_SCHEMA: ColumnTypes = {"unique_id": pl.String, "person_id": pl.String}
INDEX_SCHEMA: ColumnTypes = {"person_id": pl.String, "minted_at": pl.Datetime("us", "UTC"),
                             "minted_run": pl.String}
EVENT_SCHEMA: ColumnTypes = {"person_id": pl.String, "event": pl.String,
                             "related_person_id": pl.String, "records": pl.Int64,
                             "reason": pl.String}


def new_person_id() -> str:
    return "P" + secrets.token_hex(8).upper()


@dataclass
class Assignment:
    xref: pl.DataFrame      # unique_id -> person_id
    index: pl.DataFrame     # person_id -> minted_at, minted_run (every ID ever minted)
    events: pl.DataFrame    # created / merged / split


def assign(clusters: pl.DataFrame, prior_xref: pl.DataFrame, prior_index: pl.DataFrame,
           run_id: str, now: dt.datetime) -> Assignment:
    """Give each cluster a person_id, keeping prior IDs per the rules above."""
    joined = clusters.join(prior_xref, on="unique_id", how="left")
    overlap = (joined.filter(pl.col("person_id").is_not_null())
               .group_by(["person_id", "cluster"]).len("overlap")
               .join(prior_index.select("person_id", "minted_at"), on="person_id", how="left")
               .sort(["minted_at", "person_id", "overlap", "cluster"],
                     descending=[False, False, True, False]))
    cluster_id: dict[int, str] = {}
    kept: set[str] = set()
    for pid, cluster, _, _ in overlap.iter_rows():  # oldest IDs choose first, largest part
        if pid not in kept and cluster not in cluster_id:
            cluster_id[cluster] = pid
            kept.add(pid)
    sizes = dict(clusters.group_by("cluster").len().iter_rows())
    events, minted = [], []
    first_prior = dict(overlap.sort(["cluster", "overlap"], descending=[False, True])
                       .unique("cluster", keep="first").select("cluster", "person_id")
                       .iter_rows())
    for cluster in sorted(sizes):
        if cluster in cluster_id:
            continue
        pid = new_person_id()
        cluster_id[cluster] = pid
        minted.append(pid)
        origin = first_prior.get(cluster)
        events.append((pid, "split" if origin else "created", origin, sizes[cluster],
                       "part of a cluster that split" if origin else "new person"))
    # A prior ID that kept no cluster was merged into the cluster holding its records.
    for pid, cluster, _, _ in overlap.sort("overlap", descending=True).unique(
            "person_id", keep="first").iter_rows():
        if pid not in kept:
            events.append((pid, "merged", cluster_id[cluster], None,
                           "its records joined an older person"))
    xref = clusters.with_columns(
        pl.col("cluster").replace_strict(cluster_id, return_dtype=pl.String).alias("person_id")
    ).select("unique_id", "person_id")
    index = pl.concat([prior_index, pl.DataFrame(
        {"person_id": minted, "minted_at": [now] * len(minted), "minted_run": [run_id] *
         len(minted)}, schema=INDEX_SCHEMA)])
    return Assignment(xref=xref, index=index,
                      events=pl.DataFrame(events, schema=EVENT_SCHEMA, orient="row"))
