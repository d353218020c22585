"""The audit log: who did what, when — runs, ingests, failures, retraining, steward
decisions, releases and refusals — in the Delta table `audit/events` (restricted zone).
Details never hold personal data.

Tamper evidence, three layers:
- the table is created with Delta's `delta.appendOnly` property, so a delete, update,
  merge or overwrite through Delta is refused;
- each event carries `seq` (1, 2, 3 …), the hash of the event before it and its own hash,
  an HMAC-SHA256 over its content and that previous hash under a key derived from
  IDS_PSEUDONYM_KEY: editing, deleting or reordering an event breaks the chain from there
  on, and nobody without the secret can write an event that verifies (an event recorded
  without the secret is marked `unsigned:` and fails verification);
- every event's (seq, hash) is also appended to an anchor file outside the lake
  (`IDS_AUDIT_ANCHORS`, default `$DAGSTER_HOME/audit/anchors-<hash of the lake's path>.jsonl`),
  each line with its own HMAC: deleting the log, cutting events off its end or restoring
  an older copy of the lake no longer matches the anchors. Someone who can rewrite both
  the lake and the anchor file can still cut both ends alike: in production point
  IDS_AUDIT_ANCHORS at storage the service can only append to (a `chattr +a` file, a WORM
  bucket).
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
import random
import socket
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from ids_lakehouse.config import Lake
from ids_lakehouse.storage import LakePath

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
CHAIN_ATTEMPTS = 100     # commits lost to another writer's before giving up
APPEND_ONLY = {"delta.appendOnly": "true"}


@lru_cache(maxsize=1)
def os_identity() -> tuple[str, str]:
    """The process's user and host (read once: the gateway names them on every event)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return user, socket.gethostname()


UNSIGNED = "unsigned:"


class AuditKeyError(RuntimeError):
    pass


def lake_name(lake: Lake) -> str:
    """Which lake a log belongs to: IDS_LAKE_NAME, or the lake's resolved path. It names
    the anchor file and is part of the signing key, so an event copied from another lake
    (a clone sharing the secret) never verifies here. A lake that moves keeps its name by
    setting IDS_LAKE_NAME to its old path (or URL: a lake on an object store is named by
    its URL)."""
    root = lake.root
    return (os.environ.get("IDS_LAKE_NAME", "").strip() or
            (str(root.resolve()) if isinstance(root, Path) else str(root)))


def signing_key(lake: Lake) -> bytes | None:
    from ids_lakehouse.config import MissingSecretError, pseudonym_key
    from ids_lakehouse.deid.pseudonym import derive_key

    try:
        return derive_key(pseudonym_key(), f"audit/chain/{lake_name(lake)}")
    except MissingSecretError:
        return None


def event_hash(event: dict[str, Any], key: bytes | None) -> str:
    """HMAC-SHA256 under `key` (the lake's audit key) over the event's fields (all but
    `hash`, prev_hash included), in schema order, canonical JSON; without a key, an
    `unsigned:` SHA-256."""
    body = {}
    for name in AUDIT_SCHEMA.names:
        if name == "hash":
            continue
        value = event.get(name)
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")
        body[name] = value
    payload = json.dumps(body, sort_keys=False, separators=(",", ":"),
                         ensure_ascii=True).encode()
    if key is None:
        return UNSIGNED + hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def anchors_path(lake: Lake) -> Path:
    """Outside the lake by default: in the Dagster instance's directory, named after the
    lake's name (nothing inside the lake decides where its anchors are), so deleting or
    restoring an older copy of the log is seen."""
    from ids_lakehouse.config import dagster_home

    custom = os.environ.get("IDS_AUDIT_ANCHORS", "").strip()
    if custom:
        return Path(custom)
    where = hashlib.sha256(lake_name(lake).encode()).hexdigest()[:16]
    return dagster_home() / "audit" / f"anchors-{where}.jsonl"


def _mac(key: bytes | None, seq: int | None, digest: str | None, version: int | None
         ) -> str | None:
    # seq, digest and version of an anchor read back from its file may be missing (None)
    if key is None:
        return None
    return hmac.new(key, f"{seq}:{digest}:{version}".encode(), hashlib.sha256).hexdigest()


def _read_anchors(path: Path) -> list[dict[str, Any]]:
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


def _last_anchor(path: Path) -> dict[str, Any] | None:
    """The last line of the anchor file, read from its end."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        block = min(size, 4096)
        f.seek(size - block)
        lines = f.read().splitlines()
    for line in reversed(lines):     # a torn last line (a crash mid-write) is skipped
        if line.strip():
            try:
                anchor: dict[str, Any] = json.loads(line)
                return anchor
            except json.JSONDecodeError:
                continue
    return None


def _append_anchors(lake: Lake, events: list[dict[str, Any]], version: int) -> None:
    key, path = signing_key(lake), anchors_path(lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"seq": e["seq"], "hash": e["hash"], "version": version,
                                "mac": _mac(key, e["seq"], e["hash"], version)}) + "\n"
                    for e in events)
    torn = _ends_torn(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (("\n" if torn else "") + lines).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_torn(path: Path) -> bool:
    """The file's last line has no end (a crash mid-write), read from its last byte only:
    reading the whole file (a line per event) each second made a gateway's commits
    slower by the hour."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _signed(event: dict[str, Any], key: bytes | None) -> bool:
    """Whether `event` carries this lake's signature over its content and link."""
    digest = str(event["hash"])
    return key is not None and not digest.startswith(UNSIGNED) and \
        hmac.compare_digest(event_hash(event, key), digest)


def _head(lake: Lake, last: dict[str, Any] | None, table: DeltaTable | None
          ) -> tuple[int, str]:
    """(seq, hash) of the last event, from the last anchor when it is current.

    Events committed after the last anchor come from a writer that died between its commit
    and its anchor, or from someone writing behind the log's back. Those that chain on
    from the anchor and carry this lake's signature are anchored now; the first that does
    not stops it, and is left for `verify` to report (the chain continues from the last
    good event). Without any anchor, nothing already in the table is anchored (trusting
    it would sign whatever was done to it): the chain continues from its last event and
    `verify` keeps reporting the unanchored ones until an operator, having looked, runs
    `audit anchor`. `last`: the anchor file's last anchor; `table`: the log as the commit
    opened it (None before its first event)."""
    from ids_lakehouse import delta

    path = lake.audit()
    if table is None:
        return (last["seq"], last["hash"]) if last else (0, GENESIS)
    version = table.version()
    if last is not None and last.get("version") == version:
        return last["seq"], last["hash"]
    events = sorted(delta.read(path, version=version).to_pylist(), key=lambda e: e["seq"])
    if last is None:
        return (events[-1]["seq"], events[-1]["hash"]) if events else (0, GENESIS)
    good = _chaining(lake, [e for e in events if e["seq"] > int(last["seq"])],
                     int(last["seq"]), last["hash"])
    if good:
        _append_anchors(lake, good, version)
        return good[-1]["seq"], good[-1]["hash"]
    return last["seq"], last["hash"]


def _chaining(lake: Lake, events: list[dict[str, Any]], after: int, prev: str
              ) -> list[dict[str, Any]]:
    """The events that follow (after, prev) link by link with this lake's signature."""
    key, good = signing_key(lake), []
    for e in events:
        if e["seq"] != after + 1 or e["prev_hash"] != prev or not _signed(e, key):
            break
        good.append(e)
        after, prev = e["seq"], e["hash"]
    return good


def anchor_unanchored(lake: Lake, operator: str) -> int:
    """After an operator has looked (`verify` lists what is unanchored): record who asked,
    then anchor the events without an anchor in the unbroken, signed part of the chain
    (from its first event to the first broken link). Returns how many. Killed half-way,
    the request is on record and verify still fails until it is run again."""
    from ids_lakehouse import delta, locks

    path = lake.audit()
    if not delta.exists(path):
        return 0
    record(lake, "audit_anchored", "an operator asked to anchor the unanchored audit events",
           actor=operator, via="cli:audit anchor")
    with locks.exclusive(lake, "audit", timeout_s=300):
        anchored = {a.get("seq") for a in _read_anchors(anchors_path(lake))}
        events = sorted(delta.read(path).to_pylist(), key=lambda e: e["seq"])
        chain = _chaining(lake, events, 0, GENESIS)
        good = [e for e in chain if e["seq"] not in anchored]
        if good:
            # The file's last line must stay the chain's head (what the next write
            # continues from): repeat the head's anchor after the back-filled ones.
            head = [] if chain[-1] is good[-1] else [chain[-1]]
            _append_anchors(lake, good + head, delta.table(path).version())
    return len(good)


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


def _check_signed_by(lake: Lake, key: bytes, last: dict[str, Any] | None) -> None:
    """The key signed this lake's log: its last anchor's MAC or, with no anchor file (a
    recreated DAGSTER_HOME), the last signed event in the log verifies under it."""
    if last is not None:
        ok = hmac.compare_digest(str(last.get("mac")), str(_mac(
            key, last.get("seq"), last.get("hash"), last.get("version"))))
    else:
        from ids_lakehouse import delta

        path = lake.audit()
        events = sorted(delta.read(path).to_pylist(), key=lambda e: e["seq"]) \
            if delta.exists(path) else []
        signed = [e for e in events if not str(e["hash"]).startswith(UNSIGNED)]
        ok = not signed or _signed(signed[-1], key)
    if not ok:
        raise AuditKeyError("IDS_PSEUDONYM_KEY (or IDS_LAKE_NAME) is not the one this "
                            "lake's audit log is signed with, or IDS_AUDIT_ANCHORS "
                            "points at another lake's anchors; nothing was recorded")


def check_key(lake: Lake) -> None:
    """Before a run writes anything: refuse (AuditKeyError) when a secret is set that did
    not sign this lake's audit log. Without the check a step wrote its tables and failed
    only when it came to audit them, leaving data no event accounts for. (A missing secret
    is left to `record`, which refuses where an event is due.)"""
    key = signing_key(lake)
    if key is not None:
        _check_signed_by(lake, key, _last_anchor(anchors_path(lake)))


def event(kind: str, message: str, *, actor: str | None = None, via: str | None = None,
          source: str | None = None, asset: str | None = None, partition: str | None = None,
          run_id: str | None = None, details: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """An event's content, timed and named now; `commit` chains and signs it."""
    user, host = os_identity()
    return {"event_id": uuid.uuid4().hex, "recorded_at": dt.datetime.now(dt.timezone.utc),
            "kind": kind, "actor": actor or f"{user}@{host}", "os_user": user, "host": host,
            "via": via, "source": source, "asset": asset, "partition": partition,
            "run_id": run_id, "message": message,
            "details": json.dumps(details or {}, sort_keys=True, default=str)}


def record(lake: Lake, kind: str, message: str, *, actor: str | None = None,
           via: str | None = None, source: str | None = None, asset: str | None = None,
           partition: str | None = None, run_id: str | None = None,
           details: dict[str, Any] | None = None) -> str:
    """Append one event to the chain (one writer at a time, across processes). Refuses
    without the secret, or with a secret that did not sign this lake's log: an event that
    can never verify would break the log for good."""
    one = event(kind, message, actor=actor, via=via, source=source, asset=asset,
                partition=partition, run_id=run_id, details=details)
    commit(lake, [one])
    return str(one["event_id"])


def commit(lake: Lake, events: list[dict[str, Any]]) -> None:
    """Chain, sign and append `events` (from `event`) in one Delta commit, in order."""
    from ids_lakehouse import crash, delta, locks, zones
    from ids_lakehouse.config import MissingSecretError

    if not events:
        return
    key = signing_key(lake)
    if key is None:
        raise MissingSecretError("IDS_PSEUDONYM_KEY is unset or too short: the audit log "
                                 "cannot be signed, so nothing that must be audited is done")
    zones.prepare(lake.root)        # private umask: the log is restricted
    with locks.exclusive(lake, "audit", timeout_s=300):
        path = lake.audit()
        # The lock serialises this machine's writers. Writers elsewhere (pods sharing a lake
        # on an object store) are serialised by the commit itself: it is made on the
        # version the chain was read from, with no retry, so of two commits chained on one
        # head only the first lands and the other is chained again on the new head.
        for attempt in range(CHAIN_ATTEMPTS):
            last = _last_anchor(anchors_path(lake))
            _check_signed_by(lake, key, last)
            # The table is opened once per commit: each opening reads its log (a gateway
            # commits every second; three openings were most of a commit's time).
            table = delta.table(path) if delta.exists(path) else None
            seq, prev = _head(lake, last, table)
            chained = []
            for body in events:
                seq += 1
                e = {"seq": seq, **{k: v for k, v in body.items() if k not in
                                    ("seq", "prev_hash", "hash")}, "prev_hash": prev}
                e["hash"] = prev = event_hash(e, key)
                chained.append(e)
            try:
                write_deltalake(table if table is not None else str(path),
                                pa.Table.from_pylist(chained, schema=AUDIT_SCHEMA),
                                mode="append", configuration=APPEND_ONLY,
                                commit_properties=CommitProperties(max_commit_retries=0))
                break
            except CommitFailedError:
                if attempt == CHAIN_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        crash.point("audit.before_anchor")
        _append_anchors(lake, chained, table.version() if table is not None
                        else delta.table(path).version())


class Spool:
    """Events of a busy service (the sharing gateway), written to the log in groups.

    `add` appends the event to this process's spool file (one write(2) with O_APPEND: a
    killed process loses nothing the kernel has) and returns; `flush`, from a background
    thread every second or so, commits what the spool holds as one event group and empties
    it. Each Delta commit costs ~100 ms: one per request made a recipient's read 15x
    slower than reading the files. The spool is in the restricted zone and holds what the
    log will (never a value). A process holds an exclusive lock on its own spool; at start,
    `recover` commits the spools whose process died (skipping events its last flush
    already committed). An event keeps the time it happened (`recorded_at`) and takes its
    place in the chain (`seq`) when committed: between processes, seq order is commit
    order, not always time order.""" 

    def __init__(self, lake: Lake) -> None:
        import fcntl
        import threading

        from ids_lakehouse import zones

        zones.prepare(lake.root)
        self.lake = lake
        self.path = spool_dir(lake) / f"{uuid.uuid4().hex}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lock = threading.Lock()

    def add(self, kind: str, message: str, **fields: Any) -> str:
        one = event(kind, message, **fields)
        line = json.dumps(one, default=_iso) + "\n"
        with self.lock:
            os.write(self.fd, line.encode())
        return str(one["event_id"])

    def flush(self) -> int:
        """Commit what is spooled; the number of events committed."""
        with self.lock:
            os.lseek(self.fd, 0, os.SEEK_SET)
            data = _read_all(self.fd)
            if not data:
                return 0
            events = _parse(data)
            commit(self.lake, events)
            from ids_lakehouse import crash

            crash.point("audit.spool_committed")
            os.ftruncate(self.fd, 0)
        return len(events)

    def close(self) -> None:
        self.flush()
        os.close(self.fd)
        self.path.unlink(missing_ok=True)

    @staticmethod
    def recover(lake: Lake) -> int:
        """Commit the spools of dead processes (those whose lock can be taken)."""
        import fcntl

        recovered = 0
        for path in sorted(spool_dir(lake).glob("*.jsonl")):
            fd = os.open(path, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue                # a live process's spool
                events = _parse(_read_all(fd))
                done = _committed_ids(lake, events)
                fresh = [e for e in events if e["event_id"] not in done]
                commit(lake, fresh)
                recovered += len(fresh)
                path.unlink()
            finally:
                os.close(fd)
        return recovered


def spool_dir(lake: Lake) -> Path:
    """Spool files need a local disk (appends and locks): for a lake on an object store,
    they are in its local folder, so a service's spool is recovered on its own host."""
    return lake.local("audit", "spool")


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="microseconds")
    raise TypeError(type(value).__name__)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: bytes) -> list[dict[str, Any]]:
    """Spooled events; a torn last line (killed mid-write) is dropped: its request never
    got an answer."""
    out = []
    for line in data.splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        e["recorded_at"] = dt.datetime.fromisoformat(e["recorded_at"])
        out.append(e)
    return out


def _committed_ids(lake: Lake, events: list[dict[str, Any]]) -> set[str]:
    """Which of `events` the log already holds (a flush committed them, then died before
    emptying its spool): they are among the log's events recorded since the first."""
    import pyarrow.dataset as pads

    from ids_lakehouse import delta

    if not events or not delta.exists(lake.audit()):
        return set()
    since = min(e["recorded_at"] for e in events)
    seen = delta.read(lake.audit(), columns=["event_id"],
                      filter=pads.field("recorded_at") >= pa.scalar(
                          since, type=pa.timestamp("us", tz="UTC")))
    return set(seen.column("event_id").to_pylist())


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
    notes: list[str] = field(default_factory=list)     # worth a look, not a broken link

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
    _check_log(out, path)
    try:
        table = delta.table(path)
        if table.metadata().configuration.get("delta.appendOnly") != "true":
            out.problems.append("the audit table is no longer append-only "
                                "(delta.appendOnly is not 'true')")
        for entry in table.history():
            operation = str(entry.get("operation", ""))
            mode = str((entry.get("operationParameters") or {}).get("mode", ""))
            if operation in NON_APPEND or (operation == "WRITE" and
                                           mode.lower() == "overwrite"):
                out.problems.append(f"Delta version {entry.get('version')}: a {operation} "
                                    "operation on the audit table")
        events = read(lake).to_pylist()
    except Exception as exc:   # a log entry or data file removed or damaged
        out.problems.append(f"the audit table cannot be read: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return out
    out.events = len(events)
    key = signing_key(lake)
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
        if str(e["hash"]).startswith(UNSIGNED):
            out.problems.append(f"seq {e['seq']} (event {e['event_id']}): unsigned (written "
                                "without IDS_PSEUDONYM_KEY): its origin cannot be vouched for")
        elif key is not None and not _signed(e, key):
            out.problems.append(f"seq {e['seq']} (event {e['event_id']}): its content does "
                                "not match its signed hash (edited or forged)")
        prev, expected = e["hash"], expected + 1
    _check_anchors(out, events, anchors, key)
    return out


def _check_log(out: Verification, path: LakePath) -> None:
    """Read the Delta log itself: every commit present, and none that removes data
    (whatever operation name it claims) or turns append-only off."""
    log = path / "_delta_log"
    versions = sorted(int(p.name.split(".")[0]) for p in log.glob("*.json")
                      if p.name.split(".")[0].isdigit())
    checkpoints = sorted(int(p.name.split(".")[0]) for p in log.glob("*.checkpoint*.parquet"))
    start = 0 if not checkpoints else min(checkpoints[-1] + 1, versions[0] if versions else 0)
    missing = sorted(set(range(start, versions[-1] + 1)) - set(versions)) if versions else []
    if missing:
        out.problems.append(f"Delta log entries missing for versions {missing[:5]}"
                            f"{' …' if len(missing) > 5 else ''} (commits deleted)")
    for version in versions:
        for number, line in enumerate((log / f"{version:020d}.json").read_text().splitlines()):
            try:
                action = json.loads(line)
            except json.JSONDecodeError:
                out.problems.append(f"Delta version {version}: line {number + 1} of its log "
                                    "entry is not JSON")
                continue
            if "remove" in action and action["remove"].get("dataChange", True):
                out.problems.append(f"Delta version {version}: removes a data file from the "
                                    "audit table")
            config = (action.get("metaData") or {}).get("configuration")
            if config is not None and config.get("delta.appendOnly") != "true":
                out.problems.append(f"Delta version {version}: sets the table's metadata "
                                    "without append-only")


def _check_anchors(out: Verification, events: list[dict[str, Any]],
                   anchors: list[dict[str, Any]], key: bytes | None) -> None:
    by_seq = {e["seq"]: e["hash"] for e in events}
    if events and not anchors:
        out.problems.append("the anchor file is missing or empty: the chain cannot be "
                            "vouched for")
        return
    seen = set()
    for a in anchors:
        if "_bad_line" in a:    # vouches for nothing (a torn write, or noise): only noted
            out.notes.append(f"anchor file line {a['_bad_line']} is not valid JSON (a write "
                             "torn by a crash?); it vouches for nothing")
            continue
        seq = a.get("seq")
        seen.add(seq)
        if key is not None and not hmac.compare_digest(str(a.get("mac")),
                                                       str(_mac(key, seq, a.get("hash"),
                                                                    a.get("version")))):
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
                            f"{unanchored[0]}); once you have checked them, `python -m "
                            "ids_lakehouse audit anchor --operator EMAIL` anchors those "
                            "that chain and are signed")
    if key is None:
        out.problems.append("IDS_PSEUDONYM_KEY is not set: the signatures of events and "
                            "anchors cannot be checked")
