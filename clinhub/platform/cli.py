"""`clinhub users`, `clinhub keys`, `clinhub audit`: the platform's commands for people."""

from __future__ import annotations

import json
import sys
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table

from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.platform import audit, auth
from clinhub.platform.permissions import ROLES

console = Console()
CLI_ACTOR = "cli"  # audit actor for commands run on the server's own shell

users_app = typer.Typer(help="Users and their roles.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for interfaces and scripts.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    username: str,
    role: str = typer.Option(..., help=f"One of: {', '.join(ROLES)}."),
    full_name: str = typer.Option("", help="Display name."),
    email: str = typer.Option("", help="E-mail address."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Create a user (asks for the password unless --password-stdin)."""
    with Hub() as hub:
        auth.create_user(
            hub.store, username, _read_password(password_stdin), role, full_name=full_name, email=email
        )
        audit.record(
            hub.store, actor=CLI_ACTOR, action="user.create", resource_type="User", resource_id=username
        )
    console.print(f"user [bold]{username}[/bold] created with role {role}")


@users_app.command("list")
def users_list() -> None:
    """List users, their roles and whether they are disabled."""
    with Hub() as hub:
        rows = auth.list_users(hub.store)
    table = Table("username", "role", "disabled", "created", "last login", title="users")
    for row in rows:
        table.add_row(
            row["username"],
            row["role"],
            "yes" if row["disabled"] else "",
            _when(row["created_at"]),
            _when(row["last_login_at"]),
        )
    console.print(table)


def _set_disabled(username: str, disabled: bool) -> None:
    with Hub() as hub:
        auth.set_disabled(hub.store, username, disabled)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="user.disable" if disabled else "user.enable",
            resource_type="User",
            resource_id=username,
        )
    console.print(f"user {username} {'disabled' if disabled else 'enabled'}")


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a user: their tokens and API keys stop working at once."""
    _set_disabled(username, True)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled user."""
    _set_disabled(username, False)


@users_app.command("role")
def users_role(username: str, role: str) -> None:
    """Change a user's role."""
    with Hub() as hub:
        auth.set_role(hub.store, username, role)
        audit.record(
            hub.store, actor=CLI_ACTOR, action="user.role", resource_type="User", resource_id=username
        )
    console.print(f"user {username} now has role {role}")


@keys_app.command("create")
def keys_create(
    username: str,
    name: str = typer.Option(..., help="What the key is for, e.g. 'EMR ADT feed'."),
    expires_days: int = typer.Option(None, min=1, help="Days until the key expires (default: never)."),
) -> None:
    """Create an API key for USERNAME; it is printed once and cannot be shown again."""
    with Hub() as hub:
        key_id, key = auth.create_api_key(hub.store, username, name, expires_days=expires_days)
        audit.record(
            hub.store, actor=CLI_ACTOR, action="apikey.create", resource_type="User", resource_id=username
        )
    console.print(f"API key {key_id} for {username} (store it now, it is not shown again):")
    print(key)


@keys_app.command("list")
def keys_list(username: str = typer.Option(None, help="Only this user's keys.")) -> None:
    """List API keys by prefix (the keys themselves are never stored)."""
    with Hub() as hub:
        rows = auth.list_api_keys(hub.store, username)
    table = Table(
        "id", "user", "name", "prefix", "created", "expires", "last used", "revoked", title="API keys"
    )
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["username"],
            row["name"],
            row["prefix"],
            _when(row["created_at"]),
            _when(row["expires_at"]),
            _when(row["last_used_at"]),
            _when(row["revoked_at"]),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke an API key by id."""
    with Hub() as hub:
        auth.revoke_api_key(hub.store, key_id)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="apikey.revoke",
            resource_type="ApiKey",
            resource_id=str(key_id),
        )
    console.print(f"API key {key_id} revoked")


@audit_app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 and name the first bad event if it was tampered with."""
    with Hub() as hub:
        result = audit.verify(hub.store)
    if result.ok:
        console.print(f"audit trail intact: {result.checked} events verified")
        return
    console.print(
        f"[red]audit trail BROKEN at event {result.broken_at}: {result.reason}[/red] "
        f"({result.checked} events checked)"
    )
    raise typer.Exit(1)


@audit_app.command("search")
def audit_search(
    actor: str = typer.Option(None),
    action: str = typer.Option(None),
    resource_type: str = typer.Option(None),
    resource_id: str = typer.Option(None),
    outcome: str = typer.Option(None),
    since: datetime = typer.Option(None, help="ISO date/time (UTC)."),
    until: datetime = typer.Option(None, help="ISO date/time (UTC)."),
    limit: int = typer.Option(50, min=1, max=1000),
    fmt: str = typer.Option("table", "--format", help="table, json or fhir (a Bundle of AuditEvent)."),
) -> None:
    """Search audit events, newest first."""
    if fmt not in ("table", "json", "fhir"):
        raise InvalidInput("--format must be table, json or fhir")
    with Hub() as hub:
        total, events = audit.search(
            hub.store,
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
        )
    if fmt == "json":
        print(json.dumps({"total": total, "events": events}, default=str, indent=2))
        return
    if fmt == "fhir":
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "entry": [{"resource": audit.to_fhir(e)} for e in events],
        }
        print(json.dumps(bundle, indent=2))
        return
    table = Table(
        "id",
        "when (UTC)",
        "actor",
        "action",
        "resource",
        "outcome",
        "client",
        title=f"audit events ({len(events)} of {total})",
    )
    for e in events:
        resource = "/".join(x for x in (e["resource_type"], e["resource_id"]) if x)
        table.add_row(
            str(e["id"]),
            e["occurred_at"],
            e["actor"],
            e["action"],
            resource,
            e["outcome"],
            e["client_address"] or "",
        )
    console.print(table)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""
