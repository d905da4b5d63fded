"""The click commands, and click rendering the help of plash.__main__'s fast ones: parse, call one function, print results.

stdout carries only results (ids, paths, values); everything else goes to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from plash import __version__, actions
from plash.__main__ import COMMANDS, Fast, unknown_command
from plash.errors import PlashError, UsageError
from plash.ui import renderer_factory

IMAGE_CMD = {"ignore_unknown_options": True, "allow_interspersed_args": False}


class PlashGroup(click.Group):
    """The commands of plash.__main__.COMMANDS, in its order, each loaded when asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        if isinstance(where, Fast):
            return help_only(cmd_name, where)
        module, _, name = where.partition(":")
        command = getattr(importlib.import_module(module), name)
        assert isinstance(command, click.Command), where
        return command


def help_only(name: str, fast: Fast) -> click.Command:
    """A fast command as click sees it: for its help alone, as plash.__main__ runs it."""
    params: list[click.Parameter] = [
        click.Argument([arg.removesuffix("...")], nargs=-1, type=click.UNPROCESSED) if arg.endswith("...")
        else click.Argument([arg]) for arg in fast.arguments]
    return click.Command(name, context_settings=IMAGE_CMD, help=fast.handler.__doc__, params=params)


@click.group(cls=PlashGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="%(version)s")
def cli() -> None:
    """plash builds and runs layered root file systems, unprivileged and without a daemon.

    A container is an ordinary process on another distribution's root file
    system; it shares your home, /tmp, network and kernel.
    """


def out(value: object) -> None:
    sys.stdout.write(f"{value}\n")
    sys.stdout.flush()


def _synopsis(cmd: click.Command) -> str:
    """A command's arguments as `plash help` shows them: options first, then `IMAGE [CMD...]`."""
    opts, args = [], []
    for p in cmd.params:
        if isinstance(p, click.Option):
            if p.name == "help" or not p.opts:
                continue
            flag = p.opts[0]
            if p.is_flag:
                opts.append(f"[{flag}]")
            else:
                longest = max(p.opts, key=len).lstrip("-")
                opts.append(f"[{flag} {p.metavar or longest.upper()}]")
        elif isinstance(p, click.Argument):
            name = p.human_readable_name
            if p.nargs == -1:
                name += "..."
            args.append(name if p.required else f"[{name}]")
    return " ".join(opts + args)


def _what(cmd: click.Command) -> str:
    """The first paragraph of a command's help, as a phrase: `run CMD in IMAGE (...)`."""
    first = " ".join((cmd.help or "").split("\n\n")[0].split()).rstrip(".")
    if first[1:2].islower():
        first = first[0].lower() + first[1:]
    return first


def command_list(ctx: click.Context) -> str:
    """Every command on one line, `plash CMD ARGS  what it does`, as the original's plash help."""
    commands = [(name, cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]
    rows = [(f"plash {name} {_synopsis(cmd)}".rstrip(), _what(cmd)) for name, cmd in commands if cmd]
    width = min(36, max(len(u) for u, _ in rows))
    lines = [f"{usage:<{width}}  {what}" for usage, what in rows]
    return "\n".join([
        "plash is a container build and run tool. Its commands:", "", *lines, "",
        "Use plash help CMD to explain one command, plash --help-macros to list the macros.",
        "plash -X... ARGS [-- CMD...] (a first argument that is an option) builds and runs: plash b run.",
        "plash PATH ARGS... (a path with a /) runs a build file's --entrypoint.",
    ])


@click.command()
@click.argument("command", required=False)
@click.pass_context
def help_cmd(ctx: click.Context, command: str | None) -> None:
    """List the commands, or explain one: plash help CMD."""
    if command is None:
        out(command_list(ctx))
        return
    cmd = cli.get_command(ctx, command)
    if cmd is None:
        raise unknown_command(command)
    sub = click.Context(cmd, info_name=command, parent=ctx.parent)
    click.echo(cmd.get_help(sub))


@click.command()
def version() -> None:
    """Print plash's version."""
    out(__version__)


@click.command()
def init() -> None:
    """Create the store ($PLASH_DATA, default ~/.plashdata) if it is missing; print nothing.

    Scripts written for the original plash start with it. Every command
    creates the store when it needs it, so it is never required.
    """
    from plash.config import data_dir
    from plash.store.layout import Store

    Store(data_dir()).ensure()


@click.command()
@click.option("-j", "--jobs", "parallel", type=click.IntRange(1, 64), default=2, show_default=True,
              help="build steps run at once")
@click.option("--keep-going", is_flag=True, help="build all that can be built when one file fails")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
@click.argument("files", nargs=-1, required=True)
def warm(parallel: int, keep_going: bool, quiet: bool, files: tuple[str, ...]) -> None:
    """Build many build files or plash executables at once, as one DAG; print `<id> <file>` for each.

    Layers they share are built or downloaded once. For CI warm-up.
    """
    from plash.engine.warm import warm as warm_files

    failed = 0
    for f, result in warm_files(actions.store(), list(files), parallel, keep_going, renderer_factory(quiet)):
        if isinstance(result, int):
            out(f"{result} {f}")
        else:
            failed += 1
            msg = result.message if f in result.message else f"{f}: {result.message}"
            click.echo(f"plash error: {msg}", err=True)
    if failed:
        raise PlashError(f"{failed} of {len(files)} file(s) failed")


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED)
def create(image: str, cmd: tuple[str, ...]) -> None:
    """Run CMD (or a shell script read from stdin) in IMAGE and save its changes as a new image; print its id."""
    out(actions.create(image, list(cmd)))


@click.command()
@click.argument("file", default="-")
def import_tar(file: str) -> None:
    """Import a root file system tarball (gz, xz, zstd, bz2 or plain; FILE or - for stdin); print the new id."""
    out(actions.import_tar(file))


def _check_sha(sha: str | None) -> None:
    if sha is not None and (len(sha) != 64 or not all(c in "0123456789abcdefABCDEF" for c in sha)):
        raise PlashError(f"not a sha256 digest (64 hex digits): {sha!r}")


@click.command()
@click.argument("name", metavar="DISTRO:RELEASE")
@click.option("--dry", is_flag=True, help="print the root file system's URL, do not import")
@click.option("--insecure", is_flag=True, help="allow the plain index, which has no digests")
@click.option("--sha256", "sha", help="the digest the root file system must have")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
def import_lxc(name: str, dry: bool, insecure: bool, sha: str | None, quiet: bool) -> None:
    """Import DISTRO:RELEASE from the LXC image server ($PLASH_LXC_URL); print the new id.

    The simplestreams catalogue's sha256 and size are checked while downloading.
    """
    from plash.engine import imports
    from plash.engine.plan import Source

    _check_sha(sha)
    if dry:
        out(imports.lxc_url(name, insecure, sha))
        return
    source = Source("lxc", (name, sha) if sha else (name,))
    out(imports.run_import(actions.store(), source, renderer_factory(quiet)(), insecure=insecure))


@click.command()
@click.argument("url")
@click.option("--sha256", "sha", help="verify the download against this digest")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
def import_url(url: str, sha: str | None, quiet: bool) -> None:
    """Download a root file system tarball and import it; print the new id."""
    from plash.engine import imports
    from plash.engine.plan import Source

    _check_sha(sha)
    if not url.startswith(("http://", "https://")):
        raise PlashError(f"not an http(s) URL: {url}")
    source = Source("url", (url, sha) if sha else (url,))
    out(imports.run_import(actions.store(), source, renderer_factory(quiet)()))


@click.command()
@click.argument("ref")
@click.option("--quiet", is_flag=True, help="no progress on stderr")
def import_docker(ref: str, quiet: bool) -> None:
    """Import an OCI/Docker image: [REGISTRY/]NAME[:TAG|@sha256:DIGEST], docker-archive:FILE or oci:DIR[:TAG].

    Each layer is verified against its digest and becomes one plash layer,
    shared with other images that have it. Plain http is used only for
    loopback registries and those in PLASH_INSECURE_REGISTRIES.
    """
    from plash.engine import imports
    from plash.engine.plan import Source

    for prefix in ("docker-archive:", "oci:"):
        if ref.startswith(prefix):
            ref = prefix + os.path.abspath(ref[len(prefix):])
    source = Source("docker", (ref,))
    out(imports.run_import(actions.store(), source, renderer_factory(quiet)()))


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
@click.argument("key")
@click.argument("image", required=False)
def map_cmd(key: str, image: str | None) -> None:
    """Print the image KEY points to; with IMAGE, point KEY at it; with '' delete KEY.

    An unset KEY prints nothing (exit 0); deleting one is fine too.
    """
    found = actions.map_key(key, image)
    if found is not None:
        out(found)


@click.command(context_settings=IMAGE_CMD)
@click.argument("image")
def rm(image: str) -> None:
    """Delete IMAGE and every image built on it."""
    gone = actions.remove(image)
    click.echo(f"removed {len(gone)} image(s): {' '.join(map(str, gone))}", err=True)


@click.command()
@click.option("--clean-cache-keys", "--clean-tmp", "--clean-index", "original", is_flag=True, hidden=True,
              help="accepted for scripts written for the original plash; clean always does all of it")
def clean(original: bool) -> None:
    """Remove dangling index and map entries, orphaned layers and temp dirs whose owner is gone."""
    removed = actions.clean()
    for r in removed:
        click.echo(f"removed {r}", err=True)


@click.command()
@click.option("--repair", is_flag=True, help="fix what can be fixed safely")
def fsck(repair: bool) -> None:
    """Check the store: dangling entries, broken or orphaned images, leftover temp dirs.

    Exits 1 when something is broken (and not repaired). Leftovers of killed
    processes are listed but are not damage: `plash clean` reclaims them.
    """
    broken, leftovers, repaired = actions.fsck(repair)
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
    gone = actions.shrink()
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

    if not actions.store_exists():
        return  # nothing to delete, nothing to ask
    if not yes:
        if sys.stdin.isatty():
            click.echo(f"Delete everything in {data_dir()}? [y/N] ", err=True, nl=False)
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise PlashError(f"purge cancelled: the answer was {answer!r}, not yes (or use plash purge --yes)")
    actions.purge()


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


def _usage(ctx: click.Context | None) -> str:
    if ctx is None:
        return "plash COMMAND [ARGS]..."
    pieces = [p for p in ctx.command.collect_usage_pieces(ctx) if p != "[OPTIONS]"]
    if any(p.opts for p in ctx.command.params if isinstance(p, click.Option) and p.name != "help"):
        pieces.insert(0, "[OPTIONS]")
    return " ".join([ctx.command_path, *pieces])


def main(args: list[str]) -> None:
    try:
        cli.main(args, prog_name="plash", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:  # type: ignore[attr-defined]
        raise UsageError("missing arguments", _usage(e.ctx)) from None
    except click.UsageError as e:
        raise UsageError(e.format_message().rstrip("."), _usage(e.ctx)) from None
    except click.exceptions.Abort:
        raise PlashError("aborted") from None
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
