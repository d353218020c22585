"""The sharing gateway (FastAPI): the Delta Sharing protocol over the releases, for the
recipients of each agreement. `python -m ids_lakehouse serve` runs it under uvicorn.

Every request is authenticated by a bearer token (sharing/tokens.py) that speaks for one
agreement, and audited: who (the token's id, never the token), which agreement, which
endpoint, the status and the latency; never a value. Data files are served by the gateway
itself through short-lived signed URLs. Errors are RFC 9457 problem details (with Delta
Sharing's errorCode and message beside them, which its clients print).

Configuration (environment): LAKE_ROOT; IDS_PSEUDONYM_KEY (the audit log's and the URL
signatures' secret); IDS_SHARING_URL_TTL_S (how long a file URL lives, default 300);
IDS_SHARING_RATE_PER_MINUTE (requests per token per minute, default 600)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ids_lakehouse import audit, config
from ids_lakehouse.config import Lake
from ids_lakehouse.deid.pseudonym import derive_key
from ids_lakehouse.sharing import protocol, tokens

PREFIX = "/delta-sharing"
NDJSON = "application/x-ndjson; charset=utf-8"
VERSION_HEADER = "delta-table-version"


class Problem(Exception):
    """An RFC 9457 problem: status, title, detail (no value from the request in it)."""

    def __init__(self, status: int, title: str, detail: str, code: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.code = status, title, detail, code


def _problem(status: int, title: str, detail: str, code: str) -> JSONResponse:
    return JSONResponse(status_code=status, media_type="application/problem+json", content={
        "type": "about:blank", "title": title, "status": status, "detail": detail,
        "errorCode": code, "message": detail})


@dataclass
class Settings:
    url_ttl_s: int = 300
    rate_per_minute: int = 600

    @classmethod
    def from_env(cls) -> Settings:
        return cls(url_ttl_s=_positive("IDS_SHARING_URL_TTL_S", 300),
                   rate_per_minute=_positive("IDS_SHARING_RATE_PER_MINUTE", 600))


def _positive(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r} is not a whole number >= 1")
    return int(value)


@dataclass
class _RateLimiter:
    per_minute: int
    seen: dict[str, deque[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            window = self.seen.setdefault(key, deque())
            while window and window[0] < now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                return False
            window.append(now)
            return True


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: int | None = Field(default=None, ge=1)
    limitHint: int | None = Field(default=None, ge=0)


def create_app(lake: Lake, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    url_key = derive_key(config.pseudonym_key(), "sharing/file-urls")
    limiter = _RateLimiter(settings.rate_per_minute)
    app = FastAPI(title="ids-lakehouse sharing gateway",
                  description="Delta Sharing over the releases of each data sharing agreement.")

    def principal(request: Request) -> tokens.Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "Unauthorized", "a bearer token is required", "UNAUTHENTICATED")
        who, why = tokens.authenticate(lake, token.strip())
        if who is None:
            request.state.denied = why
            raise Problem(401, "Unauthorized", "the token is not valid", "UNAUTHENTICATED")
        request.state.principal = who
        if not limiter.allow(who.token_id):
            raise Problem(429, "Too Many Requests", "the token's rate limit is reached",
                          "RESOURCE_EXHAUSTED")
        return who

    Auth = Depends(principal)

    @app.exception_handler(Problem)
    async def _on_problem(request: Request, exc: Problem) -> JSONResponse:
        return _problem(exc.status, exc.title, exc.detail, exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), str(exc.detail), "INVALID_REQUEST")

    @app.exception_handler(protocol.NotFound)
    async def _on_not_found(request: Request, exc: protocol.NotFound) -> JSONResponse:
        return _problem(404, "Not Found", str(exc), "RESOURCE_DOES_NOT_EXIST")

    @app.middleware("http")
    async def _audited(request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The audit log's writer takes a file lock and commits: off the event loop.
        await run_in_threadpool(_audit, lake, request, response.status_code,
                                time.perf_counter() - started)
        return response

    def _share(who: tokens.Principal, share: str) -> None:
        if share != who.agreement.id:
            raise protocol.NotFound("no such share")

    @app.get(PREFIX + "/shares")
    def list_shares(who: tokens.Principal = Auth) -> dict[str, Any]:
        return {"items": [{"name": who.agreement.id, "id": who.agreement.id}]}

    @app.get(PREFIX + "/shares/{share}")
    def get_share(share: str, who: tokens.Principal = Auth) -> dict[str, Any]:
        _share(who, share)
        return {"share": {"name": share, "id": share}}

    @app.get(PREFIX + "/shares/{share}/schemas")
    def list_schemas(share: str, who: tokens.Principal = Auth) -> dict[str, Any]:
        _share(who, share)
        return {"items": [{"name": protocol.schema_name(who.agreement), "share": share}]}

    def _tables(who: tokens.Principal) -> list[dict[str, str]]:
        schema = protocol.schema_name(who.agreement)
        return [{"name": t, "schema": schema, "share": who.agreement.id, "shareId":
                 who.agreement.id} for t in protocol.tables(who.agreement)]

    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables")
    def list_tables(share: str, schema: str, who: tokens.Principal = Auth) -> dict[str, Any]:
        _share(who, share)
        if schema != protocol.schema_name(who.agreement):
            raise protocol.NotFound("no such schema")
        return {"items": _tables(who)}

    @app.get(PREFIX + "/shares/{share}/all-tables")
    def all_tables(share: str, who: tokens.Principal = Auth) -> dict[str, Any]:
        _share(who, share)
        return {"items": _tables(who)}

    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}/version")
    def table_version(share: str, schema: str, table: str,
                      who: tokens.Principal = Auth) -> Response:
        tv = protocol.resolve(lake, who.agreement, share, schema, table)
        return Response(status_code=200, headers={VERSION_HEADER: str(tv.version)})

    @app.get(PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}/metadata")
    def table_metadata(share: str, schema: str, table: str,
                       who: tokens.Principal = Auth) -> Response:
        tv = protocol.resolve(lake, who.agreement, share, schema, table)
        return _ndjson([protocol.PROTOCOL, protocol.metadata(tv)], tv.version)

    @app.post(PREFIX + "/shares/{share}/schemas/{schema}/tables/{table}/query")
    def query(share: str, schema: str, table: str, request: Request, body: QueryBody,
              who: tokens.Principal = Auth) -> Response:
        tv = protocol.resolve(lake, who.agreement, share, schema, table, body.version)
        expires = int(time.time()) + settings.url_ttl_s
        url = str(request.url_for("file", share=share, version=str(tv.version), table=table))
        url += f"?expires={expires}&sig={_sign(url_key, share, tv.version, table, expires)}"
        request.state.rows = tv.rows
        lines = [protocol.PROTOCOL, protocol.metadata(tv)]
        if body.limitHint != 0:
            lines.append(protocol.file_line(tv, url, expires * 1000))
        return _ndjson(lines, tv.version)

    @app.api_route(PREFIX + "/files/{share}/{version}/{table}", methods=["GET", "HEAD"],
                   name="file")
    def file(share: str, version: str, table: str, expires: int = 0, sig: str = ""
             ) -> Response:
        """A data file, by a signed URL the query issued (the URL is the credential, as
        object stores' pre-signed URLs are; it expires after IDS_SHARING_URL_TTL_S)."""
        if not version.isdigit() or expires < time.time() or not hmac.compare_digest(
                sig, _sign(url_key, share, int(version), table, expires)):
            raise Problem(403, "Forbidden", "the file URL is not valid or has expired",
                          "PERMISSION_DENIED")
        from ids_lakehouse.agreements import load_agreements

        agreement = load_agreements().get(share)
        if agreement is None:
            raise protocol.NotFound("no such file")
        tv = protocol.resolve(lake, agreement, share, protocol.schema_name(agreement), table,
                              int(version))
        return FileResponse(tv.path, media_type="application/octet-stream",
                            headers={"Cache-Control": "private, max-age=0"})

    return app


def _sign(key: bytes, share: str, version: int, table: str, expires: int) -> str:
    message = f"{share}\0{version}\0{table}\0{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _ndjson(lines: list[dict[str, Any]], version: int) -> Response:
    def body() -> Iterator[str]:
        for line in lines:
            yield json.dumps(line) + "\n"

    return StreamingResponse(body(), media_type=NDJSON, headers={VERSION_HEADER: str(version)})


def _audit(lake: Lake, request: Request, status: int, seconds: float) -> None:
    """One event per request: the endpoint as routed (its template, never the raw path,
    which is the caller's text), who and for which agreement, the outcome and latency."""
    route = request.scope.get("route")
    endpoint = getattr(route, "path", None) or "unrouted"
    who: tokens.Principal | None = getattr(request.state, "principal", None)
    details: dict[str, Any] = {"method": request.method, "endpoint": endpoint,
                               "status": status, "latency_ms": round(seconds * 1000, 1)}
    if who is not None:
        details |= {"token_id": who.token_id, "agreement": who.agreement.id}
    if getattr(request.state, "denied", None):
        details["denied"] = request.state.denied
    if getattr(request.state, "rows", None) is not None:
        details["rows"] = request.state.rows
    kind = "sharing_request" if status < 400 else "sharing_refused"
    audit.record(lake, kind, f"{request.method} {endpoint} -> {status}",
                 actor=who.token_id if who else None, via="sharing-gateway", details=details)
