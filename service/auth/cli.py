"""``python -m service.auth``: create, list and revoke API keys in the configured store.

    python -m service.auth create crm --scopes decide,events   # prints the key once
    python -m service.auth list
    python -m service.auth revoke 1a2b3c4d

The store is the service's (``store_url`` of the settings, ``REVIVAL_STORE_URL``), so a
key created here works on every replica sharing it.
"""

from __future__ import annotations

import argparse
import sys

from core.env import configure_environment
from core.store import ApiKey, open_store
from service.api_config import SCOPES
from service.config import load_settings

__all__ = ["main"]


def _scopes(text: str) -> list[str]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise argparse.ArgumentTypeError(
            f"unknown scope(s) {unknown or text!r}; choose from {', '.join(SCOPES)}"
        )
    return scopes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m service.auth", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", help="who uses it, e.g. the campaign tool")
    create.add_argument(
        "--scopes", type=_scopes, required=True, help=f"comma-separated: {','.join(SCOPES)}"
    )
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--active", action="store_true", help="only keys not revoked")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return p


def _line(key: ApiKey) -> str:
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
    return (
        f"{key.key_id}  {key.name:<24.24}  {','.join(key.scopes):<28}  "
        f"created {key.created_at:%Y-%m-%d %H:%M}  {state}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure_environment()
    store = open_store(load_settings().store_url)
    try:
        keys = store.keys
        if args.command == "create":
            key, token = keys.create(args.name, args.scopes)
            print(_line(key))
            print(f"\n{token}\n\nThis is the only time the key is shown; store it now.")
        elif args.command == "list":
            for key in keys.list(include_revoked=not args.active):
                print(_line(key))
        else:
            try:
                print(_line(keys.revoke(args.key_id)))
            except LookupError as exc:
                print(exc, file=sys.stderr)
                return 1
    finally:
        store.close()
    return 0
