"""From an expanded build script to a plan: a base source and a chain of keyed layers.

Pure: no I/O beyond what a source's identity needs (hashing a tarball file),
no trio. Keys are SHA-256 chains over the parent's key and the layer's exact
text, so they never depend on numeric ids and mean the same in any store.
"""

from __future__ import annotations

import os

from plash.errors import MacroError, NoImage, PlashError
from plash.lang.caches import hint_of, key_text, step_shell
from plash.lang.hashpath import sha256
from plash.lang.macros import HINT
from plash.lang.tokens import unquote_words
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.lang.tokens import Where

    RawLayer = tuple[str, str, dict[str, list[str]], Where]  # text, shell, meta, where


ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "armhf", "i686": "i386", "ppc64le": "ppc64el",
        "s390x": "s390x", "riscv64": "riscv64"}


def debian_arch() -> str:
    m = os.uname().machine
    return ARCH.get(m, m)


def digest(*parts: str) -> str:
    h = sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def file_digest(path: str) -> str:
    h = sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Kinds:
    """The closed set of image-source kinds: plain strings (no enum on the start path), part of import keys."""

    ID = "id"  # an image of the store, by id
    MAP = "map"  # an image of the store, by map name
    TARBALL = "tarball"
    DEBOOTSTRAP = "debootstrap"
    LXC = "lxc"
    URL = "url"
    DOCKER = "docker"  # a registry reference, oci:DIR[:TAG] or docker-archive:FILE
    IMPORTED = frozenset((TARBALL, DEBOOTSTRAP, LXC, URL, DOCKER))  # made by an import
    ALL = IMPORTED | {ID, MAP}


class Source:
    """Where the base image comes from: a kind of Kinds and its arguments."""

    __slots__ = ("args", "kind")

    def __init__(self, kind: str, args: tuple[str, ...]) -> None:
        if kind not in Kinds.ALL:
            raise PlashError(f"unknown image source: {kind}")
        self.kind, self.args = kind, args

    def __repr__(self) -> str:
        return f"Source({self.kind!r}, {self.args!r})"

    def pullable(self) -> bool:
        """--pull looks at it again: an import its arguments do not pin (a tarball's key is its content already)."""
        if self.kind in (Kinds.URL, Kinds.LXC):
            return len(self.args) < 2 or not self.args[1]  # no sha256 given
        if self.kind == Kinds.DOCKER:
            return self.args[0].startswith(("oci:", "docker-archive:")) or "@" not in self.args[0]
        return self.kind == Kinds.DEBOOTSTRAP

    def import_key(self) -> str:
        """The cache key of an import: source kind and arguments (tarballs: their content)."""
        if self.kind == Kinds.TARBALL:
            try:
                return digest("import", "tarball", file_digest(self.args[0]))
            except OSError as e:
                raise PlashError(f"cannot read tarball {self.args[0]}: {e.strerror}") from None
        return digest("import", self.kind, debian_arch(), *self.args)


class Layer:
    """One build step: its script text, its meta hints, its cache key and where it was written."""

    __slots__ = ("key", "meta", "shell", "text", "where")

    def __init__(self, text: str, shell: str, meta: dict[str, list[str]], key: str, where: object) -> None:
        self.text, self.shell, self.meta, self.key, self.where = text, shell, meta, key, where

    def __repr__(self) -> str:
        return f"Layer({self.key[:12]}, {self.shell!r})"


META_HINTS = {"entrypoint": "entrypoint", "env": "env", "env-prefix": "env_prefix", "mount": "mount"}


def split_script(lines: list[tuple[str, Where]]) -> tuple[Source | None, list[RawLayer]]:
    """The base source (last image hint wins) and the layers as (text, shell, meta, where)."""
    source: Source | None = None
    layers: list[RawLayer] = []
    cur: list[tuple[str, Where]] = []

    def flush() -> None:
        # a cache asks for a step to bind it for: alone, it makes no layer
        if any(line.strip() and hint_of(line) is None for line, _ in cur):
            shell = "\n".join(line for line, _ in cur if not line.startswith(HINT))
            meta: dict[str, list[str]] = {}
            for line, _ in cur:
                if line.startswith(HINT):
                    name, _sep, value = line[len(HINT):].partition("=")
                    if name in META_HINTS:
                        meta.setdefault(META_HINTS[name], []).append(value)
            where = next((w for line, w in cur if line.strip() and not line.startswith(HINT)), cur[0][1])
            layers.append(("\n".join(line for line, _ in cur), shell, meta, where))
        cur.clear()

    for line, where in lines:
        if line.startswith(HINT):
            name, _, value = line[len(HINT):].partition("=")
            if name == "image":
                kind, _, rest = value.partition(" ")
                source = Source(kind, unquote_words(rest))
                continue
            if name == "layer":
                flush()
                continue
        cur.append((line, where))
    flush()
    return source, layers


def layer_keys(base_key: str, layers: list[RawLayer]) -> list[Layer]:
    """The layers with their keys; the caches a layer's step binds are no part of its key (plash.lang.caches)."""
    out = []
    parent = base_key
    for text, shell, meta, where in layers:
        try:
            step_shell(text, package_cache=True)
        except ValueError as e:
            raise MacroError(where, str(e)) from None
        key = digest("layer", parent, key_text(text))
        out.append(Layer(text, shell, meta, key, where))
        parent = key
    return out


def cached_on(store: Store, key: str, parent: int | None) -> int | None:
    """The image recorded for key if it sits on parent, else None (as for parent None).

    A key names a layer's text on its parent's key, but the image under it
    is only this build's layer when it was made on this build's parent: once
    the parent key points at a newer image (--pull found a new base, or
    --no-cache made the parent again), the layers made on the old one are
    stale, and are made again on the new one.
    """
    found = store.lookup_key(key) if parent is not None else None
    if found is None:
        return None
    try:
        return found if store.parent(found) == parent else None
    except NoImage:  # removed meanwhile
        return None


class Prepared:
    """A build's plan against one store: the base, the layers, which are cached, and where steps run.

    cwd is the directory build steps start in when it exists inside the image
    (the caller's, or a plash executable's own); it is not part of any key.
    no_cache: its layers are made again, whatever is cached; pull: its base
    is imported again if its source changed (see build_jobs); package_cache:
    package managers use the store's caches (plash.lang.caches), not part
    of any key either.
    """

    def __init__(self, source: Source, base_id: int | None, base_key: str, layers: list[Layer],
                 ids: list[int | None], cwd: str = "/", no_cache: bool = False, pull: bool = False,
                 package_cache: bool = True) -> None:
        self.source, self.base_id, self.base_key = source, base_id, base_key
        self.layers, self.ids, self.cwd = layers, ids, cwd
        self.no_cache, self.pull, self.package_cache = no_cache, pull, package_cache

    @property
    def complete(self) -> bool:
        return self.base_id is not None and all(i is not None for i in self.ids)

    @property
    def runs_steps(self) -> bool:
        """Whether building it runs a build step (a layer with a shell that is not cached, or above one)."""
        missing = self.ids.index(None) if None in self.ids else (0 if self.base_id is None else len(self.ids))
        return any(layer.shell.strip() for layer in self.layers[missing:])

    @property
    def final_id(self) -> int | None:
        return self.ids[-1] if self.ids else self.base_id

    @property
    def final_key(self) -> str:
        return self.layers[-1].key if self.layers else self.base_key


def resolve_source(store: Store, source: Source | None) -> tuple[int | None, str]:
    """The base image id (None if it must be imported first) and its key."""
    if source is None:
        raise PlashError("no base image", hint="start with --from IMAGE, --from-tarball FILE or --from-debootstrap SUITE")
    if source.kind == Kinds.ID:
        image = int(source.args[0])
        store.image_dir(image)
        return image, store.key_of(image)
    if source.kind == Kinds.MAP:
        found = store.map_get(source.args[0])
        if found is None:
            raise PlashError(f"no map: {source.args[0]}")
        return found, store.key_of(found)
    key = source.import_key()
    return store.lookup_key(key), key


def prepare(store: Store, lines: list[tuple[str, Where]], cwd: str | None = None, no_cache: bool = False,
            pull: bool = False, package_cache: bool = True) -> Prepared:
    """The plan of a build script: what is cached already is found here, synchronously (no trio).

    no_cache: no layer counts as cached; pull: nor does an imported base
    (its source is looked at again when the build runs); package_cache:
    see Prepared.
    """
    source, raw = split_script(lines)
    base_id, base_key = resolve_source(store, source)
    assert source is not None
    if pull and source.pullable():
        base_id = None
    layers = layer_keys(base_key, raw)
    ids: list[int | None] = []
    parent = None if no_cache else base_id
    for layer in layers:
        parent = cached_on(store, layer.key, parent)
        ids.append(parent)
    return Prepared(source, base_id, base_key, layers, ids, cwd or _cwd(), no_cache, pull, package_cache)


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"
