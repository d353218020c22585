"""Local accounts and sign-in sessions of the console.

An account is an e-mail address, a role and a password stored only as a salted scrypt hash
(the standard library's, n=2^14, r=8, p=1). Accounts are created and disabled from the
command line (`python -m ids_lakehouse console-user`), by an operator named in the audit
log. A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie; only its
SHA-256 is stored. It ends at sign-out, after IDLE_MINUTES without a request, after
MAX_HOURS in any case, and at once when its account is disabled. Failed sign-ins are
counted per account and address, per account and per address: past a limit, sign-in is
refused for a while even with the right password, so a password cannot be guessed at
speed (and one attacker's guesses do not lock the owner out from their own address).

Everything is in one SQLite file in the restricted zone (LAKE_ROOT/restricted/sharing/
console.sqlite), shared by the gateway's worker processes."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import sqlite3
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ids_lakehouse import audit
from ids_lakehouse.config import Lake
from ids_lakehouse.identity.mpi import STEWARD_EMAIL
from ids_lakehouse.sharing import store

# What each role may do (web.py checks these names, never the role itself).
# request: file data requests and follow one's own; requests: see everyone's;
# decide_request: approve or deny what the policy leaves to a steward.
ROLES: dict[str, frozenset[str]] = {
    "steward": frozenset({"review", "reveal", "decide", "quarantine", "quarantine_rows",
                          "releases", "catalog", "request", "requests", "decide_request"}),
    "engineer": frozenset({"quarantine", "catalog", "request"}),
    "auditor": frozenset({"review", "quarantine", "releases", "catalog", "requests"}),
    "requester": frozenset({"catalog", "request"}),
}
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
IDLE_MINUTES = 30
MAX_HOURS = 10
FAILURES_WINDOW_S = 900
# Per account and address: guessing from one place stops after five; someone else's
# guesses from elsewhere never lock the account's owner out. Per account from anywhere
# (fifty) bounds guessing spread over many addresses; per address (twenty), over many
# accounts.
FAILURES_PER_ACCOUNT_AND_ADDRESS = 5
FAILURES_PER_ACCOUNT = 50
FAILURES_PER_ADDRESS = 20
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS accounts (email TEXT PRIMARY KEY, role TEXT NOT NULL, "
    "salt BLOB NOT NULL, hash BLOB NOT NULL, created_at TEXT NOT NULL, "
    "created_by TEXT NOT NULL, disabled_at TEXT)",
    "CREATE TABLE IF NOT EXISTS sessions (token_sha256 TEXT PRIMARY KEY, email TEXT NOT NULL, "
    "csrf TEXT NOT NULL, started REAL NOT NULL, seen REAL NOT NULL, ended REAL)",
    "CREATE TABLE IF NOT EXISTS failures (key TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS failures_key ON failures (key, at)",
)


class AccountError(ValueError):
    """Why an account cannot be created or changed (one line, no password in it)."""


@dataclass(frozen=True)
class Session:
    email: str
    role: str
    csrf: str           # the token every form of this session carries
    token_sha256: str

    def may(self, action: str) -> bool:
        return action in ROLES.get(self.role, frozenset())


def path(lake: Lake) -> Path:
    return lake.local("sharing", "console.sqlite")


_LOCAL = threading.local()


def _connect(lake: Lake) -> sqlite3.Connection:
    """This thread's connection to the lake's accounts file, kept (opening one per
    request was a fifth of a lookup's time in the gateway's shared allowances)."""
    cons: dict[Path, sqlite3.Connection] = _LOCAL.__dict__.setdefault("cons", {})
    where = path(lake)
    if where not in cons or not where.exists():
        cons[where] = store.connect(lake, where, SCHEMA, durable=True)
    return cons[where]


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 1024 * 1024, **_SCRYPT)


def normalise_email(email: str) -> str:
    return unicodedata.normalize("NFC", email.strip()).lower()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is shorter than {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password is longer than {MAX_PASSWORD} characters")
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise AccountError("the password holds control characters")


def _check_email(email: str, what: str) -> None:
    if len(email) > 254 or not STEWARD_EMAIL.fullmatch(email):
        raise AccountError(f"{what} must be an e-mail address (name@domain.tld, no spaces)")


def add(lake: Lake, email: str, role: str, password: str, operator: str) -> None:
    """Create an account (audited). An existing address is refused: disable it first."""
    email, operator = normalise_email(email), normalise_email(operator)
    _check_email(email, "--email")
    _check_email(operator, "--operator")
    if role not in ROLES:
        raise AccountError(f"--role must be one of {', '.join(ROLES)}")
    check_password(password)
    salt = secrets.token_bytes(16)
    digest = _hash(password, salt)
    con = _connect(lake)
    with store.transaction(con):
        if con.execute("SELECT 1 FROM accounts WHERE email = ?", (email,)).fetchone():
            raise AccountError(f"an account for {email} exists (disable it to replace "
                               "it)")
        # Audited before it exists: an account is never usable without its record.
        audit.record(lake, "console_account_created", f"{role} account for {email}",
                     actor=operator, via="cli:console-user",
                     details={"email": email, "role": role})
        con.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    (email, role, salt, digest, _now_iso(), operator))


def disable(lake: Lake, email: str, operator: str) -> None:
    """Disable an account (audited); its sessions end with it."""
    email, operator = normalise_email(email), normalise_email(operator)
    _check_email(operator, "--operator")
    con = _connect(lake)
    with store.transaction(con):
        row = con.execute("SELECT disabled_at FROM accounts WHERE email = ?",
                          (email,)).fetchone()
        if row is None:
            raise AccountError("no such account")
        if row[0] is not None:
            raise AccountError("the account is already disabled")
        audit.record(lake, "console_account_disabled", f"account {email} disabled",
                     actor=operator, via="cli:console-user", details={"email": email})
        con.execute("UPDATE accounts SET disabled_at = ? WHERE email = ?",
                    (_now_iso(), email))
        con.execute("UPDATE sessions SET ended = ? WHERE email = ? AND ended IS NULL",
                    (_now(), email))


def listing(lake: Lake) -> list[tuple[str, str, str, str | None]]:
    """(email, role, created_at, disabled_at) of every account."""
    if not path(lake).exists():
        return []
    con = _connect(lake)
    return list(con.execute("SELECT email, role, created_at, disabled_at FROM accounts "
                            "ORDER BY email"))


class Throttled(Exception):
    """Too many failed sign-ins for this account or address; try again later."""


_DUMMY_SALT = secrets.token_bytes(16)


def sign_in(lake: Lake, email: str, password: str, address: str
            ) -> tuple[Session, str] | None:
    """A new session and its cookie value (returned once, stored only hashed), or None
    when the e-mail address or password is wrong or the account disabled (which, is not
    said). Raises Throttled past the failure limits, before any check."""
    email = normalise_email(email)[:254]
    now = _now()
    con = _connect(lake)
    limits = {f"account+address:{email}|{address}": FAILURES_PER_ACCOUNT_AND_ADDRESS,
              f"account:{email}": FAILURES_PER_ACCOUNT,
              f"address:{address}": FAILURES_PER_ADDRESS}
    # Counted as a failure before the password is checked, in the transaction that checks
    # the limits: concurrent attempts cannot all pass the check (scrypt takes ~50 ms
    # between). A right password takes its provisional failures back.
    with store.transaction(con):
        con.execute("DELETE FROM failures WHERE at < ?", (now - FAILURES_WINDOW_S,))
        for key, limit in limits.items():
            if con.execute("SELECT count(*) FROM failures WHERE key = ?",
                           (key,)).fetchone()[0] >= limit:
                raise Throttled()
        provisional = [con.execute("INSERT INTO failures VALUES (?, ?)", (k, now)).lastrowid
                       for k in limits]
    row = con.execute("SELECT role, salt, hash, disabled_at FROM accounts WHERE email = ?",
                      (email,)).fetchone()
    candidate = password[:MAX_PASSWORD]
    # The same work whether or not the account exists (no timing oracle for addresses).
    digest = _hash(candidate, row[1] if row else _DUMMY_SALT)
    if row is None or row[3] is not None or not hmac.compare_digest(digest, row[2]):
        return None
    token = secrets.token_urlsafe(32)
    session = Session(email=email, role=row[0], csrf=secrets.token_urlsafe(24),
                      token_sha256=_digest(token))
    with store.transaction(con):
        con.executemany("DELETE FROM failures WHERE rowid = ?", [(r,) for r in provisional])
        con.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, NULL)",
                    (session.token_sha256, email, session.csrf, now, now))
    return session, token


def session(lake: Lake, token: str, touch: bool = True) -> Session | None:
    """The live session of a cookie, or None (unknown, ended, idle too long, too old, or
    its account disabled). Seeing it keeps it alive, unless `touch` is False (a read
    only: for the audit of a request no page handled)."""
    if not token or len(token) > 100:
        return None
    digest, now = _digest(token), _now()
    con = _connect(lake)
    row = con.execute(
        "SELECT s.email, a.role, s.csrf, s.started, s.seen FROM sessions s JOIN accounts a "
        "ON a.email = s.email WHERE s.token_sha256 = ? AND s.ended IS NULL AND "
        "a.disabled_at IS NULL", (digest,)).fetchone()
    if row is None:
        return None
    if now - row[4] > IDLE_MINUTES * 60 or now - row[3] > MAX_HOURS * 3600:
        if touch:
            con.execute("UPDATE sessions SET ended = ? WHERE token_sha256 = ?", (now, digest))
        return None
    if touch and now - row[4] > 30:     # written at most twice a minute per session
        con.execute("UPDATE sessions SET seen = ? WHERE token_sha256 = ?", (now, digest))
    return Session(email=row[0], role=row[1], csrf=row[2], token_sha256=digest)


def sign_out(lake: Lake, session: Session) -> None:
    con = _connect(lake)
    con.execute("UPDATE sessions SET ended = ? WHERE token_sha256 = ?",
                (_now(), session.token_sha256))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> float:
    return dt.datetime.now(dt.timezone.utc).timestamp()


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
