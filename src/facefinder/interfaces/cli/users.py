"""The `users` group: the service's accounts, roles, collection grants, API tokens and password resets, on the
catalog alone. Whoever runs these acts as `local:<os user>` in the audit log (see common.local_actor); the
account acted on is named in each entry's details."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from facefinder.errors import FaceFinderError, NotFound
from facefinder.interfaces.cli.common import (
    DatabaseUrl,
    catalog_url,
    console,
    fail,
    local_actor,
    print_table,
    service_options,
)

if TYPE_CHECKING:
    from facefinder.services.server.accounts import Accounts, Principal

users_app = typer.Typer(
    help="Accounts of the service: users, roles, collection grants, API tokens.", no_args_is_help=True
)


@users_app.callback()
def _users(database_url: DatabaseUrl = None) -> None:
    service_options.database_url = database_url


@contextmanager
def _accounts() -> Iterator[Accounts]:
    """The accounts on the catalog alone, closed when the block ends."""
    from facefinder.services.catalog_access import accounts_on

    with accounts_on(catalog_url()) as accounts:
        yield accounts


def _local_admin() -> Principal:
    from facefinder.services.server.accounts import Principal

    return Principal(0, local_actor(), "admin")


@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help="admin, investigator or auditor.")] = "investigator",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin (one line).")
    ] = False,
) -> None:
    """Create a user (the first one: --role admin). Asks for the password unless --password-stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _accounts() as accounts:
        try:
            accounts.add_user(username, password, role, by=local_actor())
        except FaceFinderError as exc:
            fail(str(exc))
    console.print(f"created {role} {username}", highlight=False)


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Users with their role, status and collection grants."""
    with _accounts() as accounts:
        grants = accounts.grants()
        rows = [
            {
                "username": u.username,
                "role": u.role,
                "active": u.active,
                "created_at": u.created_at.isoformat(timespec="seconds"),
                "grants": grants.get(u.username, []),
            }
            for u in accounts.users()
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("user", "role", "active", "grants", "created")
    for r in rows:
        table.add_row(
            r["username"], r["role"], "yes" if r["active"] else "no", ", ".join(r["grants"]) or "-", r["created_at"]
        )
    print_table(table)


def _admin_action(action: Callable[[Accounts, Principal], Any]) -> None:
    with _accounts() as accounts:
        try:
            action(accounts, _local_admin())
        except FaceFinderError as exc:
            fail(str(exc))


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable an account: its sessions and API tokens stop working at once."""
    _admin_action(lambda accounts, admin: accounts.set_active(admin, username, False))
    console.print(f"disabled {username}", highlight=False)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled account again."""
    _admin_action(lambda accounts, admin: accounts.set_active(admin, username, True))
    console.print(f"enabled {username}", highlight=False)


@users_app.command("grant")
def users_grant(username: str, collection: str) -> None:
    """Let an investigator ingest into and search COLLECTION."""
    _admin_action(lambda accounts, admin: accounts.grant(admin, username, collection, allow=True))
    console.print(f"granted {collection} to {username}", highlight=False)


@users_app.command("revoke")
def users_revoke(username: str, collection: str) -> None:
    """Take a collection grant away."""
    _admin_action(lambda accounts, admin: accounts.grant(admin, username, collection, allow=False))
    console.print(f"revoked {collection} from {username}", highlight=False)


@users_app.command("token")
def users_token(username: str, name: Annotated[str, typer.Option(help="What the token is for.")] = "cli") -> None:
    """Create an API token for USERNAME and print it (once; only its hash is kept)."""
    from facefinder.services.server.accounts import Principal

    with _accounts() as accounts:
        try:
            user = accounts.user(username)
        except NotFound:
            fail(f"username: no user {username!r}")
        if not user.active:
            fail(f"username: {username!r} is disabled")
        token = accounts.create_token(Principal(user.id, user.username, user.role), name, by=local_actor())
    print(token)


@users_app.command("passwd")
def users_passwd(username: str) -> None:
    """Reset USERNAME's password to a temporary one, printed once; they must choose a new one at next sign-in."""
    with _accounts() as accounts:
        try:
            temporary = accounts.reset_password(_local_admin(), username)
        except FaceFinderError as exc:
            fail(str(exc))
    print(temporary)
    console.print(
        f"{username}'s sessions are signed out; they must choose a new password after signing in with this one",
        highlight=False,
    )
