"""What the store holds, as data: images with their names, sources and sizes, a chain's history, disk usage.

Pure reading: nothing here writes to the store or creates it, and no file
inside a layer is opened (they may belong to other ids, with mode 000):
sizes come from lstat alone. plash.cli.listing renders these.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from plash.errors import NoImage
from plash.store import caches
from plash.store.layout import Store
from plash.store.names import map_entries

# The longest source shown in a listing (inspect and history show all of it).
SOURCE_WIDTH = 80

# The store's own entries (see plash.store.layout); anything else at its top is reported by df as other.
KNOWN_ENTRIES = frozenset(("layer", "index", "map", "keys", "locks", "tmp", "mnt", "lock", "next_id", caches.CACHE_DIR,
                          "memo"))  # "memo": plash.store.execmemo


@dataclass(frozen=True)
class Usage:
    """Disk usage of a tree: bytes (st_blocks * 512, hard links once), and the dirs that could not be listed."""

    bytes: int = 0
    unreadable: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.bytes + other.bytes, self.unreadable + other.unreadable)


def disk_usage(path: str) -> Usage:
    """The disk usage of the tree at path, from lstat alone (never opening a file, never following a link).

    Directories that cannot be listed (another id's, mode 000) count for
    themselves and are skipped; entries that vanish meanwhile (a temp dir
    being written or deleted) are skipped too.
    """
    seen: set[tuple[int, int]] = set()
    try:
        st = os.lstat(path)
    except OSError:
        return Usage()
    total = st.st_blocks * 512
    unreadable = 0
    stack = [path] if os.path.isdir(path) and not os.path.islink(path) else []
    while stack:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            unreadable += 1
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_nlink > 1 and not e.is_dir(follow_symlinks=False):
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
    return Usage(total, unreadable)


@dataclass(frozen=True)
class Layer:
    """One image of a chain as a layer: what made it, when, and its own size."""

    id: int
    created_by: str | None  # None for images made before plash recorded it
    created: float | None
    usage: Usage


@dataclass(frozen=True)
class ImageRow:
    """One image as `plash images` lists it."""

    id: int
    parent: int
    names: tuple[str, ...]
    source: str | None
    usage: Usage
    created: float | None


@dataclass(frozen=True)
class ImageDetails:
    """Everything `plash inspect` shows of an image."""

    row: ImageRow
    key: str | None
    chain: tuple[int, ...]  # from the base image to this one (0 left out)
    meta: dict[str, list[str]]
    layers: tuple[Layer, ...]  # the chain's, base first


@dataclass
class StoreUsage:
    """What `plash df` reports: bytes by kind, and what `plash clean` could reclaim."""

    path: str
    images: int = 0
    image_bytes: int = 0
    tmp_dirs: int = 0
    tmp_bytes: int = 0
    caches: dict[str, int] = field(default_factory=dict)  # the build steps' caches (plash.store.caches), by name
    other: dict[str, int] = field(default_factory=dict)  # top-level entries plash does not make, by name
    reclaimable: dict[str, int] = field(default_factory=dict)  # path (relative to the store) -> bytes
    unreadable: int = 0  # dirs that could not be listed (their contents not counted)

    @property
    def reclaimable_bytes(self) -> int:
        return sum(self.reclaimable.values())

    @property
    def cache_bytes(self) -> int:
        return sum(self.caches.values())

    @property
    def total_bytes(self) -> int:
        return self.image_bytes + self.tmp_bytes + self.cache_bytes + sum(self.other.values()) + sum(
            b for p, b in self.reclaimable.items() if not p.startswith("tmp/"))


def one_line(text: str) -> str:
    """A layer's (multi-line) build text on one line."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def shorten(text: str, width: int = SOURCE_WIDTH) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def source_of(created_by: str | None) -> str | None:
    """What made an image, shortened for a listing: an import's source, or the build text of its layer.

    An OCI import is a chain of layers: its top (the config) shows as
    `docker REF`, the others as `docker REF layer I/N`, without digests.
    """
    if created_by is None:
        return None
    words = created_by.split(" ")
    if words[0] == "docker" and len(words) == 4 and words[2] == "config":
        return f"docker {words[1]}"
    if words[0] == "docker" and len(words) == 5 and words[2] == "layer":
        return " ".join(words[:4])
    return shorten(one_line(created_by))


def _created(meta: dict[str, list[str]]) -> float | None:
    try:
        return float(meta["created"][0])
    except (KeyError, IndexError, ValueError):
        return None


def _names_by_image(s: Store) -> dict[int, list[str]]:
    by_image: dict[int, list[str]] = {}
    for name, image in map_entries(s).items():
        by_image.setdefault(image, []).append(name)
    return by_image


def _row(s: Store, image: int, names: dict[int, list[str]]) -> ImageRow:
    meta = s.meta(image)
    return ImageRow(image, s.parent(image), tuple(names.get(image, ())), source_of(_own(meta, "created_by")),
                    disk_usage(s.layer_root(image)), _created(meta))


def _own(meta: dict[str, list[str]], key: str) -> str | None:
    values = meta.get(key)
    return values[-1] if values else None


def images(s: Store) -> list[ImageRow]:
    """Every image of the store, by id; images removed while listing are left out."""
    names = _names_by_image(s)
    rows = []
    for image in s.ids():
        try:
            rows.append(_row(s, image, names))
        except NoImage:
            continue
    return rows


def tree_order(rows: list[ImageRow]) -> list[tuple[int, ImageRow]]:
    """The rows depth first from each base image, with their depth (0 for a base)."""
    by_id = {r.id: r for r in rows}
    children: dict[int, list[ImageRow]] = {}
    for r in rows:
        children.setdefault(r.parent if r.parent in by_id else 0, []).append(r)
    out: list[tuple[int, ImageRow]] = []
    stack = [(0, r) for r in reversed(children.get(0, []))]
    while stack:
        depth, r = stack.pop()
        out.append((depth, r))
        stack.extend((depth + 1, c) for c in reversed(children.get(r.id, [])))
    return out


def chain_layers(s: Store, image: int) -> list[Layer]:
    """The layers of an image's chain, base first, each with what made it and its own size."""
    layers = []
    for i in s.chain(image)[1:]:
        meta = s.meta(i)
        layers.append(Layer(i, _own(meta, "created_by"), _created(meta), disk_usage(s.layer_root(i))))
    return layers


def details(s: Store, image: int) -> ImageDetails:
    meta = s.meta(image)
    layers = tuple(chain_layers(s, image))
    top = layers[-1]
    row = ImageRow(image, s.parent(image), tuple(_names_by_image(s).get(image, ())), source_of(top.created_by),
                   top.usage, top.created)
    return ImageDetails(row, _own(meta, "key"), tuple(s.chain(image)[1:]), meta, layers)


def _leftover_paths(s: Store) -> list[str]:
    """What `plash clean` would reclaim, as paths relative to the store (fsck's leftovers, stale key locks aside)."""
    from plash.store.fsck import check

    _, leftovers, _ = check(s)
    paths = [entry.partition(": ")[0] for entry in leftovers]
    paths = [p for p in paths if not p.startswith("locks/")]  # empty lock files: nothing to reclaim
    # an orphan's own child dirs are orphans too: counted with it, not again
    return [p for p in paths if not any(p.startswith(q + "/") for q in paths)]


def store_usage(s: Store) -> StoreUsage:
    """The store's disk usage by kind (a missing store uses nothing)."""
    usage = StoreUsage(s.path)
    if not s.exists():
        return usage
    unreadable = 0
    for row in images(s):
        usage.images += 1
        usage.image_bytes += row.usage.bytes
        unreadable += row.usage.unreadable
    try:
        tmp = sorted(os.listdir(s.tmp))
    except OSError:
        tmp = []
    for name in tmp:
        u = disk_usage(os.path.join(s.tmp, name))
        usage.tmp_dirs += 1
        usage.tmp_bytes += u.bytes
        unreadable += u.unreadable
    for name, u in cache_usage(s).items():
        usage.caches[name] = u.bytes
        unreadable += u.unreadable
    for rel in _leftover_paths(s):
        u = disk_usage(os.path.join(s.path, rel))
        usage.reclaimable[rel] = u.bytes
        if not rel.startswith("tmp/"):
            unreadable += u.unreadable  # tmp/'s are counted above
    for name in sorted(os.listdir(s.path)):
        if name not in KNOWN_ENTRIES and name not in usage.reclaimable:
            u = disk_usage(os.path.join(s.path, name))
            usage.other[name] = u.bytes
            unreadable += u.unreadable
    usage.unreadable = unreadable
    return usage


def cache_usage(s: Store) -> dict[str, Usage]:
    """The disk usage of each cache of build steps, by name (sorted)."""
    return {name: disk_usage(caches.path(s, name)) for name in caches.names(s)}


def rfc3339(t: float | None) -> str | None:
    """A time as RFC 3339 in UTC (seconds), None when unknown."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def ago(t: float | None, now: float | None = None) -> str:
    """A time relative to now, as people say it: "3 minutes ago"."""
    if t is None:
        return "-"
    seconds = int((time.time() if now is None else now) - t)
    if seconds < 0:
        return "in the future"
    if seconds < 2:
        return "just now"
    for unit, length in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                         ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= length:
            n = seconds // length
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def human_size(n: int) -> str:
    """Bytes as people read them: 4.0 KiB, 1.2 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
