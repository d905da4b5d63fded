"""Registry credentials where podman, skopeo and docker keep them (containers-auth.json(5)).

Read, in this order, the first file with an entry for the registry winning:

    $REGISTRY_AUTH_FILE                                   (if set)
    $XDG_RUNTIME_DIR/containers/auth.json                 podman's primary file
    ${XDG_CONFIG_HOME:-~/.config}/containers/auth.json    podman's fallback
    ${DOCKER_CONFIG:-~/.docker}/config.json               docker login's

A file is `{"auths": {KEY: {"auth": base64("user:password")}}, ...}`. A
KEY names a registry (`host`, `host:port`, docker's `https://host/v1/`) or,
podman's form, a namespace in it (`host/namespace/repo`), the most specific
one matching winning. Docker Hub goes by several names (docker.io,
index.docker.io, registry-1.docker.io): any of them matches it.

plash login writes the primary file (`write_file`), keeping every other key
and entry, atomically and readable by its owner only. Credential helpers
(credsStore, credHelpers) are not run: a registry whose credentials only a
helper has is an error that says so.

Secrets never leave this module but as return values: no error message
names a password or an auth value, only files and keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from typing import Any

from plash.errors import PlashError

DOCKER_HUB = "docker.io"  # the key podman writes for Docker Hub
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
AUTH_FILE = os.path.join("containers", "auth.json")
# A file's contents as read: a JSON object whose values are whatever a tool wrote, checked where used.
AuthDoc = dict[str, Any]


def auth_files() -> list[str]:
    """The files credentials are read from, in order (see the module's docstring); each once."""
    env = os.environ
    paths = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(os.path.join(env["XDG_RUNTIME_DIR"], AUTH_FILE))
    paths.append(os.path.join(_config_home(), AUTH_FILE))
    paths.append(os.path.join(env.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker"), "config.json"))
    return list(dict.fromkeys(paths))


def write_file() -> str:
    """The file plash login writes: $REGISTRY_AUTH_FILE, else podman's primary file, else its fallback.

    The primary file lives in $XDG_RUNTIME_DIR; where that is unset or no
    writable directory (a cron job, su without a login session), the file
    under ~/.config, which podman reads too.
    """
    env = os.environ
    if env.get("REGISTRY_AUTH_FILE"):
        return env["REGISTRY_AUTH_FILE"]
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return os.path.join(runtime, AUTH_FILE)
    return os.path.join(_config_home(), AUTH_FILE)


def _config_home() -> str:
    return os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")


def canonical_host(host: str) -> str:
    """Pure: a registry's host[:port] as keys are compared: lower case, Docker Hub's names as docker.io."""
    host = host.lower()
    return DOCKER_HUB if host in DOCKER_HUB_NAMES else host


def split_key(key: str) -> tuple[str, str]:
    """Pure: the canonical host and the namespace ("" for none) of an auths key.

    A URL (docker's `https://index.docker.io/v1/`) names its host only, as
    docker and podman read it; `host/a/b` is podman's namespace form.
    """
    for scheme in ("https://", "http://"):
        if key.lower().startswith(scheme):
            return canonical_host(key[len(scheme):].split("/", 1)[0]), ""
    host, _, namespace = key.partition("/")
    return canonical_host(host), namespace.strip("/")


def registry_key(registry: str) -> str:
    """Pure: the key plash login writes for a registry the user named (`host[:port]`, or a URL of one)."""
    host, namespace = split_key(registry.strip())
    if not host or namespace or any(c.isspace() or c in "@?#" for c in host):
        raise PlashError(f"not a registry (host or host:port): {registry!r}")
    return host


def best_key(auths: AuthDoc, registry: str, repository: str | None = None) -> str | None:
    """Pure: the key of auths that applies to registry (and repository, if given), or None.

    A namespace key applies to the repositories under it and wins over the
    registry's own key, the longest one first; without a repository, a
    registry's own key wins, then any of its namespaces. Ties: the file's order.
    """
    host = canonical_host(registry)
    best, best_rank = None, -2
    for key in auths:
        key_host, namespace = split_key(key)
        if key_host != host:
            continue
        if not namespace:
            rank = 0
        elif repository is None:
            rank = -1
        elif repository == namespace or repository.startswith(namespace + "/"):
            rank = namespace.count("/") + 1
        else:
            continue
        if rank > best_rank:
            best, best_rank = key, rank
    return best


def decode_entry(entry: object, path: str, key: str) -> tuple[str, str] | None:
    """Pure: the username and password of an auths entry; None for an entry without them (a helper's).

    `auth` is base64 of `user:password`; docker also reads separate
    `username` and `password` fields. PlashError naming the file and key
    (never the value) for anything else.
    """
    if not isinstance(entry, dict):
        raise PlashError(f"{path}: the entry for {key!r} is not a JSON object")
    auth = entry.get("auth")
    if auth is None or auth == "":
        username, password = entry.get("username"), entry.get("password")
        if isinstance(username, str) and isinstance(password, str) and username:
            return username, password
        return None
    if not isinstance(auth, str):
        raise PlashError(f"{path}: the \"auth\" of {key!r} is not a string")
    try:
        username, colon, password = base64.b64decode(auth, validate=True).decode().partition(":")
    except (binascii.Error, ValueError):  # ValueError: not UTF-8
        username, colon, password = "", "", ""
    if not colon or not username:
        raise PlashError(f"{path}: the \"auth\" of {key!r} is not base64 of user:password")
    return username, password


def read_auth_file(path: str) -> AuthDoc | None:
    """A credentials file as a JSON object with its auths checked to be one; None if there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except UnicodeDecodeError:
        raise PlashError(f"{path}: not a credentials file (not UTF-8 text)") from None
    except OSError as e:
        raise PlashError(f"{path}: cannot read the credentials file ({e.strerror or e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:  # its message names the place, never the text there
        raise PlashError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise PlashError(f"{path}: not JSON (nested too deep)") from None
    if not isinstance(doc, dict):
        raise PlashError(f"{path}: not a credentials file (not a JSON object)")
    if not isinstance(doc.get("auths", {}), dict):
        raise PlashError(f"{path}: \"auths\" is not a JSON object")
    return doc


def helper_for(doc: AuthDoc, registry: str, has_entry: bool) -> str | None:
    """Pure: the credential helper a file names for registry, if any.

    credHelpers name one per registry; credsStore is docker's store for all
    of them, which docker marks with an empty auths entry per registry it
    holds: only such a registry is said to be the store's, so that a
    credsStore does not make every anonymous pull an error.
    """
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if split_key(key) == (canonical_host(registry), "") and isinstance(name, str) and name:
                return name
    store = doc.get("credsStore")
    return store if has_entry and isinstance(store, str) and store else None


def find_credentials(registry: str, repository: str | None = None) -> tuple[str, tuple[str, str]] | None:
    """The first of auth_files() with credentials for registry, and them; None if none has.

    PlashError for a malformed file on the way, and, when no file has
    credentials but one leaves them to a credential helper, for that.
    """
    helper: tuple[str, str] | None = None
    for path in auth_files():
        doc = read_auth_file(path)
        if doc is None:
            continue
        auths = doc.get("auths", {})
        key = best_key(auths, registry, repository)
        found = decode_entry(auths[key], path, key) if key is not None else None
        if found is not None:
            return path, found
        name = helper_for(doc, registry, key is not None)
        if helper is None and name is not None:
            helper = path, name
    if helper is not None:
        path, name = helper
        raise PlashError(f"{path}: the credentials for {registry} are left to a credential helper "
                         f"(docker-credential-{name}), which plash does not run; plash login stores them where plash reads them")
    return None


def credentials_for(registry: str, repository: str | None = None) -> tuple[str, str] | None:
    """The username and password for registry (host[:port]; Docker Hub by any of its names), or None.

    With a repository, podman's namespace keys for it count too (see best_key).
    """
    found = find_credentials(registry, repository)
    return found[1] if found else None


def store_credentials(registry: str, username: str, password: str) -> str:
    """Write the credentials for registry into write_file(), replacing any of its own keys; return that file."""
    if not username or ":" in username:
        raise PlashError("a username must be given and cannot contain ':' (HTTP Basic)")
    path = write_file()
    doc = read_auth_file(path) or {}
    key = registry_key(registry)
    auths = {k: v for k, v in doc.get("auths", {}).items() if split_key(k) != (key, "")}
    auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode("ascii")}
    write_atomically(path, {**doc, "auths": auths})
    return path


def remove_credentials(registry: str) -> bool:
    """Remove registry's own keys (any of its names) from write_file(); whether there was one."""
    path = write_file()
    doc = read_auth_file(path)
    if doc is None:
        return False
    key = registry_key(registry)
    auths = doc.get("auths", {})
    kept = {k: v for k, v in auths.items() if split_key(k) != (key, "")}
    if len(kept) == len(auths):
        return False
    write_atomically(path, {**doc, "auths": kept})
    return True


def write_atomically(path: str, doc: AuthDoc) -> None:
    """Replace path (a symlink's target) with doc as JSON: a new file of mode 0600, synced, renamed into place.

    Readers see the old file or the new one, whole; a crash leaves at most
    a temp file beside it. Its directory is made 0700 if missing.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    text = json.dumps(doc, indent="\t") + "\n"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".auth.json.", dir=directory)  # O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename itself, on disk
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise PlashError(f"{target}: cannot write the credentials file ({e.strerror or e})") from None
