"""Recipient tokens of the sharing gateway: issued per agreement, stored only as SHA-256
hashes in the restricted zone (LAKE_ROOT/restricted/sharing/tokens), revocable, and never
valid beyond their own expiry or their agreement's. Issuing and revoking are audited."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ids_lakehouse import audit, delta
from ids_lakehouse.agreements import Agreement, load_agreements
from ids_lakehouse.config import Lake

PREFIX = "idsl_"          # tokens are recognisable (e.g. by secret scanners) and long
SCHEMA = pa.schema([("token_id", pa.string()), ("agreement", pa.string()),
                    ("token_sha256", pa.string()),
                    ("issued_at", pa.timestamp("us", tz="UTC")),
                    ("expires_at", pa.timestamp("us", tz="UTC")),
                    ("issued_by", pa.string()),
                    ("revoked_at", pa.timestamp("us", tz="UTC")),
                    ("revoked_by", pa.string())])
DEFAULT_DAYS = 90
TOKEN_ID = re.compile(r"^tok_[0-9a-f]{12}$")


class TokenError(ValueError):
    """Why a token cannot be issued or revoked (one line, no token in it)."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for: the token's id (never the token) and its agreement."""
    token_id: str
    agreement: Agreement
    expires_at: dt.datetime


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _path(lake: Lake) -> Any:
    return lake.table("sharing", "tokens")


def _end_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.max, tzinfo=dt.timezone.utc)


def issue(lake: Lake, agreement_id: str, issued_by: str, days: int = DEFAULT_DAYS,
          now: dt.datetime | None = None) -> tuple[str, str, dt.datetime]:
    """A new token for the agreement: (token, token_id, expires_at). The token is returned
    once and stored only as its hash; it expires after `days` or with the agreement,
    whichever comes first."""
    agreement = load_agreements().get(agreement_id)
    if agreement is None:
        raise TokenError(f"no agreement {agreement_id!r} in data_model/agreements")
    now = now or dt.datetime.now(dt.timezone.utc)
    if not agreement.effective <= now.date() <= agreement.expires:
        raise TokenError(f"agreement {agreement_id} is not in force today "
                         f"({agreement.effective} to {agreement.expires})")
    if days < 1:
        raise TokenError("a token lives at least one day")
    expires = min(now + dt.timedelta(days=days), _end_of(agreement.expires))
    token = PREFIX + secrets.token_urlsafe(32)
    token_id = "tok_" + secrets.token_hex(6)
    # Audited first: a token never exists without the record of who asked for it.
    audit.record(lake, "sharing_token_issued", f"token {token_id} for {agreement_id}",
                 actor=issued_by, details={"token_id": token_id, "agreement": agreement_id,
                                           "expires_at": expires.isoformat()})
    row = {"token_id": token_id, "agreement": agreement_id, "token_sha256": digest(token),
           "issued_at": now, "expires_at": expires, "issued_by": issued_by,
           "revoked_at": None, "revoked_by": None}
    from deltalake import write_deltalake

    write_deltalake(str(_path(lake)), pa.Table.from_pylist([row], schema=SCHEMA), mode="append")
    return token, token_id, expires


def revoke(lake: Lake, token_id: str, revoked_by: str) -> None:
    """Revoke a token for good (audited first); revoking it again changes nothing."""
    if not TOKEN_ID.match(token_id):
        raise TokenError("a token id looks like tok_ and 12 hex digits")
    path = _path(lake)
    rows = delta.read(path, filter=pc.field("token_id") == token_id).to_pylist() \
        if delta.exists(path) else []
    if not rows:
        raise TokenError(f"no token {token_id}")
    if rows[0]["revoked_at"] is not None:
        return
    audit.record(lake, "sharing_token_revoked", f"token {token_id} revoked", actor=revoked_by,
                 details={"token_id": token_id, "agreement": rows[0]["agreement"]})
    row = rows[0] | {"revoked_at": dt.datetime.now(dt.timezone.utc), "revoked_by": revoked_by}
    delta.replace(path, pa.Table.from_pylist([row], schema=SCHEMA), f"token_id = '{token_id}'")


@dataclass(frozen=True)
class _Held:
    """What a registry holds, replaced whole (a request reads one consistent version)."""
    by_digest: dict[str, dict[str, Any]]
    by_token_id: dict[str, dict[str, Any]]
    agreements: dict[str, Agreement]


class Registry:
    """The token table as a long-running service reads it: held in memory and re-read when
    it changes, which is looked at most every `recheck_s` seconds; the agreements the
    same way. A token issued or revoked (an agreement edited) is seen by the next request
    after that (default 1 s): reading the table on every request cost milliseconds a
    lookup does not have. A change is seen by `delta.log_state`, a stat, not a read of
    the log."""

    def __init__(self, lake: Lake, recheck_s: float = 1.0) -> None:
        import threading

        self.lake, self.recheck_s = lake, recheck_s
        self.lock = threading.Lock()
        self.checked: float = -1e9
        self.log_state: tuple[int, int] | None = None
        self.held = _Held({}, {}, {})

    def _current(self) -> _Held:
        import time

        with self.lock:
            if time.monotonic() - self.checked >= self.recheck_s:
                path = _path(self.lake)
                state = delta.log_state(path)
                by_digest, by_token_id = self.held.by_digest, self.held.by_token_id
                if state != self.log_state:
                    rows = delta.read(path).to_pylist() if state is not None else []
                    by_digest = {r["token_sha256"]: r for r in rows}
                    by_token_id = {r["token_id"]: r for r in rows}
                    self.log_state = state
                self.held = _Held(by_digest, by_token_id, load_agreements())
                self.checked = time.monotonic()
            return self.held

    def authenticate(self, token: str, now: dt.datetime | None = None
                     ) -> tuple[Principal | None, str]:
        """The principal a bearer token speaks for, or None and why (for the audit log:
        the reason names no token)."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None, "malformed token"
        held = self._current()
        row = held.by_digest.get(digest(token))
        if row is None:
            return None, "unknown token"
        return _valid(row, now or dt.datetime.now(dt.timezone.utc), held.agreements)

    def by_id(self, token_id: str, now: dt.datetime | None = None) -> Principal | None:
        """The principal of a token still valid, by its id (a signed file URL names it)."""
        held = self._current()
        row = held.by_token_id.get(token_id) if TOKEN_ID.match(token_id) else None
        return _valid(row, now or dt.datetime.now(dt.timezone.utc),
                      held.agreements)[0] if row else None


def _valid(row: dict[str, Any], now: dt.datetime, agreements: dict[str, Agreement]
           ) -> tuple[Principal | None, str]:
    if row["revoked_at"] is not None:
        return None, f"token {row['token_id']} revoked"
    if now > row["expires_at"]:
        return None, f"token {row['token_id']} expired"
    agreement = agreements.get(row["agreement"])
    if agreement is None or not agreement.effective <= now.date() <= agreement.expires:
        return None, f"token {row['token_id']}: agreement {row['agreement']} not in force"
    return Principal(row["token_id"], agreement, row["expires_at"]), ""
