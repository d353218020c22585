"""Command line: `python -m ids_lakehouse {generate,steward,audit,share-profile,
share-revoke,serve}`. (What runs Dagster, `demo` and `instance`, is `python -m pipelines`.)"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from ids_lakehouse.storage import LakePath


def _generate(args: argparse.Namespace) -> int:
    from ids_lakehouse.synth.generate import generate

    manifest = generate(args.persons, args.seed, Path(args.out), chunk_size=args.chunk_size,
                        progress=True if args.progress else None)
    for source, info in manifest["agencies"].items():
        print(f"{source:<12} {info['rows']:>10,} rows  {info['clients']:>9,} clients  "
              f"{info['file']}")
    print(f"truth: {Path(args.out) / '_truth'}")
    return 0


def _usage_error(message: str) -> NoReturn:
    """argparse's error: one line on stderr, exit status 2."""
    print(f"error: {message} (see --help)", file=sys.stderr)
    sys.exit(2)


class _Parser(argparse.ArgumentParser):
    """argparse's parser; with `one_line_errors`, a bad or missing argument is reported by
    `_usage_error` (one line, status 2) instead of argparse's usage and message."""

    def __init__(self, *args: Any, one_line_errors: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.one_line_errors = one_line_errors

    def error(self, message: str) -> NoReturn:
        if self.one_line_errors:
            _usage_error(message)
        super().error(message)


def _enforce(root: LakePath) -> None:
    """Zone modes after a command wrote the lake; a planted symbolic link is reported."""
    from ids_lakehouse import zones

    for warning in zones.enforce(root).warnings():
        print(f"warning: {warning}", file=sys.stderr)


def _steward(args: argparse.Namespace) -> int:
    from ids_lakehouse import config
    from ids_lakehouse.identity.mpi import DecisionError, decide

    lake = config.lake()
    try:
        decide(lake, args.left, args.right, args.decision, args.steward, args.reason,
               via="cli:steward (e-mail as given; the OS account is in os_user)")
    except DecisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _enforce(lake.root)
    print(f"recorded: {args.decision} for {args.left} / {args.right}; honoured from the "
          "next identity run")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from ids_lakehouse import audit, config

    result = audit.verify(config.lake())
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.intact:
        print(f"audit log intact: {result.events} events, each chained to the one before "
              f"and matching its signed anchor ({audit.anchors_path(config.lake())})")
        return 0
    print(f"audit log NOT intact ({result.events} events, {result.anchors} anchors); "
          f"first broken link: {result.problems[0]}", file=sys.stderr)
    for problem in result.problems[1:]:
        print(f"  also: {problem}", file=sys.stderr)
    return 1


def _audit_anchor(args: argparse.Namespace) -> int:
    from ids_lakehouse import audit, config
    from ids_lakehouse.identity.mpi import STEWARD_EMAIL

    if len(args.operator) > 254 or not STEWARD_EMAIL.fullmatch(args.operator):
        print("error: --operator must be your e-mail address", file=sys.stderr)
        return 2
    count = audit.anchor_unanchored(config.lake(), args.operator)
    print(f"anchored {count} events; run `audit verify` again")
    return 0


def _operator_ok(operator: str) -> bool:
    from ids_lakehouse.identity.mpi import STEWARD_EMAIL

    return len(operator) <= 254 and bool(STEWARD_EMAIL.fullmatch(operator))


def _share_profile(args: argparse.Namespace) -> int:
    """Issue a token for an agreement and write the recipient's Delta Sharing profile."""
    import json

    from ids_lakehouse import config
    from ids_lakehouse.sharing import tokens

    if not _operator_ok(args.operator):
        print("error: --operator must be your e-mail address", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; a profile is never overwritten", file=sys.stderr)
        return 2
    try:
        token, token_id, expires = tokens.issue(config.lake(), args.agreement, args.operator,
                                                days=args.days)
    except tokens.TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    profile = {"shareCredentialsVersion": 1, "endpoint": args.endpoint.rstrip("/"),
               "bearerToken": token,
               "expirationTime": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(profile, fh, indent=2)
    print(f"{token_id} for {args.agreement}, expires {expires:%Y-%m-%d %H:%M} UTC: {out}")
    return 0


def _share_revoke(args: argparse.Namespace) -> int:
    from ids_lakehouse import config
    from ids_lakehouse.sharing import tokens

    if not _operator_ok(args.operator):
        print("error: --operator must be your e-mail address", file=sys.stderr)
        return 2
    try:
        tokens.revoke(config.lake(), args.token_id, args.operator)
    except tokens.TokenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.token_id} revoked")
    return 0


def _console_user(args: argparse.Namespace) -> int:
    from ids_lakehouse import config
    from ids_lakehouse.console import accounts

    lake = config.lake()
    try:
        if args.user_command == "list":
            for email, role, created, disabled in accounts.listing(lake):
                print(f"{email:<40} {role:<10} created {created}"
                      + (f", disabled {disabled}" if disabled else ""))
            return 0
        if args.user_command == "disable":
            accounts.disable(lake, args.email, args.operator)
            print(f"{args.email} disabled; its sessions have ended")
            return 0
        password = _read_password(args.password_stdin)
        accounts.add(lake, args.email, args.role, password, args.operator)
    except accounts.AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _enforce(lake.root)
    print(f"{args.role} account {accounts.normalise_email(args.email)} created; sign in at "
          "/console/login")
    return 0


def _read_password(from_stdin: bool) -> str:
    """One line from standard input (--password-stdin), or typed twice at a terminal."""
    import getpass

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        from ids_lakehouse.console.accounts import AccountError

        raise AccountError("the two passwords differ")
    return first


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    # Each worker process builds its app from the environment (the factory below); the
    # public URL recipients reach is this host and port unless configured.
    os.environ.setdefault("IDS_SHARING_PUBLIC_URL", f"http://{args.host}:{args.port}")
    # A worker loading a large person index answers uvicorn's health pings late (its
    # default 5 s had the supervisor kill and restart workers for ever at 1,000,000 people).
    from ids_lakehouse.sharing import deadline

    uvicorn.run("ids_lakehouse.sharing.server:app_from_env", factory=True, host=args.host,
                port=args.port, workers=args.workers, log_level="warning",
                http=deadline.Protocol,         # headers within HEADER_DEADLINE_S
                # A stop waits this long for requests in flight (a slow body had held
                # a stopping gateway for 40 s): then the audit's last events are written.
                timeout_graceful_shutdown=30,
                timeout_worker_healthcheck=300,
                # X-Forwarded-For is believed only from the proxies named here (none by
                # default): otherwise anyone on the host could choose the address that
                # is audited and throttled.
                proxy_headers=bool(os.environ.get("IDS_SHARING_FORWARDED_ALLOW_IPS")),
                forwarded_allow_ips=os.environ.get("IDS_SHARING_FORWARDED_ALLOW_IPS") or None,
                access_log=False)   # the audit log is the access log
    return 0


def main(argv: list[str] | None = None) -> int:
    # one line, exit 2, for every command (and for steward's arguments)
    parser = _Parser(prog="ids_lakehouse", one_line_errors=True)
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate a synthetic population and agency extracts")
    gen.add_argument("--persons", type=int, required=True)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--out", required=True, help="landing root to write extracts into")
    gen.add_argument("--chunk-size", type=int, default=50_000)
    gen.add_argument("--progress", action="store_true", help="always show a progress bar")
    gen.set_defaults(func=_generate)

    st = sub.add_parser("steward", help="record a steward decision on a pair of records",
                        one_line_errors=True)  # a bad or missing argument: one line, status 2
    st.add_argument("--left", required=True, help="unique_id (source:record_id)")
    st.add_argument("--right", required=True, help="unique_id (source:record_id)")
    st.add_argument("--decision", required=True, choices=["match", "non_match"])
    st.add_argument("--steward", required=True, help="the steward's e-mail address")
    st.add_argument("--reason", required=True, help="why (at most 1,000 characters)")
    st.set_defaults(func=_steward)

    aud = sub.add_parser("audit", help="the audit log")
    aud_sub = aud.add_subparsers(dest="audit_command", required=True)
    verify = aud_sub.add_parser("verify", help="check the hash chain, anchors and history; "
                                "exit 1 and name the first broken link if tampered with")
    verify.set_defaults(func=_audit_verify)
    anchor = aud_sub.add_parser("anchor", help="after checking what verify reports as "
                                "unanchored (a lost or new anchor file), anchor the events "
                                "that chain on and are signed; the act is audited")
    anchor.add_argument("--operator", required=True, help="your e-mail address")
    anchor.set_defaults(func=_audit_anchor)

    prof = sub.add_parser("share-profile", help="issue a recipient's Delta Sharing profile "
                          "(endpoint, bearer token, expiry) for an agreement; audited")
    prof.add_argument("--agreement", required=True)
    prof.add_argument("--out", required=True, help="the profile file to write (0600)")
    prof.add_argument("--operator", required=True, help="your e-mail address")
    prof.add_argument("--endpoint", default="http://127.0.0.1:8080/delta-sharing",
                      help="the gateway's URL as the recipient reaches it")
    prof.add_argument("--days", type=int, default=90,
                      help="lifetime (never beyond the agreement's expiry)")
    prof.set_defaults(func=_share_profile)
    rev = sub.add_parser("share-revoke", help="revoke a recipient token by its id; audited")
    rev.add_argument("--token-id", required=True)
    rev.add_argument("--operator", required=True, help="your e-mail address")
    rev.set_defaults(func=_share_revoke)
    users = sub.add_parser("console-user", help="the console's local accounts; audited")
    users_sub = users.add_subparsers(dest="user_command", required=True)
    add = users_sub.add_parser("add", help="create an account (password typed twice, or one "
                               "line on standard input with --password-stdin)")
    add.add_argument("--email", required=True)
    add.add_argument("--role", required=True, choices=["steward", "engineer", "auditor",
                                                       "requester"])
    add.add_argument("--operator", required=True, help="your e-mail address")
    add.add_argument("--password-stdin", action="store_true")
    disable = users_sub.add_parser("disable", help="disable an account; its sessions end")
    disable.add_argument("--email", required=True)
    disable.add_argument("--operator", required=True, help="your e-mail address")
    users_sub.add_parser("list", help="every account, its role and state")
    users.set_defaults(func=_console_user)
    serve = sub.add_parser("serve", help="run the service: the sharing gateway (Delta "
                           "Sharing, lookups, queries) and the steward's console")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (each holds the person index in memory and its "
                            "own rate limits)")
    serve.set_defaults(func=_serve)

    moved = (argv if argv is not None else sys.argv[1:])[:1]
    if moved in (["demo"], ["instance"]):
        _usage_error(f"'{moved[0]}' runs Dagster, so it is `python -m pipelines {moved[0]}`")
    args = parser.parse_args(argv)
    os.umask(0o077)     # everything the CLI writes (extracts, lake, instance) is private
    from ids_lakehouse.audit import AuditKeyError
    from ids_lakehouse.config import MissingSecretError
    from ids_lakehouse.locks import LockTimeout
    from ids_lakehouse.zones import ZoneError

    try:
        status: int = args.func(args)
        return status
    except (ZoneError, MissingSecretError, LockTimeout, AuditKeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
