"""The console's pages (server-rendered HTML, no script), mounted by the gateway under
/console.

Security, page by page: every page but sign-in needs a live session (accounts.py) whose
role permits it (accounts.ROLES); every form carries the session's CSRF token, and a
request whose Origin is not the console's own is refused; sign-in itself is protected by
a double-submitted token. Pages are never cached, cannot be framed, and load nothing but
their own style sheet (Content-Security-Policy). Personal data is shown in two places
only, to stewards: a review pair's values after "Reveal" and a delivery's quarantined
rows; each showing is an audit event naming the steward and what was shown (never the
values). Every request is audited anyway by the gateway (who, page, status)."""

from __future__ import annotations

import datetime as dt
import logging
import posixpath
import secrets
import unicodedata
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool

from ids_lakehouse import audit, data_requests
from ids_lakehouse.catalog import dcat_catalog
from ids_lakehouse.config import Lake
from ids_lakehouse.console import accounts, catalog, views
from ids_lakehouse.identity.mpi import DECISIONS, DecisionError, decide
from ids_lakehouse.marts.declaration import load_marts
from ids_lakehouse.sources import load_sources

HERE = Path(__file__).parent      # templates/ and static/ beside this module
COOKIE = "idsl_console"
LOGIN_COOKIE = "idsl_login"
MAX_FORM_BYTES = 16_384
PAGE = 100          # pairs or requests per page
DECISION_WORDS = {"match": "same person", "non_match": "different people"}
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    # Not "no-referrer": with it Chromium sends "Origin: null" on the console's own forms.
    "Referrer-Policy": "same-origin",
}


class Refused(Exception):
    """A console request refused: status and a message for the page (no value in it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class SignInNeeded(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__("sign in")
        self.next_path = next_path


class Pages:
    """Renders the templates (autoescaped; a missing variable is an error, not a blank)."""

    def __init__(self, dagster_url: str | None) -> None:
        self.dagster_url = dagster_url
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(["html"]),
                               undefined=StrictUndefined, trim_blocks=True,
                               lstrip_blocks=True)
        self.env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M UTC") if v else ""
        self.env.filters["weight"] = lambda v: "n/a" if v is None else f"{v:+.1f}"
        self.env.filters["num"] = lambda v: f"{v:,}"
        self.env.filters["visible"] = visible
        self.env.filters["decision"] = lambda v: DECISION_WORDS.get(v, v)
        self.env.filters["plural"] = lambda n, word: f"{n:,} {word}{'' if n == 1 else 's'}"

    def __call__(self, template: str, session: accounts.Session | None, status: int = 200,
                 **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(session=session,
                                                      dagster_url=self.dagster_url, **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)


def router(lake: Lake, spool: audit.Spool, public_url: str, page: Pages) -> APIRouter:
    origin = _origin(public_url)
    secure = public_url.startswith("https://")
    css = (HERE / "static" / "console.css").read_bytes()
    r = APIRouter(prefix="/console", include_in_schema=False)

    def signed_in(request: Request) -> accounts.Session:
        session = accounts.session(lake, request.cookies.get(COOKIE, ""))
        if session is None:
            raise SignInNeeded(request.url.path)
        request.state.account = session
        return session

    def needs(*actions: str) -> Callable[..., accounts.Session]:
        """A session whose role may do any of `actions`."""
        def check(session: accounts.Session = Depends(signed_in)) -> accounts.Session:
            if not any(session.may(a) for a in actions):
                article = "an" if session.role[0] in "aeiou" else "a"
                raise Refused(403, f"{article} {session.role} account cannot open this page")
            return session
        return check

    async def form(request: Request, session: accounts.Session | None,
                   multi: tuple[str, ...] = ()) -> dict[str, Any]:
        """The posted form, checked: its size, its origin and (signed in) its CSRF token.
        Fields named in `multi` are lists (checkboxes); any other sent twice is refused."""
        if request.headers.get("origin") not in (None, origin):
            raise Refused(403, "the form was not sent from this console")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise Refused(413, "the form is too large")
        try:
            pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                           max_num_fields=300)
        except (UnicodeDecodeError, ValueError):
            raise Refused(400, "the form could not be read") from None
        fields: dict[str, Any] = {name: [] for name in multi}
        for key, value in pairs:
            if key in multi:
                fields[key].append(value)
            elif key in fields:
                raise Refused(400, "a form field was sent twice")
            else:
                fields[key] = value
        if session is not None and not secrets.compare_digest(
                str(fields.get("csrf", "")).encode(), session.csrf.encode()):
            raise Refused(403, "the form has expired; open the page again")
        return fields

    async def on_record(kind: str, message: str, session: accounts.Session,
                        **fields: Any) -> None:
        """Written to the audit log (a Delta commit) before anything is shown: if it cannot
        be, nothing is (a spooled event is lost with a killed process)."""
        try:
            await run_in_threadpool(audit.record, lake, kind, message, actor=session.email,
                                    via="console", **fields)
        except Exception:
            logging.getLogger(__name__).exception("audit event not written; nothing shown")
            raise Refused(503, "the audit log cannot be written just now, so nothing is "
                          "shown; try again later") from None

    @r.get("/static/console.css")
    def stylesheet() -> Response:
        return Response(css, media_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})

    # ------------------------------------------------------------ sign-in

    @r.get("/login")
    def login_page(request: Request, next: str = "/console/") -> HTMLResponse:
        nonce = secrets.token_urlsafe(24)
        response = page("login.html", None, next=_safe_next(next), nonce=nonce,
                        error=None)
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                            secure=secure, path="/console/login", max_age=3600)
        return response

    @r.post("/login")
    async def login(request: Request) -> Response:
        fields = await form(request, None)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not secrets.compare_digest(fields.get("nonce", "").encode(),
                                                   nonce.encode()):
            raise Refused(403, "the sign-in form has expired; open it again")
        client = request.client.host if request.client else "unknown"
        next_path = _safe_next(fields.get("next", "/console/"))
        try:
            started = await run_in_threadpool(accounts.sign_in, lake,
                                              fields.get("email", ""),
                                              fields.get("password", ""), client)
        except accounts.Throttled:
            spool.add("console_sign_in_throttled", "sign-in refused: too many failures",
                      actor="anonymous", via="console", details={"client": client})
            refused = page("login.html", None, status=429, next=next_path, nonce=nonce,
                           error="Too many failed sign-ins: wait 15 minutes.")
            refused.headers["Retry-After"] = str(accounts.FAILURES_WINDOW_S)
            return refused
        if started is None:
            spool.add("console_sign_in_refused", "sign-in refused", actor="anonymous",
                      via="console", details={"client": client})
            return page("login.html", None, status=401, next=next_path,
                        nonce=nonce, error="Wrong e-mail address or password.")
        session, token = started
        request.state.account = session
        spool.add("console_signed_in", f"{session.email} signed in as {session.role}",
                  actor=session.email, via="console",
                  details={"client": client, "role": session.role})
        response = RedirectResponse(next_path, status_code=303, headers=HEADERS)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure,
                            path="/console")
        response.delete_cookie(LOGIN_COOKIE, path="/console/login")
        return response

    @r.post("/logout")
    async def logout(request: Request, session: accounts.Session = Depends(signed_in)
                     ) -> Response:
        await form(request, session)
        await run_in_threadpool(accounts.sign_out, lake, session)
        spool.add("console_signed_out", f"{session.email} signed out", actor=session.email,
                  via="console")
        response = RedirectResponse("/console/login", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # ------------------------------------------------------------ pages

    @r.get("/")
    def home(request: Request, session: accounts.Session = Depends(signed_in)
             ) -> HTMLResponse:
        day_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
        recent = views.deliveries(lake, day_ago) if session.may("quarantine") else []
        waiting = data_requests.waiting(lake) if session.may("decide_request") else []
        due = dt.datetime.now(dt.timezone.utc) - dt.timedelta(
            days=data_requests.load_request_policy().sla_days)
        return page("home.html", session, waiting=len(waiting),
                    overdue=sum(filed < due for filed in waiting),
                    pending=len(views.review_queue(lake)) if session.may("review") else None,
                    recent=recent,
                    releases=views.releases(lake, columns=False)[:5]
                    if session.may("releases") else [])

    @r.get("/review")
    def review(request: Request, page_number: int = Query(1, alias="page", ge=1, le=100_000),
               session: accounts.Session = Depends(needs("review"))) -> HTMLResponse:
        done = request.query_params.get("done")
        pairs = views.review_queue(lake)
        first = (page_number - 1) * PAGE
        return page("review.html", session, pairs=pairs[first:first + PAGE], total=len(pairs),
                    page_number=page_number, more=len(pairs) > first + PAGE,
                    compared=views.COMPARED, flash=done if done in DECISIONS else None)

    def _pair(key: str) -> views.Pair:
        found = views.find_pair(lake, key)
        if found is None:
            raise Refused(404, "this pair is no longer waiting for a decision (decided, or "
                          "the index was rebuilt)")
        return found

    def _pair_page(session: accounts.Session, pair: views.Pair,
                   values: dict[str, dict[str, str]] | None = None, status: int = 200,
                   error: str | None = None, chosen: str = "", reason: str = ""
                   ) -> HTMLResponse:
        """A pair, masked unless `values`; after a refused decision, the form as sent."""
        return page("pair.html", session, status=status, pair=pair, values=values,
                    compared=views.COMPARED, error=error, chosen=chosen, reason=reason)

    @r.get("/review/{key}")
    def pair_page(request: Request, key: str,
                  session: accounts.Session = Depends(needs("review"))) -> HTMLResponse:
        return _pair_page(session, _pair(key))

    @r.post("/review/{key}/reveal")
    async def reveal(request: Request, key: str,
                     session: accounts.Session = Depends(needs("reveal"))) -> HTMLResponse:
        await form(request, session)
        pair = await run_in_threadpool(_pair, key)
        await on_record("console_reveal", f"{session.email} revealed a review pair", session,
                        details={"left": pair.left, "right": pair.right, "fields": sorted(
                            {f for fs in views.COMPARED.values() for f in fs})})
        values = await run_in_threadpool(views.records, lake, pair)
        return _pair_page(session, pair, values=values)

    @r.post("/review/{key}/decide")
    async def decide_pair(request: Request, key: str,
                          session: accounts.Session = Depends(needs("decide"))) -> Response:
        fields = await form(request, session)
        pair = await run_in_threadpool(_pair, key)
        reason = _one_line(fields, "reason")
        decision = str(fields.get("decision", ""))
        try:
            await run_in_threadpool(decide, lake, pair.left, pair.right, decision,
                                    session.email, reason, "console", False)
        except DecisionError as exc:
            message = (str(exc).replace("--reason", "the reason")
                       .replace("--left", "a record").replace("--right", "a record")
                       .replace("decision must", "the decision must"))
            if pair.left in message or pair.right in message:   # ids only after a reveal
                message = ("a record of this pair is no longer in the person index (it was "
                           "rebuilt): open the review queue again")
            if "decision must be" in message:
                message = "choose same person or different people"
            return _pair_page(session, pair, status=400, error=message, chosen=decision,
                              reason=reason)
        except Exception:
            logging.getLogger(__name__).exception("decision not recorded")
            raise Refused(503, "the decision could not be recorded just now (the audit log "
                          "or the lake could not be written); try again later") from None
        return RedirectResponse("/console/review?done=" + decision, status_code=303,
                                headers=HEADERS)

    @r.get("/decisions")
    def decisions(request: Request, session: accounts.Session = Depends(needs("review"))
                  ) -> HTMLResponse:
        return page("decisions.html", session, decisions=views.decisions(lake),
                    built=views.identity_built_at(lake))

    @r.get("/quarantine")
    def quarantine(request: Request, session: accounts.Session = Depends(needs("quarantine"))
                   ) -> HTMLResponse:
        all_deliveries = views.deliveries(lake)
        day_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
        by_day = views.quarantine_by_day(all_deliveries)
        top = max((n for _, _, n in by_day), default=0)
        return page("quarantine.html", session, deliveries=all_deliveries,
                    last_night=[d for d in all_deliveries if d.landed_at >= day_ago and
                                (d.status != "accepted" or d.rows_quarantined)],
                    by_day=by_day, top=top)

    @r.get("/quarantine/{source}/{sha256}")
    async def quarantine_rows(request: Request, source: str, sha256: str,
                              session: accounts.Session = Depends(needs("quarantine_rows"))
                              ) -> HTMLResponse:
        found = await run_in_threadpool(lambda: views.deliveries(lake, sha256=sha256))
        delivery = next((d for d in found if d.source == source), None)
        if delivery is None:
            raise Refused(404, "no such delivery")
        rows = await run_in_threadpool(views.quarantined_rows, lake, source, sha256)
        await on_record("console_quarantine_rows", f"{session.email} opened quarantined rows",
                        session, source=source, details={
                            "file_sha256": sha256, "rows_shown": len(rows.rows),
                            "shown": [[q["_stage"], q["_row_number"]] for q in rows.rows]})
        return page("quarantine_rows.html", session, delivery=delivery, rows=rows)

    @r.get("/releases")
    def releases(request: Request, session: accounts.Session = Depends(needs("releases"))
                 ) -> HTMLResponse:
        return page("releases.html", session, releases=views.releases(lake),
                    events=views.ledger_events(lake))

    @r.get("/catalog")
    def catalog_page(request: Request, q: str = "",
                     session: accounts.Session = Depends(needs("catalog"))) -> HTMLResponse:
        return page("catalog.html", session, q=q[:100],
                    tables=catalog.search(lake, q[:100]))

    @r.get("/catalog.json")
    def dcat(request: Request, session: accounts.Session = Depends(needs("catalog"))
             ) -> Response:
        # The addresses as this service is reached (its public URL serves both).
        return JSONResponse(dcat_catalog((public_url, public_url)), headers=HEADERS)

    @r.get("/catalog/{layer}/{name}")
    def table_page(request: Request, layer: str, name: str,
                   session: accounts.Session = Depends(needs("catalog"))) -> HTMLResponse:
        table = catalog.table(lake, layer, name)
        if table is None:
            raise Refused(404, "no such table in the catalog")
        return page("table.html", session, table=table,
                    graph=catalog.lineage_graph(table), quality=catalog.quality(lake, table))

    # ------------------------------------------------------------ data requests

    def _visible(session: accounts.Session, rid: int) -> data_requests.Filed:
        filed = data_requests.get(lake, rid) if 0 < rid < 2**62 else None
        # Someone else's request is "not found", not "forbidden" (ids are not a directory).
        if filed is None or not (session.may("requests") or filed.requester == session.email):
            raise Refused(404, "no such request")
        return filed

    def _request_page(session: accounts.Session, rid: int, status: int = 200,
                      error: str | None = None) -> HTMLResponse:
        return page("request.html", session, status=status, filed=_visible(session, rid),
                    error=error, policy=data_requests.load_request_policy(),
                    statuses=data_requests.STATUSES, now=dt.datetime.now(dt.timezone.utc))

    def _request_form(session: accounts.Session, status: int = 200, error: str | None = None,
                      values: dict[str, Any] | None = None) -> HTMLResponse:
        marts = load_marts()
        return page("request_new.html", session, status=status, error=error,
                    values=values or {}, marts=marts.marts, purposes=list(marts.purposes),
                    sources=load_sources())

    @r.get("/requests")
    def requests_page(request: Request, page_number: int = Query(1, alias="page", ge=1,
                                                                   le=100_000),
                      session: accounts.Session = Depends(needs("request", "requests"))
                      ) -> HTMLResponse:
        filed = data_requests.listing(lake, None if session.may("requests") else session.email)
        first = (page_number - 1) * PAGE
        return page("requests.html", session, requests=filed[first:first + PAGE],
                    page_number=page_number, more=len(filed) > first + PAGE,
                    waiting=sum(f.status == "needs_steward" for f in filed),
                    policy=data_requests.load_request_policy(), statuses=data_requests.STATUSES,
                    now=dt.datetime.now(dt.timezone.utc))

    @r.get("/requests/new")
    def new_request(request: Request, session: accounts.Session = Depends(needs("request"))
                    ) -> HTMLResponse:
        return _request_form(session)

    @r.post("/requests")
    async def file_request(request: Request,
                           session: accounts.Session = Depends(needs("request"))) -> Response:
        fields = await form(request, session, multi=("column", "source"))
        columns: dict[str, list[str]] = {}
        for item in fields["column"]:
            mart, _, column = item.partition(".")
            columns.setdefault(mart, []).append(column)
        raw = {k: fields.get(k, "") for k in ("title", "purpose", "recipient_organisation",
                                              "recipient_contact", "legal_basis", "start",
                                              "end")}
        raw["justification"] = _one_line(fields, "justification")
        raw |= {"columns": columns, "sources": fields["source"]}
        try:
            parsed = data_requests.parse_request(raw)
            filed = await run_in_threadpool(data_requests.file, lake, session.email, parsed)
        except data_requests.RequestError as exc:
            status = 429 if isinstance(exc, data_requests.TooMany) else 400
            return _request_form(session, status=status, error=str(exc), values=fields)
        except Exception:
            logging.getLogger(__name__).exception("request not filed")
            raise Refused(503, "the request could not be filed just now (nothing was "
                          "kept); try again later") from None
        return RedirectResponse(f"/console/requests/{filed.id}", status_code=303,
                                headers=HEADERS)

    @r.get("/requests/{rid}")
    def request_page(request: Request, rid: int,
                     session: accounts.Session = Depends(needs("request", "requests"))
                     ) -> HTMLResponse:
        return _request_page(session, rid)

    @r.post("/requests/{rid}/decide")
    async def decide_request(request: Request, rid: int,
                             session: accounts.Session = Depends(needs("decide_request"))
                             ) -> Response:
        fields = await form(request, session)
        try:
            await run_in_threadpool(data_requests.decide, lake, rid, session.email,
                                    str(fields.get("decision", "")),
                                    _one_line(fields, "reason"))
        except data_requests.RequestError as exc:
            return _request_page(session, rid, status=400, error=str(exc))
        except Exception:
            logging.getLogger(__name__).exception("request decision not recorded")
            raise Refused(503, "the decision could not be recorded just now (nothing "
                          "changed); try again later") from None
        return RedirectResponse(f"/console/requests/{rid}", status_code=303, headers=HEADERS)

    @r.get("/requests/{rid}/agreement.yaml")
    def draft(request: Request, rid: int,
              session: accounts.Session = Depends(needs("request", "requests"))) -> Response:
        filed = _visible(session, rid)
        if filed.draft is None:
            raise Refused(404, "this request has no draft agreement (it is not approved)")
        return Response(filed.draft, media_type="application/yaml; charset=utf-8",
                        headers=HEADERS | {
            "Content-Disposition": f'attachment; filename="request-{rid}-agreement.yaml"'})

    return r


def install(app: FastAPI, lake: Lake, spool: audit.Spool, public_url: str,
            dagster_url: str | None) -> None:
    """Mount the console on the gateway's app, with its error pages."""
    page = Pages(dagster_url)
    app.include_router(router(lake, spool, public_url, page))

    @app.get("/", include_in_schema=False)
    @app.get("/console", include_in_schema=False)
    def to_console() -> Response:
        # A relative Location: never built on the request's Host header.
        return RedirectResponse("/console/", status_code=303, headers=HEADERS)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, exc: SignInNeeded) -> Response:
        if request.method != "GET":
            return HTMLResponse("Sign in first.", status_code=401, headers=HEADERS)
        target = "/console/login?" + urllib.parse.urlencode({"next": exc.next_path})
        return RedirectResponse(target, status_code=303, headers=HEADERS)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        session = getattr(request.state, "account", None)
        return page("error.html", session, status=exc.status, message=exc.message)


def _one_line(fields: dict[str, Any], name: str) -> str:
    """A textarea's text with its line breaks as spaces (kept on one line)."""
    return " ".join(str(fields.get(name, "")).split())


def signed_in_as(lake: Lake, request: Request) -> accounts.Session | None:
    """Whose session a request carries (for the audit of requests no page handled): a
    read of this thread's kept connection, which neither extends nor ends the session."""
    token = request.cookies.get(COOKIE, "")
    return accounts.session(lake, token, touch=False) if token else None


def visible(text: object) -> str:
    """Invisible and direction-changing characters (a delivered value's U+202E, a
    zero-width space) written as escapes, so what is shown is what is there."""
    return "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf") else c
                   for c in str(text))


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _safe_next(path: str) -> str:
    """Only a page of the console, never another site (an open redirect): a plain path
    under /console/, without dot segments, doubled slashes or backslashes."""
    if len(path) < 300 and path.startswith("/console/") and not {"\\", "%"} & set(path) and \
            "//" not in path and posixpath.normpath(path) + "/" * path.endswith("/") == path \
            and path.isprintable():
        return path
    return "/console/"
