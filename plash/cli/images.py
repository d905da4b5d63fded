"""Commands that make images: warm (many build files at once), create, and the imports."""

from __future__ import annotations

import os

import click

from plash import actions
from plash.cli import IMAGE_CMD, out
from plash.errors import PlashError
from plash.ui import renderer_factory


@click.command()
@click.option("-j", "--jobs", "parallel", type=click.IntRange(1, 64), default=2, show_default=True,
              help="build steps run at once")
@click.option("--keep-going", is_flag=True, help="build all that can be built when one file fails")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr (a failed step's output is still shown)")
@click.option("--progress", type=click.Choice(["auto", "tty", "plain", "json"]), default=None,
              help="how progress is shown on stderr (default PLASH_PROGRESS, else auto: tty on a terminal)")
@click.option("--cache-from", "cache_from", multiple=True, metavar="REPO",
              help="a layer cache to look in before building (repeatable; default PLASH_CACHE_FROM)")
@click.option("--cache-to", "cache_to", multiple=True, metavar="REPO",
              help="a layer cache to push the layers built to (repeatable; default PLASH_CACHE_TO)")
@click.option("--no-cache", "no_cache", is_flag=True,
              help="build every layer again (the new layers replace the cached ones)")
@click.option("--pull", is_flag=True, help="look at each base image's source again; import it if it changed")
@click.option("--no-package-cache", "no_package_cache", is_flag=True,
              help="keep package managers off the store's download caches (plash clean --caches)")
@click.argument("files", nargs=-1, required=True)
def warm(parallel: int, keep_going: bool, quiet: bool, progress: str | None, cache_from: tuple[str, ...],
         cache_to: tuple[str, ...], no_cache: bool, pull: bool, no_package_cache: bool, files: tuple[str, ...]) -> None:
    """Build many build files or plash executables at once, as one DAG; print `<id> <file>` for each.

    Layers they share are built or downloaded once. For CI warm-up.
    """
    from plash.engine.warm import warm as warm_files

    failed = 0
    from plash.config import BuildOptions

    options = BuildOptions(quiet, list(cache_from) or None, list(cache_to) or None, no_cache, pull, progress,
                           package_cache=not no_package_cache)
    # steps of several files run side by side: each output line says whose (prefix)
    sink = renderer_factory(quiet, progress, prefix=True)
    for f, result in warm_files(actions.store(), list(files), parallel, keep_going, sink, options):
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
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
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
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
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
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
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
