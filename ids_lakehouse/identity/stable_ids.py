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

import secrets
from dataclasses import dataclass

import numpy as np
import polars as pl

XREF_SCHEMA = {"unique_id": pl.String, "person_id": pl.String}
INDEX_SCHEMA = {"person_id": pl.String, "minted_at": pl.Datetime("us", "UTC"),
                "minted_run": pl.String}
EVENT_SCHEMA = {"person_id": pl.String, "event": pl.String, "related_person_id": pl.String,
                "records": pl.Int64, "reason": pl.String}


def new_person_id() -> str:
    return "P" + secrets.token_hex(8).upper()


def connected_components(ids: pl.Series, edges: pl.DataFrame) -> pl.DataFrame:
    """unique_id -> cluster (an integer) over undirected edges (unique_id_l, unique_id_r)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as components

    index = pl.DataFrame({"unique_id": ids}).with_row_index("n")
    e = (edges.join(index, left_on="unique_id_l", right_on="unique_id")
         .join(index, left_on="unique_id_r", right_on="unique_id", suffix="_r"))
    n = index.height
    graph = coo_matrix((np.ones(e.height), (e["n"].to_numpy(), e["n_r"].to_numpy())),
                       shape=(n, n))
    _, labels = components(graph, directed=False)
    return index.select("unique_id", pl.Series("cluster", labels, dtype=pl.Int64))


def apply_steward_decisions(edges: pl.DataFrame, decisions: pl.DataFrame) -> pl.DataFrame:
    """Steward `match` decisions add an edge; `non_match` decisions remove one."""
    if decisions.height == 0:
        return edges.select("unique_id_l", "unique_id_r")
    d = decisions.with_columns(  # order each pair so (l, r) == (min, max)
        pl.min_horizontal("unique_id_l", "unique_id_r").alias("a"),
        pl.max_horizontal("unique_id_l", "unique_id_r").alias("b"))
    e = edges.select(pl.min_horizontal("unique_id_l", "unique_id_r").alias("a"),
                     pl.max_horizontal("unique_id_l", "unique_id_r").alias("b"))
    blocked = d.filter(pl.col("decision") == "non_match").select("a", "b")
    forced = d.filter(pl.col("decision") == "match").select("a", "b")
    kept = e.join(blocked, on=["a", "b"], how="anti")
    return pl.concat([kept, forced]).unique().rename({"a": "unique_id_l", "b": "unique_id_r"})


@dataclass
class Assignment:
    xref: pl.DataFrame      # unique_id -> person_id
    index: pl.DataFrame     # person_id -> minted_at, minted_run (every ID ever minted)
    events: pl.DataFrame    # created / merged / split


def assign(clusters: pl.DataFrame, prior_xref: pl.DataFrame, prior_index: pl.DataFrame,
           run_id: str, now) -> Assignment:
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
