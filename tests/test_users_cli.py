"""`facefinder users ...` is run by an OS user acting on an account (issue 11, finding 6): every subcommand
that changes something is logged with the OS user as the actor (`local:<os user>`) and the account acted on
in the details, never as that account's own action; `users passwd` resets a password to a temporary one
that must be changed. The real CLI, in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from service_helpers import backend  # noqa: F401
from test_service_cli import cli  # noqa: F401  (the in-process CLI on this backend's catalog)

from facefinder.interfaces.cli.common import local_actor
from facefinder.services.catalog_access import accounts_on


def test_every_users_subcommand_logs_the_os_user_acting_on_the_account(cli):
    from facefinder.storage.store import FaceStore

    cli("users", "add", "root", "--role", "admin", "--password-stdin", input="a-good-password\n")
    cli("users", "add", "inv2", "--password-stdin", input="another-password\n")
    store = FaceStore(cli.data, cli.url if cli.url.startswith("postgresql") else None)
    store.create_collection("people", purpose="p", legal_basis="l", retention_days=5)
    store.close()
    cli("users", "grant", "inv2", "people")
    cli("users", "revoke", "inv2", "people")
    cli("users", "token", "inv2", "--name", "nightly")
    cli("users", "disable", "inv2")
    cli("users", "enable", "inv2")
    cli("users", "passwd", "inv2")
    cli("users", "list")
    with accounts_on(cli.url) as accounts:
        entries = [(e.actor, e.action, json.loads(e.details)) for e in accounts.audit.entries()]
    me = local_actor()
    by_action = {action: (actor, info) for actor, action, info in entries}
    for action in (
        "user.create",
        "grant.add",
        "grant.remove",
        "token.create",
        "user.disable",
        "user.enable",
        "password.reset",
    ):
        actor, info = by_action[action]
        assert actor == me, (action, actor)
        assert info["username"] == "inv2", (action, info)
    assert by_action["token.create"][1]["name"] == "nightly"
    assert not [e for e in entries if e[0] == "inv2"]  # nothing is logged as inv2's own action


def test_users_passwd_sets_a_temporary_password_that_must_be_changed(cli):
    cli("users", "add", "inv2", "--password-stdin", input="another-password\n")
    with accounts_on(cli.url) as accounts:
        session = accounts.start_session(accounts.authenticate("inv2", "another-password"))
    result = cli("users", "passwd", "inv2")
    temporary = result.stdout.strip()
    assert len(temporary) >= 10 and "must choose a new password" in result.stderr
    cli("users", "passwd", "nobody", expect=2)
    with accounts_on(cli.url) as accounts:
        from facefinder.services.server.accounts import AuthenticationFailed

        with pytest.raises(AuthenticationFailed):
            accounts.session_principal(session)  # the reset signed inv2 out
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate("inv2", "another-password")
        principal = accounts.authenticate("inv2", temporary)
        assert principal.must_change_password
        accounts.change_password(principal, temporary, "a-brand-new-password")
        assert not accounts.authenticate("inv2", "a-brand-new-password").must_change_password
        assert [e.actor for e in accounts.audit.entries(action="password.change")] == ["inv2"]
