"""Commands that show what the store holds: images (ls), inspect, history, df (the data comes from plash.store.listing).

Text for people (relative times and sizes in KiB/MiB on a terminal; RFC 3339
times and bytes otherwise, for awk), `--format json` for scripts. None of
them creates the store: a missing one holds nothing.
"""

from __future__ import annotations

import json
import shutil
import sys

import click

from plash import actions, config
from plash.cli import out
from plash.errors import UsageError
from plash.store import listing
from plash.store.layout import Store

FORMAT = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                      help="json: one JSON object per line, for scripts")


def _tty() -> bool:
    return sys.stdout.isatty()


def _size(n: int) -> str:
    return listing.human_size(n) if _tty() else str(n)


def _when(t: float | None) -> str:
    return listing.ago(t) if _tty() else (listing.rfc3339(t) or "-")


def _table(rows: list[list[str]], header: list[str] | None = None) -> None:
    """Aligned columns, the last one unpadded (clipped to the terminal's width on one)."""
    lines = ([header] if header else []) + rows
    if not lines:
        return
    widths = [max(len(r[i]) for r in lines) for i in range(len(lines[0]) - 1)]
    width = shutil.get_terminal_size().columns if _tty() else 0
    for r in lines:
        text = "  ".join([c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]).rstrip()
        out(listing.shorten(text, width) if width else text)


def _unreadable_note(count: int) -> None:
    if count:
        click.echo(f"plash: {count} director{'y' if count == 1 else 'ies'} could not be listed; "
                   "sizes leave out what they hold", err=True)


def _row_json(row: listing.ImageRow) -> dict[str, object]:
    return {"id": row.id, "parent": row.parent, "names": list(row.names), "source": row.source,
            "size": row.usage.bytes, "created": listing.rfc3339(row.created)}


@click.command()
@FORMAT
@click.option("--tree", is_flag=True, help="show each image below its parent")
def images(fmt: str, tree: bool) -> None:
    """List the images: id, parent, names (plash map), what made it, its own size, when.

    SIZE is the disk usage of the image's own layer (hard links counted
    once); SOURCE is the import's source, or the build text of the layer,
    shortened (plash history IMAGE shows all of it).
    """
    if tree and fmt == "json":
        raise UsageError("--tree shows text; json rows have their parent", "plash images [--format json | --tree]")
    rows = listing.images(Store(config.data_dir()))
    if fmt == "json":
        for r in rows:
            out(json.dumps(_row_json(r)))
    elif tree:
        _table([["  " * depth + str(r.id), ",".join(r.names) or "-", _size(r.usage.bytes), _when(r.created),
                 r.source or "-"] for depth, r in listing.tree_order(rows)],
               ["ID", "NAMES", "SIZE", "CREATED", "SOURCE"] if rows else None)
    else:
        _table([[str(r.id), str(r.parent), ",".join(r.names) or "-", _size(r.usage.bytes), _when(r.created),
                 r.source or "-"] for r in rows],
               ["ID", "PARENT", "NAMES", "SIZE", "CREATED", "SOURCE"] if rows else None)
    _unreadable_note(sum(r.usage.unreadable for r in rows))


@click.command()
@click.argument("image")
def inspect(image: str) -> None:
    """Print all that is known of IMAGE (an id or a name) as one JSON object.

    Besides what plash images lists: its layer key, its chain (ids from the
    base image down to it), its run settings (entrypoint, env, env_prefix,
    mount), the OCI config kept at import (oci_env, oci_workdir, oci_cmd)
    and the layers of its chain with what made each.
    """
    s, n = actions.image_store(image)
    d = listing.details(s, n)
    meta = d.meta
    entry = meta.get("entrypoint")
    workdir = meta.get("oci_workdir")
    obj: dict[str, object] = {
        **_row_json(d.row),
        "created_by": d.layers[-1].created_by,
        "key": d.key,
        "chain": list(d.chain),
        "entrypoint": entry[-1] if entry else None,
        "env": meta.get("env", []),
        "env_prefix": meta.get("env_prefix", []),
        "mount": meta.get("mount", []),
        "oci_env": meta.get("oci_env", []),
        "oci_workdir": workdir[-1] if workdir else None,
        "oci_cmd": meta.get("oci_cmd"),
        "layers": [{"id": layer.id, "created_by": layer.created_by, "created": listing.rfc3339(layer.created),
                    "size": layer.usage.bytes} for layer in d.layers],
    }
    out(json.dumps(obj, indent=2))
    _unreadable_note(sum(layer.usage.unreadable for layer in d.layers))


@click.command()
@FORMAT
@click.argument("image")
def history(fmt: str, image: str) -> None:
    """Show the layers of IMAGE (an id or a name), from the base image down: id, own size, what made it."""
    s, n = actions.image_store(image)
    layers = listing.chain_layers(s, n)
    if fmt == "json":
        for layer in layers:
            out(json.dumps({"id": layer.id, "created_by": layer.created_by, "created": listing.rfc3339(layer.created),
                            "size": layer.usage.bytes}))
    else:
        rows = [[str(layer.id), _size(layer.usage.bytes), listing.one_line(layer.created_by or "") or "-"]
                for layer in layers]
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        for r in rows:  # the build text in full: no clipping
            out(f"{r[0].ljust(widths[0])}  {r[1].rjust(widths[1])}  {r[2]}")
    _unreadable_note(sum(layer.usage.unreadable for layer in layers))


@click.command()
@FORMAT
def df(fmt: str) -> None:
    """Show the store's disk usage: images, temp dirs, build steps' caches, other files, and what plash clean would reclaim.

    Reclaimable are temp dirs whose owner process is gone, image dirs that
    a crash left without an index entry and what a killed purge left.
    """
    u = listing.store_usage(Store(config.data_dir()))
    if fmt == "json":
        out(json.dumps({
            "path": u.path,
            "images": {"count": u.images, "bytes": u.image_bytes},
            "tmp": {"count": u.tmp_dirs, "bytes": u.tmp_bytes},
            "caches": {"count": len(u.caches), "bytes": u.cache_bytes, "names": u.caches},
            "other": u.other,
            "reclaimable": {"count": len(u.reclaimable), "bytes": u.reclaimable_bytes, "paths": u.reclaimable},
            "total": u.total_bytes,
            "unreadable_dirs": u.unreadable,
        }))
        _unreadable_note(u.unreadable)
        return
    rows = [["images", str(u.images), _size(u.image_bytes), ""],
            ["temp dirs", str(u.tmp_dirs), _size(u.tmp_bytes), "(tmp/)"]]
    rows += [["other", "", _size(b), name] for name, b in u.other.items()]
    rows += [["reclaimable", str(len(u.reclaimable)), _size(u.reclaimable_bytes), "(plash clean)" if u.reclaimable else ""],
             ["caches", str(len(u.caches)), _size(u.cache_bytes),
              f"(cache/: {', '.join(u.caches)}; plash clean --caches)" if u.caches else "(cache/)"],
             ["total", "", _size(u.total_bytes), u.path]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        out(f"{r[0].ljust(widths[0])}  {r[1].rjust(widths[1])}  {r[2].rjust(widths[2])}  {r[3]}".rstrip())
    _unreadable_note(u.unreadable)
