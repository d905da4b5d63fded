"""plash push: an image of the store out as an OCI image."""

from __future__ import annotations

import os

import click

from plash import actions
from plash.cli import out
from plash.ui import renderer_factory


@click.command()
@click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip", show_default=True,
              help="of the layers (a docker-archive's are plain tarballs)")
@click.option("--created", metavar="TIME",
              help="the image's date (now, @SECONDS, YYYY-MM-DD[THH:MM:SSZ]); default SOURCE_DATE_EPOCH, else 1970-01-01;"
                   " file times after it are set to it")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
@click.argument("image")
@click.argument("ref")
def push(compression: str, created: str | None, quiet: bool, image: str, ref: str) -> None:
    """Push IMAGE (an id or a map name) as an OCI image to REF; print its manifest digest.

    REF: [REGISTRY/]NAME[:TAG] (a registry; plain http only for loopback
    registries and those in PLASH_INSECURE_REGISTRIES), oci:DIR[:TAG] or
    docker-archive:FILE. One OCI layer per plash layer; the same image
    gives the same digests every time, on any machine.
    """
    from plash.engine.push import push as push_image
    from plash.engine.push.image import parse_created

    s, image_id = actions.image_store(image)
    for prefix in ("docker-archive:", "oci:"):
        if ref.startswith(prefix):
            ref = prefix + os.path.abspath(ref[len(prefix):])
    out(push_image(s, image_id, ref, compression, parse_created(created), renderer_factory(quiet)()))
