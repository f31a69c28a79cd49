"""Administration from a shell, without the API (in the compose stack:
`docker compose exec api python -m api.manage keys create --name NAME --role ROLE`).

    python -m api.manage keys create --name alice --role labeller   # prints the key, once
    python -m api.manage keys list
    python -m api.manage keys revoke ID
"""

import argparse
import sys

from db.models import ApiKey, Role
from db.session import unit_of_work
from domain import keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m api.manage", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    key_commands = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="action", required=True
    )
    create = key_commands.add_parser("create", help="a new key; prints it once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    key_commands.add_parser("list", help="every key (never the keys themselves)")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id", type=int)
    args = parser.parse_args(argv)

    with unit_of_work() as session:
        if args.action == "create":
            new = keys.create(session, args.name, Role(args.role))
        elif args.action == "list":
            for key in keys.listed(session):
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                print(f"{key.id}\t{key.role}\t{key.prefix}\t{state}\t{key.name}")
        else:
            revoked = session.get(ApiKey, args.id)
            if revoked is None:
                print(f"there is no API key {args.id}", file=sys.stderr)
                return 1
            keys.revoke(session, revoked)
    # Told once committed: a key printed is a key stored.
    if args.action == "create":
        print(new.key)
        print(f"key {new.row.id} ({args.role}) for {args.name!r}: shown this once", file=sys.stderr)
    elif args.action == "revoke":
        print(f"key {revoked.id} ({revoked.name!r}) revoked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
