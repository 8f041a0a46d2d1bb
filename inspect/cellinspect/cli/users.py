"""`cellinspect users`: who may use the station's API, with which role (see cellinspect.users).

The users file holds token hashes only. `add` prints the new token once, to the terminal that
asked for it; it is never logged and cannot be shown again (`add --replace` issues a new one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cellinspect.cli.support import console, user_errors

app = typer.Typer(
    help="API users and roles: viewer, operator, qa, admin (token hashes only on disk).",
    no_args_is_help=True,
)

SettingsOpt = Annotated[
    Path | None,
    typer.Option("--settings", help="Station settings (YAML); CELLINSPECT_* variables override."),
]
UsersFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--users-file",
        help="The users file (default: the settings' users_file, else data_dir/users.yaml).",
    ),
]


def _users_file(settings_file: Path | None, users_file: Path | None) -> Path:
    if users_file is not None:
        return users_file
    from cellinspect.settings import load_settings

    return load_settings(settings_file).resolved_users_file


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="User name, recorded as reviewer on labels.")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator, qa or admin.")],
    settings_file: SettingsOpt = None,
    users_file: UsersFileOpt = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Issue a new token for an existing user.")
    ] = False,
) -> None:
    """Add a user and print the new API token once (only its hash is stored)."""
    from cellinspect.errors import ConfigError
    from cellinspect.users import Role, add_user

    with user_errors():
        try:
            chosen = Role(role.strip().lower())
        except ValueError as err:
            roles = ", ".join(r.value for r in Role)
            raise ConfigError(f"role {role!r}: expected one of {roles}") from err
        path = _users_file(settings_file, users_file)
        token = add_user(path, name, chosen, replace=replace)
    console.print(f"user {name} ({chosen.value}) saved in {path}", highlight=False)
    console.print(
        "API token (shown this once; send it as 'Authorization: Bearer <token>'):",
        highlight=False,
    )
    # Plain print, not a logger: the token goes to this terminal only.
    print(token)


@app.command("list")
def list_users(settings_file: SettingsOpt = None, users_file: UsersFileOpt = None) -> None:
    """Users with their roles (tokens are not stored, so none are shown)."""
    from cellinspect.users import read_users

    with user_errors():
        path = _users_file(settings_file, users_file)
        users = read_users(path).users
    if not users:
        console.print(f"no users in {path}", highlight=False)
        return
    for user in users:
        console.print(
            f"{user.name}\t{user.role.value}\tsince {user.created_at:%Y-%m-%d}", highlight=False
        )


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="User to remove; their token stops working.")],
    settings_file: SettingsOpt = None,
    users_file: UsersFileOpt = None,
) -> None:
    """Remove a user (a running API notices the changed file at the next request)."""
    from cellinspect.users import remove_user

    with user_errors():
        path = _users_file(settings_file, users_file)
        remove_user(path, name)
    console.print(f"user {name} removed from {path}", highlight=False)
