"""The sharing gateway (FastAPI): the Delta Sharing protocol over the releases, for the
recipients of each agreement, real-time lookups in the master person index for
operations agreements (`POST /v1/lookups`, sharing/lookups.py), and differentially private
statistical queries for agreements that declare them (`POST /v1/queries`,
sharing/queries.py), and the steward's console (/console, ids_lakehouse/console).
`python -m ids_lakehouse serve` runs it under uvicorn; the OpenAPI description is at
/openapi.json (no /docs page: Swagger UI loads its scripts from a CDN, which would run
with the console's origin).

Every request is authenticated by a bearer token (sharing/tokens.py) that speaks for one
agreement, and audited: who (the token's id, never the token), which agreement, which
endpoint, the status and the latency; never a value. Data files are served by the gateway
itself through short-lived signed URLs. Errors are RFC 9457 problem details (with Delta
Sharing's errorCode and message beside them, which its clients print).

Configuration (environment): LAKE_ROOT; IDS_PSEUDONYM_KEY (the audit log's and the URL
signatures' secret); IDS_SHARING_PUBLIC_URL (the gateway's URL as recipients reach it,
e.g. behind a TLS proxy; file URLs are built on it, never on the request's Host header);
IDS_SHARING_URL_TTL_S (how long a file URL lives, default 300); IDS_SHARING_FILE_CACHE_MB
(released files held in memory per worker process, default 256, see protocol.Shelf);
IDS_SHARING_RATE_PER_MINUTE
(requests per token per minute, default 600); IDS_SHARING_REFUSALS_PER_MINUTE (refused
requests per client address per minute before it is throttled, default 30);
IDS_LOOKUP_MAX_BATCH (people per lookup request, default 100); IDS_LOOKUP_PEOPLE_PER_MINUTE
(people looked up per agreement per minute, all its tokens together, default 1,000:
guessing names and dates of birth costs one each, however batched and however many
tokens); IDS_QUERY_CELLS_PER_MINUTE (cells of statistical query answers per agreement per
minute, default 200,000: a query's work is its grid). The per-agreement limits are shared
by all the gateway's processes (sharing/limits.py); the per-token and per-address ones
are per worker process (`serve --workers N` allows N times as much of those).

Audit events are spooled and committed in groups (audit.Spool, about once a second): a
request is answered once its event is written to the spool, not to the Delta log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ids_lakehouse import audit, config, storage
from ids_lakehouse.agreements import AgreementError
from ids_lakehouse.config import Lake
from ids_lakehouse.console import web as console
from ids_lakehouse.deid.pseudonym import derive_key
from ids_lakehouse.sharing import limits, lookups, protocol, queries, tokens

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson; charset=utf-8"
VERSION_HEADER = "delta-table-version"


class Problem(Exception):
    """An RFC 9457 problem: status, title, detail (no value from the request in it)."""

    def __init__(self, status: int, title: str, detail: str, code: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.code = status, title, detail, code


def _problem(status: int, title: str, detail: str, code: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="ids-lakehouse"'} if status == 401 else None
    return JSONResponse(status_code=status, media_type="application/problem+json", content={
        "type": "about:blank", "title": title, "status": status, "detail": detail,
        "errorCode": code, "message": detail}, headers=headers)


@dataclass
class Settings:
    url_ttl_s: int = 300
    rate_per_minute: int = 600          # per token
    refusals_per_minute: int = 30       # per client address, without a valid token
    max_body_bytes: int = 16_384
    max_lookup_batch: int = 100         # people per lookup request
    lookups_per_minute: int = 1_000     # people looked up per agreement per minute
    query_cells_per_minute: int = 200_000   # cells answered per agreement per minute
    index_recheck_s: float = 60.0       # how often a lookup looks for a newer index build
    public_url: str | None = None       # where recipients reach the gateway (file URLs)
    audit_flush_s: float = 1.0          # how often spooled audit events are committed
    token_recheck_s: float = 1.0        # how soon an issued or revoked token is seen
    dagster_url: str | None = None      # the Dagster UI the console links to
    file_cache_mb: int = 256            # released files held in memory, per worker process

    @classmethod
    def from_env(cls) -> Settings:
        return cls(url_ttl_s=_positive("IDS_SHARING_URL_TTL_S", 300),
                   max_lookup_batch=_positive("IDS_LOOKUP_MAX_BATCH", 100),
                   lookups_per_minute=_positive("IDS_LOOKUP_PEOPLE_PER_MINUTE", 1_000),
                   query_cells_per_minute=_positive("IDS_QUERY_CELLS_PER_MINUTE", 200_000),
                   rate_per_minute=_positive("IDS_SHARING_RATE_PER_MINUTE", 600),
                   refusals_per_minute=_positive("IDS_SHARING_REFUSALS_PER_MINUTE", 30),
                   file_cache_mb=_positive("IDS_SHARING_FILE_CACHE_MB", 256),
                   public_url=os.environ.get("IDS_SHARING_PUBLIC_URL") or None,
                   dagster_url=os.environ.get("IDS_DAGSTER_URL") or None)


def _positive(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r} is not a whole number >= 1")
    return int(value)


@dataclass
class _RateLimiter:
    """At most `per_minute` units (requests, or people looked up) per key in any 60 s.
    The units in each key's window are kept as a running total (summing the window on
    every request cost time in proportion to the rate it limits)."""
    per_minute: int
    seen: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _used(self, key: str, now: float) -> int:
        window = self.seen.setdefault(key, deque())
        while window and window[0][0] < now - 60:
            self.total[key] -= window.popleft()[1]
        return self.total.setdefault(key, 0)

    def allow(self, key: str, units: int = 1) -> bool:
        now = time.monotonic()
        with self.lock:
            if self._used(key, now) + units > self.per_minute:
                return False
            self.seen[key].append((now, units))
            self.total[key] += units
            return True

    def exhausted(self, key: str) -> bool:
        with self.lock:
            return self._used(key, time.monotonic()) >= self.per_minute


@dataclass
class _Throttled:
    """Requests refused cheaply (429, over a limit) are audited in aggregate: one event per
    key (the token, or without one the client address), endpoint and minute with the
    count, so a flood cannot cost one audit event per request. The first refusal is
    written at once; later ones are counted and written when a minute has passed, by the
    next refusal or by `due` (the audit flusher asks every second), and at stop. A tester
    found 51 refusals audited as 36: a minute's count waited for the next refusal, under
    that refusal's endpoint, and the last minute's were never written."""
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    last: dict[tuple[str, str], float] = field(default_factory=dict)
    details: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, endpoint: str, details: dict[str, Any]
            ) -> tuple[int, dict[str, Any]] | None:
        """The count to audit now (the first refusal, then once a minute), or None."""
        now, k = time.monotonic(), (key, endpoint)
        with self.lock:
            self.counts[k] = self.counts.get(k, 0) + 1
            self.details[k] = details
            if now - self.last.get(k, -1e9) < 60:
                return None
            self.last[k] = now
            return self.counts.pop(k), self.details.pop(k)

    def due(self, everything: bool = False) -> list[tuple[int, dict[str, Any]]]:
        """Counts whose minute has passed (all of them with `everything`), taken."""
        now, out = time.monotonic(), []
        with self.lock:
            for k in list(self.counts):
                if everything or now - self.last.get(k, -1e9) >= 60:
                    self.last[k] = now
                    out.append((self.counts.pop(k), self.details.pop(k)))
        return out


def _record_throttled(spool: audit.Spool, count: int, details: dict[str, Any]) -> None:
    spool.add("sharing_throttled", f"{count} requests refused over a rate limit",
              actor=details.get("token_id", "anonymous"), via="sharing-gateway",
              details=details | {"count": count})


class QueryBody(BaseModel):
    """A query request; options of the protocol this gateway does not serve are refused,
    not ignored (a recipient must never believe they read a version they did not)."""
    model_config = ConfigDict(extra="forbid")
    version: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    limitHint: int | None = Field(default=None, ge=0, strict=True)
    predicateHints: list[str] | None = None          # hints: a server may ignore them
    jsonPredicateHints: str | None = None


def create_app(lake: Lake, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    storage.local_only(lake.root, "The sharing gateway (and its steward console)")
    if not settings.public_url:
        raise ValueError("the gateway needs its public URL (IDS_SHARING_PUBLIC_URL): file URLs "
                         "are built on it, never on a request's Host header")
    public_url = settings.public_url.rstrip("/")
    url_key = derive_key(config.pseudonym_key(), "sharing/file-urls")
    limiter, refusals = _RateLimiter(settings.rate_per_minute), \
        _RateLimiter(settings.refusals_per_minute)
    throttled = _Throttled()
    cells_answered = limits.SharedLimit(lake, "query_cells", settings.query_cells_per_minute)
    registry = tokens.Registry(lake, settings.token_recheck_s)
    shelf = protocol.Shelf(lake, settings.file_cache_mb * 2**20)
    audit.Spool.recover(lake)           # events a killed gateway spooled but never committed
    spool = audit.Spool(lake)
    flusher = _Flusher(spool, settings.audit_flush_s, throttled)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.warm()          # the person index in memory before the first request
        statistics.warm()       # and the query basis
        # One query computes at a time per process (made here, in the event loop).
        app.state.one_query = anyio.CapacityLimiter(1)
        flusher.start()
        try:
            yield
        finally:
            flusher.stop()

    # No trailing-slash redirects: Starlette builds them on the request's Host header.
    app = FastAPI(title="ids-lakehouse sharing gateway", lifespan=lifespan,
                  description="Delta Sharing over the releases of each data sharing agreement.",
                  docs_url=None, redoc_url=None, redirect_slashes=False)
    app.state.spool = spool
    service = lookups.Lookups(lake, settings.max_lookup_batch, settings.index_recheck_s,
                              limits.SharedLimit(lake, "lookup_people",
                                                 settings.lookups_per_minute))
    app.state.lookups = service
    statistics = queries.Queries(lake, settings.index_recheck_s)
    app.state.queries = statistics

    def _refused(request: Request) -> None:
        """Count a request refused for its credentials against its address; 429 once the
        address has used its allowance. Only refused requests count (one address may be a
        proxy that valid partners share: they are never locked out by others' refusals)."""
        client = _client(request)
        if refusals.exhausted(client):
            request.state.throttled = True
            raise Problem(429, "Too Many Requests", "too many refused requests from this "
                          "address", "RESOURCE_EXHAUSTED")
        refusals.allow(client)

    def _within_rate(request: Request, who: tokens.Principal) -> None:
        if not limiter.allow(who.token_id):
            request.state.throttled = True
            raise Problem(429, "Too Many Requests", "the token's rate limit is reached",
                          "RESOURCE_EXHAUSTED")

    async def principal(request: Request) -> tokens.Principal:
        # In the event loop, not a thread: it reads memory, and the token table or the
        # agreements only when they changed (a stat a second tells; the hop to a thread
        # and back cost more than the work).
        headers = request.headers.getlist("authorization")
        if len(headers) > 1:
            raise Problem(400, "Bad Request", "one Authorization header", "INVALID_REQUEST")
        scheme, _, token = (headers[0] if headers else "").partition(" ")
        bearer = scheme.lower() == "bearer" and bool(token.strip())
        who, why = registry.authenticate(token.strip()) if bearer else (None, "")
        if who is None:
            _refused(request)
            if not bearer:
                raise Problem(401, "Unauthorized", "a bearer token is required",
                              "UNAUTHENTICATED")
            request.state.denied = why
            raise Problem(401, "Unauthorized", "the token is not valid", "UNAUTHENTICATED")
        request.state.principal = who
        _within_rate(request, who)
        return who

    Auth = Depends(principal)

    @app.exception_handler(Problem)
    async def _on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem(exc.status, exc.title, exc.detail, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), str(exc.detail), "INVALID_REQUEST")

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Which parameter, never its value (FastAPI's default echoes the input).
        return _problem(400, "Bad Request", f"invalid {_fields(exc.errors())}",
                        "INVALID_REQUEST")

    @app.exception_handler(AgreementError)
    async def _on_agreements(request: Request, exc: AgreementError) -> JSONResponse:
        # Fails closed: nobody knows which agreements stand until the files load again
        # (the refusal, with the file and the reason, is in the audit log and the server
        # log; the caller is told neither).
        logging.getLogger(__name__).error("agreements refused: %s", exc)
        return _problem(503, "Service Unavailable", "the data sharing agreements cannot "
                        "be loaded: nothing is served until they are fixed", "UNAVAILABLE")

    @app.exception_handler(protocol.NotFound)
    async def _on_not_found(request: Request, exc: protocol.NotFound) -> JSONResponse:
        return _problem(404, "Not Found", str(exc), "RESOURCE_DOES_NOT_EXIST")

    app.add_middleware(_Audited, spool=spool, throttled=throttled, settings=settings)
    console.install(app, lake, spool, public_url, settings.dagster_url)
    app.state.identify = lambda request: console.signed_in_as(lake, request)

    def _share(who: tokens.Principal, share: str) -> None:
        if share != who.agreement.id:
            raise protocol.NotFound("no such share")

    def _page(items: list[dict[str, Any]], max_results: int | None, page_token: str | None
              ) -> dict[str, Any]:
        start = int(page_token) if page_token and page_token.isdigit() else 0
        if page_token and not page_token.isdigit():
            raise Problem(400, "Bad Request", "invalid pageToken", "INVALID_REQUEST")
        end = len(items) if max_results is None else start + max_results
        out: dict[str, Any] = {"items": items[start:end]}
        if end < len(items):
            out["nextPageToken"] = str(end)
        return out

    Max = Query(default=None, ge=1, le=1000, alias="maxResults")
    Token = Query(default=None, max_length=12, alias="pageToken")

    @app.get(PREFIX + "/shares")
    def list_shares(who: tokens.Principal = Auth, max_results: int | None = Max,
                    page_token: str | None = Token) -> dict[str, Any]:
        return _page([{"name": who.agreement.id, "id": who.agreement.id}], max_results,
                     page_token)

    @app.get(PREFIX + "/shares/{share}")
    def get_share(share: str, who: tokens.Principal = Auth) -> dict[str, Any]:
        _share(who, share)
        return {"share": {"name": share, "id": share}}

    @app.get(PREFIX + "/shares/{share}/schemas")
    def list_schemas(share: str, who: tokens.Principal = Auth, max_results: int | None = Max,
                     page_token: str | None = Token) -> dict[str, Any]:
        _share(who, share)
        return _page([{"name": protocol.schema_name(who.agreement), "share": share}],
                     max_results, page_token)

    def _tables(who: tokens.Principal) -> list[dict[str, Any]]:
        schema = protocol.schema_name(who.agreement)
        return [{"name": t, "schema": schema, "share": who.agreement.id, "shareId":
                 who.agreement.id} for t in protocol.tables(who.agreement)]

    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables")
    def list_tables(share: str, schema: str, who: tokens.Principal = Auth,
                    max_results: int | None = Max, page_token: str | None = Token
                    ) -> dict[str, Any]:
        _share(who, share)
        if schema != protocol.schema_name(who.agreement):
            raise protocol.NotFound("no such schema")
        return _page(_tables(who), max_results, page_token)

    @app.get(PREFIX + "/shares/{share}/all-tables")
    def all_tables(share: str, who: tokens.Principal = Auth, max_results: int | None = Max,
                   page_token: str | None = Token) -> dict[str, Any]:
        _share(who, share)
        return _page(_tables(who), max_results, page_token)

    # The protocol's endpoints run in the event loop: they read memory (the shelf), and
    # the folders only when a stat says they changed.
    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}/version")
    async def table_version(share: str, schema: str, table: str, request: Request,
                            who: tokens.Principal = Auth) -> Response:
        if {"startingTimestamp", "timestamp"} & set(request.query_params):
            raise Problem(400, "Bad Request", "startingTimestamp is not supported: versions "
                          "are release versions", "INVALID_REQUEST")
        tv = shelf.resolve(who.agreement, share, schema, table)
        request.state.table = (table, tv.version)
        return Response(status_code=200, headers={VERSION_HEADER: str(tv.version)})

    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}/metadata")
    async def table_metadata(share: str, schema: str, table: str, request: Request,
                             who: tokens.Principal = Auth) -> Response:
        if request.query_params:
            # version=0 or a timestamp was answered with the latest version.
            raise Problem(400, "Bad Request", "the metadata of a version other than the "
                          "latest is not served: query parameters are refused",
                          "INVALID_REQUEST")
        tv = shelf.resolve(who.agreement, share, schema, table)
        request.state.table = (table, tv.version)
        return _ndjson([protocol.PROTOCOL, shelf.metadata(tv)], tv.version)

    @app.post(PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}/query")
    async def query(share: str, schema: str, table: str, request: Request,
                    who: tokens.Principal = Auth) -> Response:
        # The body is read only now, after the token (and its size before, in the
        # middleware); options the gateway does not serve are refused: in the body, in
        # the URL (?version=2 was answered with version 1), or a response format other
        # than parquet (the stock client's use_delta_format failed on a parquet answer
        # with "pop from empty list").
        if request.query_params:
            raise Problem(400, "Bad Request", "the query's options are its body: no URL "
                          "parameters", "INVALID_REQUEST")
        _parquet_only(request)
        with _bad_request("invalid or unsupported"):
            raw = await _body(request, settings.max_body_bytes) or b"{}"
            lookups.refuse_repeated_keys(raw)
            body = QueryBody.model_validate_json(raw)
        tv = shelf.resolve(who.agreement, share, schema, table, body.version)
        expires = int(time.time()) + settings.url_ttl_s
        path = f"{PREFIX}/files/{share}/{tv.version}/{table}"
        sig = _sign(url_key, who.token_id, share, tv.version, table, expires, tv.sha256)
        url = f"{public_url}{path}?token_id={who.token_id}&expires={expires}&sig={sig}"
        request.state.rows, request.state.table = tv.rows, (table, tv.version)
        lines = [protocol.PROTOCOL, shelf.metadata(tv)]
        if body.limitHint != 0:
            lines.append(protocol.file_line(tv, url, expires * 1000))
        return _ndjson(lines, tv.version)

    checking: dict[Path, asyncio.Future[bytes | None]] = {}

    async def _checked(tv: protocol.TableVersion) -> bytes | None:
        """shelf.verify in a thread, once at a time per file: concurrent first reads wait
        for the same check (each read and hashed its own copy)."""
        running = checking.get(tv.path)
        if running is None:
            running = asyncio.get_running_loop().run_in_executor(None, shelf.verify, tv)
            checking[tv.path] = running
            running.add_done_callback(lambda _: checking.pop(tv.path, None))
        return await asyncio.shield(running)

    @app.get(PREFIX + "/files/{share}/{version}/{table}", name="file")
    @app.head(PREFIX + "/files/{share}/{version}/{table}", name="file_head")
    async def file(share: str, version: str, table: str, request: Request,
                   token_id: str = "", expires: str = "", sig: str = "") -> Response:
        """A data file, by a signed URL the query issued to one token for the file's bytes
        (the URL is the credential for that file, as object stores' pre-signed URLs are; it
        expires after IDS_SHARING_URL_TTL_S, dies at once with its token, and names the
        file's SHA-256: a version withdrawn and published again with other bytes under the
        same number is not served by an older URL). Valid URLs count against their token's
        rate limit, refused ones against the caller's address."""
        # Each parameter once, no other, and numbers as issued (no leading zeros): the
        # signature covers the decoded values, so a URL that parses to other text is not
        # the URL issued. (Percent-encoding a value decodes to the same value.)
        once = set(request.query_params) <= {"token_id", "expires", "sig"} and all(
            len(request.query_params.getlist(k)) <= 1 for k in ("token_id", "expires", "sig"))
        who = registry.by_id(token_id) if (
            once and _CANONICAL.fullmatch(version) and _CANONICAL.fullmatch(expires)
            and int(expires) >= time.time() and tokens.TOKEN_ID.match(token_id)) else None
        tv = None
        if who is not None and who.agreement.id == share:
            with suppress(protocol.NotFound):
                tv = shelf.resolve(who.agreement, share, protocol.schema_name(who.agreement),
                                   table, int(version))
        if who is None or tv is None or not hmac.compare_digest(sig.encode(), _sign(
                url_key, token_id, share, tv.version, table, int(expires), tv.sha256
        ).encode()):
            _refused(request)
            raise Problem(403, "Forbidden", "the file URL is not valid or has expired",
                          "PERMISSION_DENIED")
        request.state.principal = who
        _within_rate(request, who)
        request.state.table = (table, tv.version)
        try:
            data = shelf.held(tv)
            if data is None:
                data = await _checked(tv)
            etag = f'"{tv.sha256}"'
            span = _span(request, tv.size, etag)
            if span == "unsatisfiable":
                return _unsatisfiable(tv.sha256, tv.size)
            assert not isinstance(span, str)
            if data is not None:
                status, headers = _file_headers(tv.sha256, tv.size, span)
                start, end = span or (0, tv.size)
                body = b"" if request.method == "HEAD" else memoryview(data)[start:end]
                return Response(body, status_code=status, headers=headers)
            return await _from_disk(tv, span, request)
        except protocol.Altered as exc:
            logging.getLogger(__name__).error("%s", exc)
            request.state.denied = "release file altered"
            raise Problem(500, "Internal Server Error", "the released file cannot be served",
                          "INTERNAL_ERROR") from None

    async def _from_disk(tv: protocol.TableVersion, span: tuple[int, int] | None,
                         request: Request) -> Response:
        """The range asked for, read from the file as it was checked (a file that changed
        since is Altered: the next request checks it again)."""
        f = await anyio.to_thread.run_sync(open, tv.path, "rb")
        try:
            if not shelf.verified(tv, os.fstat(f.fileno())):
                raise protocol.Altered(f"release {tv.share} v{tv.version}: the file of "
                                       f"{tv.table} changed after it was checked")
            status, headers = _file_headers(tv.sha256, tv.size, span)
            start, end = span or (0, tv.size)
            if request.method == "HEAD":
                return Response(b"", status_code=status, headers=headers)
            if end - start <= SMALL_READ:
                f.seek(start)
                body = await anyio.to_thread.run_sync(f.read, end - start)
                if (start, end) == (0, tv.size) and shelf.cacheable(tv):
                    shelf.keep(tv, body)
                return Response(body, status_code=status, headers=headers)
        except BaseException:
            f.close()
            raise
        opened = f

        async def chunks() -> AsyncIterator[bytes]:
            try:
                opened.seek(start)
                left = end - start
                while left > 0:
                    chunk = await anyio.to_thread.run_sync(opened.read,
                                                           min(protocol.CHUNK, left))
                    if not chunk:
                        break
                    left -= len(chunk)
                    yield chunk
            finally:
                opened.close()

        return StreamingResponse(chunks(), status_code=status, headers=headers)

    @app.post("/v1/lookups", tags=["operations"], summary="Look people up in the master "
              "person index", response_description="One answer per submitted person")
    async def lookup(request: Request, who: tokens.Principal = Auth) -> dict[str, Any]:
        """Under an operations agreement's token: per submitted person (first name, last
        name and date of birth required; identifiers, address and phone optional), the
        agreement's permitted fields of the one person it confidently is, or
        `refer_for_review`, or `no_match`; `invalid` when a required field is unusable.
        At most IDS_LOOKUP_MAX_BATCH people (default 100) per request."""
        if who.agreement.purpose != "operations":
            raise Problem(403, "Forbidden", "this agreement's purpose does not permit "
                          "lookups", "PERMISSION_DENIED")
        _json_body(request)
        with _bad_request():
            body = lookups.LookupBody.parse(await _body(request, LOOKUP_BODY_BYTES))
        if len(body.people) > settings.max_lookup_batch:
            raise Problem(413, "Content Too Large", f"at most {settings.max_lookup_batch} "
                          "people per request", "INVALID_REQUEST")
        # People, not requests: a batch of 100 guesses is 100 guesses; per agreement, not
        # per token: ten tokens of one partner share one allowance (taken by the lookups'
        # own thread before it answers: the request waits on a future, in no thread).
        try:
            answered = await asyncio.wrap_future(service.submit(who.agreement, body.people))
        except lookups.UsedUp:
            request.state.throttled = True
            raise Problem(429, "Too Many Requests", "the agreement's lookups per minute are "
                          "used up", "RESOURCE_EXHAUSTED") from None
        except lookups.NotAnswerable as exc:
            raise Problem(503, "Service Unavailable", str(exc), "UNAVAILABLE") from None
        request.state.counts = answered.counts()
        return answered.body()

    @app.post("/v1/queries", tags=["research"], summary="Ask a statistical question",
              response_description="A differentially private table with its provenance")
    async def query_statistics(request: Request, who: tokens.Principal = Auth) -> Response:
        """Under an agreement with a `queries` section: counts of people per year (and sums
        or means of a declared measure), grouped and filtered by the agreement's query
        fields, each cell with discrete Gaussian noise, cells under the minimum cell size
        null; the query's cost is spent from the agreement's privacy-loss budget before
        the answer leaves (see sharing/queries.py)."""
        if who.agreement.queries is None:
            raise Problem(403, "Forbidden", "this agreement does not permit statistical "
                          "queries", "PERMISSION_DENIED")
        if request.query_params:
            raise Problem(400, "Bad Request", "the query is the body: no URL parameters",
                          "INVALID_REQUEST")
        _json_body(request)
        with _bad_request():
            body = queries.QueryBody.parse(await _body(request, settings.max_body_bytes))
            plan = queries.plan(body, who.agreement)
        # Work, not requests: a grid of 7,680 cells costs about a quarter of a second of
        # CPU however little budget it spends (much noise is cheap in budget).
        if not await run_in_threadpool(cells_answered.allow, who.agreement.id, len(plan.grid)):
            request.state.throttled = True
            raise Problem(429, "Too Many Requests", "the agreement's query cells per minute "
                          "are used up", "RESOURCE_EXHAUSTED")
        try:
            # One query at a time per process, waiting here rather than in a thread: a big
            # grid's noise is CPU work that would slow every other request (lookups too).
            answer = await anyio.to_thread.run_sync(statistics.ask, who.agreement,
                                                    who.token_id, plan,
                                                    limiter=request.app.state.one_query)
        except queries.BudgetExhausted as exc:
            raise Problem(403, "Forbidden", str(exc), "BUDGET_EXHAUSTED") from None
        except queries.NotReady as exc:
            raise Problem(503, "Service Unavailable", str(exc), "UNAVAILABLE") from None
        p = answer["protection"]
        request.state.query = {"shape": answer["query"], "cells": p["cells"],
                               "cells_suppressed": p["cells_suppressed"], "rho": p["rho"],
                               "repeat": p["repeat"], "query_id": answer["query_id"]}
        # Serialised directly: FastAPI's encoder walked 7,680 cells for 60 ms.
        return JSONResponse(answer, headers={"Cache-Control": "no-store"})

    return app


LOOKUP_BODY_BYTES = 262_144


def _body_limit(request: Request, settings: Settings) -> int:
    return LOOKUP_BODY_BYTES if request.url.path == "/v1/lookups" else settings.max_body_bytes


BODY_PAUSE_S = 10.0     # the longest wait for the next piece of a request body
BODY_TOTAL_S = 60.0     # and for the whole body (a byte every 9 s never paused 10 s)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes however it is sent (a chunked
    body has no Content-Length to refuse it by); 408 when the client pauses longer than
    BODY_PAUSE_S or takes over BODY_TOTAL_S in all (a tester held 50 lookups open for a
    minute, a byte every 5 s; then one for 40 s, a byte every 9 s). A client
    that hangs up mid-body is a refused request (400, audited as such), not a server
    error: each one had logged a ClientDisconnect traceback and a 500."""
    from starlette.requests import ClientDisconnect

    chunks, size = [], 0
    stream = request.stream()
    deadline = time.monotonic() + BODY_TOTAL_S
    try:
        while True:
            wait = min(BODY_PAUSE_S, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError
            try:
                chunk = await asyncio.wait_for(anext(stream), wait)
            except StopAsyncIteration:
                break
            size += len(chunk)
            if size > limit:
                raise Problem(413, "Content Too Large", "the request body is too large",
                              "INVALID_REQUEST")
            chunks.append(chunk)
    except TimeoutError:
        request.state.denied = "request body too slow"
        raise Problem(408, "Request Timeout", f"the request body paused over "
                      f"{BODY_PAUSE_S:g} s or took over {BODY_TOTAL_S:g} s",
                      "INVALID_REQUEST") from None
    except ClientDisconnect:
        request.state.denied = "client closed the connection mid-body"
        raise Problem(400, "Bad Request", "the request body ended early",
                      "INVALID_REQUEST") from None
    return b"".join(chunks)


def _parquet_only(request: Request) -> None:
    """Refuse (400) a request whose delta-sharing-capabilities ask for response formats
    that do not include parquet, the one this gateway answers in."""
    for capability in request.headers.get("delta-sharing-capabilities", "").split(";"):
        name, _, value = capability.partition("=")
        if name.strip().lower() == "responseformat":
            formats = {f.strip().lower() for f in value.split(",")}
            if "parquet" not in formats:
                raise Problem(400, "Bad Request", "this server answers in responseformat="
                              "parquet only", "INVALID_REQUEST")


def _json_body(request: Request) -> None:
    """Lookups and queries take JSON only (415 otherwise: a form or text body was read as
    JSON)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Problem(415, "Unsupported Media Type", "the body must be application/json",
                      "INVALID_REQUEST")


def app_from_env() -> FastAPI:
    """The app as `python -m ids_lakehouse serve` runs it in each worker process."""
    return create_app(config.lake(), Settings.from_env())


@contextmanager
def _bad_request(invalid: str = "invalid") -> Iterator[None]:
    """A body that does not validate is a 400 naming where (pydantic), or saying why in
    our own words (ValueError: our messages hold nothing sent)."""
    try:
        yield
    except ValidationError as exc:
        raise Problem(400, "Bad Request", f"{invalid} "
                      f"{_fields(exc.errors(include_input=False))}", "INVALID_REQUEST") from None
    except ValueError as exc:
        raise Problem(400, "Bad Request", str(exc), "INVALID_REQUEST") from None


def _fields(errors: Sequence[Any]) -> str:
    """Where validation failed (people.3.dob), never what was sent: a key the model does
    not know is the caller's text, so it is not named; at most five places."""
    where = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if e.get("type") == "extra_forbidden" and loc:
            loc[-1] = "(a field not accepted)"
        if loc[:1] == ["where"] and len(loc) > 1:     # a mapping's key is the caller's text
            loc[1] = "(a field)"
        where.append(".".join(loc) or "body")
    where = sorted(set(where))
    return ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _sign(key: bytes, token_id: str, share: str, version: int, table: str, expires: int,
          sha256: str) -> str:
    message = f"{token_id}\0{share}\0{version}\0{table}\0{expires}\0{sha256}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _ndjson(lines: list[dict[str, Any]], version: int) -> Response:
    # A few lines: one body (a streamed one took a thread hop per line).
    # The format answered in, whatever a client asked for (responseformat=delta is not
    # served): the protocol's way to say so.
    return Response("".join(json.dumps(line) + "\n" for line in lines), media_type=NDJSON,
                    headers={VERSION_HEADER: str(version), "Cache-Control": "no-store",
                             "delta-sharing-capabilities": "responseformat=parquet"})


_CANONICAL = re.compile(r"0|[1-9][0-9]{0,17}")  # ASCII digits (int() takes others), as issued
# Positions longer than the file are clamped (RFC 9110 14.1.2): 40 digits bound the parse.
_RANGE = re.compile(r"bytes=([0-9]{0,40})-([0-9]{0,40})", re.IGNORECASE)
SMALL_READ = 4 * 1024 * 1024                # a range up to this is read in one go


def _span(request: Request, size: int, etag: str) -> tuple[int, int] | str | None:
    """[start, end) of the one byte range asked for (RFC 9110 section 14: `bytes=a-b`,
    `bytes=a-`, `bytes=-n`), "unsatisfiable" (416), or None: the whole file, for no Range,
    several ranges, one this does not parse, or an If-Range naming another validator (as
    the RFC allows)."""
    wanted, if_range = request.headers.get("range"), request.headers.get("if-range")
    found = _RANGE.fullmatch(wanted.replace(" ", "")) if wanted else None
    if found is None or if_range not in (None, etag):
        return None
    first, last = found.groups()
    if not first and not last:
        return None
    if not first:                                   # the last n bytes
        n = int(last)
        return (max(size - n, 0), size) if n and size else "unsatisfiable"
    start = int(first)
    if last and int(last) < start:
        return None
    end = min(int(last) + 1, size) if last else size
    return (start, end) if start < size else "unsatisfiable"


def _file_headers(sha256: str, size: int, span: tuple[int, int] | None
                  ) -> tuple[int, dict[str, str]]:
    headers = {"Accept-Ranges": "bytes", "ETag": f'"{sha256}"', "Cache-Control": "no-store",
               "Content-Type": "application/octet-stream"}
    if span is None:
        return 200, headers | {"Content-Length": str(size)}
    start, end = span
    return 206, headers | {"Content-Range": f"bytes {start}-{end - 1}/{size}",
                           "Content-Length": str(end - start)}


def _unsatisfiable(sha256: str, size: int) -> Response:
    return Response(status_code=416, headers={"Accept-Ranges": "bytes", "ETag": f'"{sha256}"',
                                              "Content-Range": f"bytes */{size}"})


class _Audited:
    """Every request audited once it is answered (a crash too), 413 for a body declared
    too large before anything reads it, Retry-After on 429. A plain ASGI middleware:
    Starlette's BaseHTTPMiddleware (`@app.middleware`) cost about a millisecond a
    request."""

    def __init__(self, app: ASGIApp, spool: audit.Spool, throttled: _Throttled,
                 settings: Settings) -> None:
        self.app, self.spool, self.throttled, self.settings = app, spool, throttled, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        started, audited = time.perf_counter(), False

        def record(status: int) -> None:
            # Before the answer's first byte: nobody receives data that is not on record.
            nonlocal audited
            audited = True
            if getattr(request.state, "throttled", False):
                # One event per token (or, without one, per address), endpoint and minute.
                who = getattr(request.state, "principal", None)
                details: dict[str, Any] = {"client": _client(request),
                                           "endpoint": _endpoint(request)}
                if who is not None:
                    details |= {"token_id": who.token_id, "agreement": who.agreement.id}
                due = self.throttled.add(who.token_id if who is not None else
                                         _client(request), details["endpoint"], details)
                if due is not None:
                    _record_throttled(self.spool, *due)
                return
            _audit(self.spool, request, status, time.perf_counter() - started)

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                record(message["status"])
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if message["status"] == 429 and b"retry-after" not in names:
                    headers.append((b"retry-after", b"60"))
                # Answers name people and their contacts: no cache keeps one (a lookup's
                # had no Cache-Control).
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        if int(request.headers.get("content-length") or 0) > _body_limit(request,
                                                                         self.settings):
            await _problem(413, "Content Too Large", "the request body is too large",
                           "INVALID_REQUEST")(scope, receive, answer)
            return
        try:
            await self.app(scope, receive, answer)
        except Exception:
            # Audited like any other request, then Starlette answers 500 (its message and
            # traceback stay in the server's own log).
            if not audited:
                record(500)
            raise


class _Flusher(threading.Thread):
    """Commits the spooled audit events every `every_s` seconds, and once more at stop,
    with the throttled requests' counts that are due (all of them at stop)."""

    def __init__(self, spool: audit.Spool, every_s: float, throttled: _Throttled) -> None:
        super().__init__(name="audit-flusher", daemon=True)
        self.spool, self.every_s, self.stopping = spool, every_s, threading.Event()
        self.throttled = throttled

    def run(self) -> None:
        while not self.stopping.wait(self.every_s):
            try:
                for due in self.throttled.due():
                    _record_throttled(self.spool, *due)
                self.spool.flush()
            except Exception:
                # The events stay spooled; the next flush (or recover) commits them. The
                # error names no value (audit events hold none).
                logging.getLogger(__name__).exception("audit flush failed; events kept")

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join()
        for due in self.throttled.due(everything=True):
            _record_throttled(self.spool, *due)
        self.spool.close()


def _endpoint(request: Request) -> str:
    """The endpoint as routed (its template), never the raw path (the caller's text)."""
    return getattr(request.scope.get("route"), "path", None) or "unrouted"


def _audit(spool: audit.Spool, request: Request, status: int, seconds: float) -> None:
    """One event per request: the endpoint as routed (its template, never the raw path,
    which is the caller's text), who and for which agreement, the outcome and latency."""
    endpoint = _endpoint(request)
    who: tokens.Principal | None = getattr(request.state, "principal", None)
    account = getattr(request.state, "account", None)      # a console session
    details: dict[str, Any] = {"method": request.method, "endpoint": endpoint,
                               "status": status, "latency_ms": round(seconds * 1000, 1)}
    details["client"] = _client(request)
    if who is not None:
        details |= {"token_id": who.token_id, "agreement": who.agreement.id}
    if account is not None:
        details["role"] = account.role
    if getattr(request.state, "denied", None):
        details["denied"] = request.state.denied
    if getattr(request.state, "table", None) is not None:
        details["table"], details["version"] = request.state.table
    if getattr(request.state, "rows", None) is not None:
        details["rows"] = request.state.rows
    if getattr(request.state, "counts", None) is not None:
        details["outcomes"] = request.state.counts
    if getattr(request.state, "query", None) is not None:
        details["query"] = request.state.query
    if request.scope["path"].startswith("/console"):
        if account is None:     # refused before a page looked (405, 404, 413): who asked
            account = request.app.state.identify(request)
        if account is not None:
            details["role"] = account.role
        kind, via = "console_request", "console"
        actor = account.email if account is not None else "anonymous"
    else:
        kind = "sharing_request" if status < 400 else "sharing_refused"
        actor, via = (who.token_id if who else "anonymous"), "sharing-gateway"
    spool.add(kind, f"{request.method} {endpoint} -> {status}", actor=actor, via=via,
              details=details)

