"""Commands that read or change the store and its images (each calls one function of plash.actions or plash.bookkeeping)."""

from __future__ import annotations

import sys

import click

from plash import actions, bookkeeping
from plash.cli import IMAGE_CMD, out
from plash.errors import PlashError


@click.command()
def init() -> None:
    """Create the store ($PLASH_DATA, default ~/.plashdata) if it is missing; print nothing.

    Scripts written for the original plash start with it. Every command
    creates the store when it needs it, so it is never required.
    """
    from plash.config import data_dir
    from plash.store.layout import Store

    Store(data_dir()).ensure()


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
@click.argument("file", default="-")
def export_tar(image: str, file: str) -> None:
    """Write IMAGE's merged file system as a tarball to FILE (default: stdout)."""
    actions.export_tar(image, file)


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
@click.argument("dir")
def copy(image: str, dir: str) -> None:
    """Copy IMAGE's merged file system to a new directory DIR (or an existing empty one)."""
    actions.copy(image, dir)


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
@click.argument("dir")
@click.argument("changesdir", required=False)
def mount(image: str, dir: str, changesdir: str | None) -> None:
    """Mount IMAGE at DIR, read-only unless CHANGESDIR is given.

    Changes then go to CHANGESDIR/upper (CHANGESDIR/work is overlayfs's work
    dir). It mounts in the caller's mount namespace: meant for use inside
    `plash sudo`, or as root (where the mount stays visible on the host).
    """
    actions.mount(image, dir, changesdir)


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def with_mount(image: str, cmd: tuple[str, ...]) -> None:
    """Run a host CMD (default: $SHELL) with its cwd at IMAGE mounted read-only (no chroot).

    The mount lives in a mount namespace of its own. With PLASH_NO_UNSHARE
    set, it is made in the caller's namespace instead (as root, or inside
    `plash sudo`), visible there while CMD runs and unmounted when it ends.
    """
    actions.with_mount(image, list(cmd))


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
def nodepath(image: str) -> None:
    """Print IMAGE's directory in the store (its layer is the root/ inside)."""
    s, n = actions.image_store(image)
    out(s.image_dir(n))


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
def parent(image: str) -> None:
    """Print the id of IMAGE's parent (0 for a base image)."""
    s, n = actions.image_store(image)
    out(s.parent(n))


@click.command(context_settings=IMAGE_CMD)
@click.argument("key", required=False)
@click.argument("image", required=False)
def map_cmd(key: str | None, image: str | None) -> None:
    """Print the image KEY points to; with IMAGE, point KEY at it; with '' delete KEY.

    An unset KEY prints nothing (exit 0); deleting one is fine too. Without
    KEY, list every name as NAME ID, sorted by name. Wherever a command
    takes IMAGE, a name set here does too (plash run NAME).
    """
    if key is None:
        for name, image_id in bookkeeping.map_entries().items():
            out(f"{name} {image_id}")
        return
    found = bookkeeping.map_key(key, image)
    if found is not None:
        out(found)


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
def rm(image: str) -> None:
    """Delete IMAGE and every image built on it."""
    gone = bookkeeping.remove(image)
    click.echo(f"removed {len(gone)} image(s): {' '.join(map(str, gone))}", err=True)


@click.command()
@click.option("--clean-cache-keys", "--clean-tmp", "--clean-index", "original", is_flag=True, hidden=True,
              help="accepted for scripts written for the original plash; clean always does all of it")
@click.option("--caches", is_flag=True, help="also empty the caches of build steps (package downloads, --cache-mount)")
def clean(original: bool, caches: bool) -> None:
    """Remove dangling index and map entries, orphaned layers and temp dirs whose owner is gone.

    With --caches, also empty the caches that build steps keep across
    builds ($PLASH_DATA/cache: apt's, pip's, ... and --cache-mount's); a
    cache a running step uses is emptied when that step is done.
    """
    removed = bookkeeping.clean()
    for r in removed:
        click.echo(f"removed {r}", err=True)
    if caches:
        from plash.config import data_dir
        from plash.launch.child import rmtree_anywhere
        from plash.store import caches as step_caches
        from plash.store.layout import Store
        from plash.store.listing import cache_usage, human_size

        def waiting(name: str) -> None:
            click.echo(f"plash: waiting for a build step using the cache {name}", err=True)

        store = Store(data_dir())
        sizes = cache_usage(store)
        for name in step_caches.empty(store, rmtree_anywhere, waiting):
            click.echo(f"emptied cache {name} ({human_size(sizes[name].bytes) if name in sizes else '?'})", err=True)


@click.command()
@click.option("--repair", is_flag=True, help="fix what can be fixed safely")
def fsck(repair: bool) -> None:
    """Check the store: dangling entries, broken or orphaned images, leftover temp dirs.

    Exits 1 when something is broken (and not repaired). Leftovers of killed
    processes are listed but are not damage: `plash clean` reclaims them.
    """
    broken, leftovers, repaired = bookkeeping.fsck(repair)
    for p in broken:
        click.echo(f"plash fsck: broken: {p}", err=True)
    for p in leftovers:
        click.echo(f"plash fsck: leftover: {p}", err=True)
    for r in repaired:
        click.echo(f"plash fsck: {r}", err=True)
    if broken and not repair:
        raise PlashError(f"the store has {len(broken)} problem(s)", hint="plash fsck --repair")
    if leftovers and not repair:
        click.echo(f"plash fsck: {len(leftovers)} leftover(s) of killed processes; plash clean reclaims them", err=True)


@click.command()
def shrink() -> None:
    """Delete about half of the images, oldest first, with their descendants; print the removed ids.

    An image goes only with all its descendants, and only when they fit in
    half of the images (so an imported base that everything was built on
    stays). Images in use by a running container or build are skipped.
    """
    gone = bookkeeping.shrink()
    if gone:
        out(" ".join(map(str, gone)))


@click.command()
@click.option("--yes", is_flag=True, help="do not ask")
def purge(yes: bool) -> None:
    """Delete all build data: empty the store directory in place; asks first unless --yes.

    The directory itself stays, with its mode (it may be a mount point).
    Without a terminal, the answer is read from stdin: echo yes | plash purge.
    """
    from plash.config import data_dir

    if not bookkeeping.store_exists():
        return  # nothing to delete, nothing to ask
    if not yes:
        if sys.stdin.isatty():
            click.echo(f"Delete everything in {data_dir()}? [y/N] ", err=True, nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise PlashError(f"purge cancelled: the answer was {answer!r}, not yes (or use plash purge --yes)")
    bookkeeping.purge()


@click.command(context_settings=IMAGE_CMD)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def sudo(cmd: tuple[str, ...]) -> None:
    """Run CMD (default: $SHELL) in plash's user and mount namespace as "root".

    Root callers get only a mount namespace of their own. With
    PLASH_NO_UNSHARE set (non-empty), as in the original, no namespace is
    made at all: CMD is exec'd as it is, as you (not "root") and in your
    mount namespace, so mounts made by root stay visible on the host and an
    ordinary user cannot mount.
    """
    actions.sudo(list(cmd))


@click.command(context_settings=IMAGE_CMD)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def data(cmd: tuple[str, ...]) -> None:
    """Print the store's path, or run CMD inside it (in plash's namespace).

    Printing the path of a store that does not exist yet is an error.
    """
    if not cmd:
        out(actions.existing_store().path)
        return
    actions.sudo(list(cmd), cwd=actions.store().path)
