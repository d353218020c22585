"""The audit log: who did what, when — runs, ingests, failures, retraining, steward
decisions, releases and refusals — in the Delta table `audit/events` (restricted zone).
Details never hold personal data.

Tamper evidence, three layers:
- the table is created with Delta's `delta.appendOnly` property, so a delete, update,
  merge or overwrite through Delta is refused;
- each event carries `seq` (1, 2, 3 …), the hash of the event before it and its own hash
  (SHA-256 over its content and that previous hash): editing, deleting or reordering an
  event breaks the chain from there on;
- every event's (seq, hash) is also appended to an anchor file outside the table
  (`IDS_AUDIT_ANCHORS`, default `audit/anchors.jsonl` beside it — point it at separate,
  append-only storage in production), each line with an HMAC under a key derived from
  IDS_PSEUDONYM_KEY: rewriting the whole chain, or cutting events off its end, no longer
  matches the anchors, and anchors cannot be forged without the secret.
`verify` (`python -m ids_lakehouse audit verify`) checks all three and names the first
broken link.

Who acted: `actor` is the authenticated principal when there is one (a steward's e-mail, a
Dagster+ user), otherwise the OS account and host; `os_user` and `host` are always the
process's own, and `via` says how the action came (a schedule, a sensor, the CLI)."""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import hmac
import json
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from ids_lakehouse.config import Lake

AUDIT_SCHEMA = pa.schema([
    ("seq", pa.int64()),
    ("event_id", pa.string()),
    ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("kind", pa.string()),          # e.g. ingest_succeeded, ingest_failed, run_failed
    ("actor", pa.string()),         # authenticated principal, else os_user@host
    ("os_user", pa.string()),
    ("host", pa.string()),
    ("via", pa.string()),           # schedule:<name>, sensor:<name>, cli:<command>, ...
    ("source", pa.string()),
    ("asset", pa.string()),
    ("partition", pa.string()),
    ("run_id", pa.string()),
    ("message", pa.string()),
    ("details", pa.string()),       # JSON
    ("prev_hash", pa.string()),
    ("hash", pa.string()),
])
GENESIS = "0" * 64
APPEND_ONLY = {"delta.appendOnly": "true"}


def os_identity() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return user, socket.gethostname()


def event_hash(event: dict) -> str:
    """SHA-256 over the event's fields (all but `hash`), in schema order, canonical JSON."""
    body = {}
    for name in AUDIT_SCHEMA.names:
        if name == "hash":
            continue
        value = event.get(name)
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
        body[name] = value
    return hashlib.sha256(json.dumps(body, sort_keys=False, separators=(",", ":"),
                                     ensure_ascii=True).encode()).hexdigest()


def anchors_path(lake: Lake) -> Path:
    custom = os.environ.get("IDS_AUDIT_ANCHORS", "").strip()
    return Path(custom) if custom else lake.place("audit") / "anchors.jsonl"


def _anchor_key() -> bytes | None:
    from ids_lakehouse.config import MissingSecretError, pseudonym_key
    from ids_lakehouse.deid.pseudonym import derive_key

    try:
        return derive_key(pseudonym_key(), "audit/anchors")
    except MissingSecretError:
        return None


def _mac(key: bytes | None, seq: int, digest: str) -> str | None:
    if key is None:
        return None
    return hmac.new(key, f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


def _read_anchors(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append({"_bad_line": number})
    return out


def _last_anchor(path: Path) -> dict | None:
    """The last line of the anchor file, read from its end."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        block = min(size, 4096)
        f.seek(size - block)
        lines = f.read().splitlines()
    for line in reversed(lines):
        if line.strip():
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _append_anchors(path: Path, events: list[dict], version: int) -> None:
    key = _anchor_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"seq": e["seq"], "hash": e["hash"], "version": version,
                                "mac": _mac(key, e["seq"], e["hash"])}) + "\n"
                    for e in events)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, lines.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _head(lake: Lake) -> tuple[int, str]:
    """(seq, hash) of the last event, from the last anchor when it is current. An event
    committed by a process that died before anchoring it is anchored now; events missing
    from the table (tampering) are not papered over: the chain continues from the anchor."""
    from ids_lakehouse import delta

    path, anchors = lake.audit(), anchors_path(lake)
    last = _last_anchor(anchors)
    if not delta.exists(path):
        return (last["seq"], last["hash"]) if last else (0, GENESIS)
    version = delta.table(path).version()
    if last is not None and last.get("version") == version:
        return last["seq"], last["hash"]
    after = 0 if last is None else int(last["seq"])
    newer = sorted((e for e in delta.read(path, columns=["seq", "hash"]).to_pylist()
                    if e["seq"] > after), key=lambda e: e["seq"])
    if newer:
        _append_anchors(anchors, newer, version)
        return newer[-1]["seq"], newer[-1]["hash"]
    return (last["seq"], last["hash"]) if last else (0, GENESIS)


def launched_by(tags: dict[str, str]) -> dict[str, str | None]:
    """`actor` and `via` of a Dagster run, from its tags: Dagster+ records the launching
    user in the `user` tag; open-source Dagster has no users, so the actor stays the OS
    account running the step."""
    if "dagster/schedule_name" in tags:
        via = f"schedule:{tags['dagster/schedule_name']}"
    elif "dagster/sensor_name" in tags:
        via = f"sensor:{tags['dagster/sensor_name']}"
    elif "dagster/backfill" in tags:
        via = f"backfill:{tags['dagster/backfill']}"
    elif "ids/trigger" in tags:
        via = f"trigger:{tags['ids/trigger']}"
    else:
        via = "launched by hand (UI, CLI or API)"
    return {"actor": tags.get("user") or None, "via": f"run {via}"}


def record(lake: Lake, kind: str, message: str, *, actor: str | None = None,
           via: str | None = None, source: str | None = None, asset: str | None = None,
           partition: str | None = None, run_id: str | None = None,
           details: dict | None = None) -> str:
    """Append one event to the chain (one writer at a time, across processes)."""
    from ids_lakehouse import delta, locks

    user, host = os_identity()
    with locks.exclusive(lake, "audit", timeout_s=300):
        seq, prev = _head(lake)
        event = {"seq": seq + 1, "event_id": uuid.uuid4().hex,
                 "recorded_at": dt.datetime.now(dt.timezone.utc), "kind": kind,
                 "actor": actor or f"{user}@{host}", "os_user": user, "host": host,
                 "via": via, "source": source, "asset": asset, "partition": partition,
                 "run_id": run_id, "message": message,
                 "details": json.dumps(details or {}, sort_keys=True, default=str),
                 "prev_hash": prev}
        event["hash"] = event_hash(event)
        path = lake.audit()
        write_deltalake(str(path), pa.Table.from_pylist([event], schema=AUDIT_SCHEMA),
                        mode="append", configuration=APPEND_ONLY)
        _append_anchors(anchors_path(lake), [event], delta.table(path).version())
    return event["event_id"]


def read(lake: Lake) -> pa.Table:
    """Every event, in order."""
    from ids_lakehouse import delta

    if not delta.exists(lake.audit()):
        return AUDIT_SCHEMA.empty_table()
    return delta.read(lake.audit()).sort_by("seq")


@dataclass
class Verification:
    events: int = 0
    anchors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


NON_APPEND = ("DELETE", "UPDATE", "MERGE", "SET TBLPROPERTIES", "RESTORE", "OPTIMIZE",
              "VACUUM START", "VACUUM END", "ADD COLUMN", "DROP COLUMNS")


def verify(lake: Lake) -> Verification:
    """Check the chain, the anchors and the table's history; problems are listed in order,
    the first broken link first."""
    from ids_lakehouse import delta

    out = Verification()
    path = lake.audit()
    anchors = _read_anchors(anchors_path(lake))
    out.anchors = len(anchors)
    if not delta.exists(path):
        if anchors:
            out.problems.append(f"the audit table {path} is gone, but {len(anchors)} events "
                                "were anchored")
        return out
    table = delta.table(path)
    if table.metadata().configuration.get("delta.appendOnly") != "true":
        out.problems.append("the audit table is no longer append-only "
                            "(delta.appendOnly is not 'true')")
    for entry in table.history():
        operation = str(entry.get("operation", ""))
        mode = str((entry.get("operationParameters") or {}).get("mode", ""))
        if operation in NON_APPEND or (operation == "WRITE" and mode.lower() == "overwrite"):
            out.problems.append(f"Delta version {entry.get('version')}: a {operation} "
                                "operation on the audit table")
    try:
        events = read(lake).to_pylist()
    except Exception as exc:   # a data file removed or damaged under the log
        out.problems.append(f"the audit table cannot be read: {type(exc).__name__}: "
                            f"{str(exc)[:200]}")
        return out
    out.events = len(events)
    prev, expected = GENESIS, 1
    for e in events:
        if e["seq"] != expected:
            gap = (f"event {expected}" if e["seq"] == expected + 1
                   else f"events {expected}..{e['seq'] - 1}")
            missing = (f"{gap} missing (deleted)" if e["seq"] > expected
                       else f"seq {e['seq']} appears again (duplicated or reordered)")
            out.problems.append(f"seq {e['seq']} (event {e['event_id']}): {missing}")
            expected = e["seq"]
        if e["prev_hash"] != prev:
            out.problems.append(f"seq {e['seq']} (event {e['event_id']}): does not follow "
                                "the event before it (prev_hash differs)")
        if event_hash(e) != e["hash"]:
            out.problems.append(f"seq {e['seq']} (event {e['event_id']}): its content does "
                                "not match its hash (edited)")
        prev, expected = e["hash"], expected + 1
    _check_anchors(out, events, anchors)
    return out


def _check_anchors(out: Verification, events: list[dict], anchors: list[dict]) -> None:
    key = _anchor_key()
    by_seq = {e["seq"]: e["hash"] for e in events}
    if events and not anchors:
        out.problems.append("the anchor file is missing or empty: the chain cannot be "
                            "vouched for")
        return
    seen = set()
    for a in anchors:
        if "_bad_line" in a:
            out.problems.append(f"anchor file line {a['_bad_line']} is not valid JSON")
            continue
        seq = a.get("seq")
        seen.add(seq)
        if key is not None and not hmac.compare_digest(str(a.get("mac")),
                                                       str(_mac(key, seq, a.get("hash")))):
            out.problems.append(f"anchor for seq {seq}: its signature is wrong (forged or "
                                "edited anchor)")
        if seq not in by_seq:
            out.problems.append(f"anchor for seq {seq}: no such event in the table "
                                "(deleted or cut off)")
        elif by_seq[seq] != a.get("hash"):
            out.problems.append(f"anchor for seq {seq}: the event's hash differs from the "
                                "anchored one (rewritten)")
    unanchored = sorted(set(by_seq) - seen)
    if unanchored:
        out.problems.append(f"{len(unanchored)} events have no anchor (first: seq "
                            f"{unanchored[0]})")
    if key is None:
        out.problems.append("IDS_PSEUDONYM_KEY is not set: anchor signatures not checked")
