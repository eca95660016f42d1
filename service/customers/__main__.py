"""``python -m service.customers``: import profiles, read the merge audit, undo, erase.

    python -m service.customers import profiles.csv --map customer_id=Customer --source pos
    python -m service.customers import crm.parquet --mapping deploy/profile_mapping.yaml
    python -m service.customers merges CUSTOMER_ID
    python -m service.customers unmerge MERGE_ID
    python -m service.customers erase CUSTOMER_OR_IDENTIFIER --reason "customer e-mail 2026-12-01"

The store is the service's (``store_url`` of the policy, or ``--store URL``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from core.env import configure_environment
from core.identity import canonical_ref
from core.store import open_store
from service.config import load_settings
from service.customers.desk import CustomerDesk
from service.customers.importer import import_with_progress


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m service.customers", description=__doc__.split("\n")[0]
    )
    p.add_argument("--store", default=None, help="store URL (default: the policy's store_url)")
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="import profiles from CSV or Parquet")
    imp.add_argument("file", help="CSV (any compression pandas reads) or Parquet")
    imp.add_argument("--mapping", default=None, help="YAML: field: column")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="one field's column (repeatable; over --mapping); unmapped columns named "
        "like a field are read as that field",
    )
    imp.add_argument("--source", default=None, help="the source of every row (default: primary)")
    imp.add_argument("--strict", action="store_true", help="a bad row stops the import")
    m = sub.add_parser("merges", help="the merge audit of a customer")
    m.add_argument("customer", help="a customer id, profile id (pos:777) or kind:value")
    u = sub.add_parser("unmerge", help="undo a merge")
    u.add_argument("merge_id", type=int)
    e = sub.add_parser("erase", help="erase a customer (right to erasure)")
    e.add_argument("customer", help="a customer id, profile id (pos:777) or kind:value")
    e.add_argument("--reason", required=True, help="why (kept in the erasure log)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    configure_environment()
    args = _parser().parse_args(argv)
    settings = load_settings()
    store = open_store(args.store or settings.store_url)
    desk = CustomerDesk(settings, store)
    who = f"cli {getpass.getuser()}"
    try:
        if args.command == "import":
            report = import_with_progress(
                args.file,
                desk,
                settings,
                mapping_file=args.mapping,
                pairs=args.map,
                source=args.source,
                strict=args.strict,
            )
            print(report.to_text())
            return 0
        ref = canonical_ref(getattr(args, "customer", ""), settings.identity.phone_region)
        if args.command == "merges":
            customer = store.profiles.resolve([ref])[ref]
            print(json.dumps(store.profiles.merge_log(customer), default=str, indent=2))
        elif args.command == "unmerge":
            print(desk.unmerge(args.merge_id, who).model_dump_json(indent=2))
        else:
            customer = store.profiles.resolve([ref])[ref]
            print(desk.erase(customer, args.reason, who).model_dump_json(indent=2))
    except (ValueError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
