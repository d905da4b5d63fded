"""Commands on registry credentials: login and logout, in the files podman and docker use."""

from __future__ import annotations

import sys

import click

from plash.errors import PlashError


def read_password_stdin() -> str:
    """The password on stdin, without the one newline that ends it (echo, a file)."""
    password = sys.stdin.read()
    for end in ("\r\n", "\n"):
        if password.endswith(end):
            return password[: -len(end)]
    return password


@click.command()
@click.option("-u", "--username", metavar="NAME", help="the user name (asked for on the terminal if missing)")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin, not from the terminal")
@click.argument("registry")
def login(username: str | None, password_stdin: bool, registry: str) -> None:
    """Check credentials with REGISTRY (host[:port]; docker.io: Docker Hub) and store them.

    They go into $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json
    (podman's), else ~/.config/containers/auth.json, readable by you only.
    import-docker and --from-docker read them there and in docker's
    ~/.docker/config.json. The password is asked for on the terminal or read
    from stdin, never taken from the command line.
    """
    from plash.engine.fetch import credentials
    from plash.engine.fetch.login import verify_login

    key = credentials.registry_key(registry)
    if password_stdin:
        if not username:
            raise PlashError("--password-stdin needs --username")
        password = read_password_stdin()
    else:
        if not sys.stdin.isatty():
            raise PlashError("no terminal to ask for the password on: use --password-stdin")
        username = username or click.prompt("Username", err=True)
        password = click.prompt("Password", hide_input=True, err=True)
    username = (username or "").strip()
    if not username or ":" in username:
        raise PlashError("a user name must be given and cannot contain ':'")
    if not password:
        raise PlashError("the password is empty")
    verify_login(key, username, password)
    credentials.store_credentials(key, username, password)
    click.echo("Login Succeeded", err=True)


@click.command()
@click.argument("registry")
def logout(registry: str) -> None:
    """Remove the credentials plash login stored for REGISTRY."""
    from plash.engine.fetch import credentials

    key = credentials.registry_key(registry)
    if credentials.remove_credentials(key):
        return
    try:
        found = credentials.find_credentials(key)
    except PlashError:  # a helper's or a malformed file: not plash login's either way
        found = None
    if found is not None:
        raise PlashError(f"not logged in to {key} by plash login; its credentials are in {found[0]}: remove them there")
    raise PlashError(f"not logged in to {key}")
