"""Builds: plan synchronously, reuse cached layers, run what is missing on trio.

Each layer has a fixed lifecycle: key from the parent's key -> look up ->
on miss: run the step in a staging dir -> clean residue -> publish (rename)
-> record the key. On failure or cancellation the staging dir is deleted.
A build whose layers are all cached never starts trio (`prepare` is sync).
"""

from __future__ import annotations

import os

from plash.engine.plan import Layer, Source, layer_keys, split_script
from plash.errors import PlashError
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from plash.engine.events import Event
    from plash.lang.tokens import Where

    Emit = Callable[[Event], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"


class Prepared:
    """A build's plan against one store: the base, the layers, which are cached, and where steps run.

    cwd is the directory build steps start in when it exists inside the image
    (the caller's, or a plash executable's own); it is not part of any key.
    """

    def __init__(self, source: Source, base_id: int | None, base_key: str, layers: list[Layer],
                 ids: list[int | None], cwd: str = "/") -> None:
        self.source, self.base_id, self.base_key = source, base_id, base_key
        self.layers, self.ids, self.cwd = layers, ids, cwd

    @property
    def complete(self) -> bool:
        return self.base_id is not None and all(i is not None for i in self.ids)

    @property
    def final_id(self) -> int | None:
        return self.ids[-1] if self.ids else self.base_id


def resolve_source(store: Store, source: Source | None) -> tuple[int | None, str]:
    """The base image id (None if it must be imported first) and its key."""
    if source is None:
        raise PlashError("no base image", hint="start with --from IMAGE, --from-tarball FILE or --from-debootstrap SUITE")
    if source.kind == "id":
        image = int(source.args[0])
        store.image_dir(image)
        return image, store.key_of(image)
    if source.kind == "map":
        found = store.map_get(source.args[0])
        if found is None:
            raise PlashError(f"no map: {source.args[0]}")
        return found, store.key_of(found)
    if source.kind not in ("tarball", "debootstrap", "lxc", "url", "docker"):
        raise PlashError(f"unknown image source: {source.kind}")
    key = source.import_key()
    return store.lookup_key(key), key


def prepare(store: Store, lines: list[tuple[str, Where]], cwd: str | None = None) -> Prepared:
    source, raw = split_script(lines)
    base_id, base_key = resolve_source(store, source)
    assert source is not None
    layers = layer_keys(base_key, raw)
    ids: list[int | None] = []
    parent_ok = base_id is not None
    for layer in layers:
        found = store.lookup_key(layer.key) if parent_ok else None
        ids.append(found)
        parent_ok = found is not None
    return Prepared(source, base_id, base_key, layers, ids, cwd or _cwd())


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def build(store: Store, lines: list[tuple[str, Where]], make_emit: Callable[[], Emit] | None = None,
          cwd: str | None = None) -> int:
    """Build and return the final image id; all cached: no trio, nothing printed.

    make_emit gives the sink for engine events (plash/ui renders them); it is
    called only when something has to be built. Steps run in cwd (default:
    this process's) when the image has it.
    """
    prepared = prepare(store, lines, cwd)
    if prepared.complete:
        final = prepared.final_id
        assert final is not None
        return final
    import trio

    from plash.engine import jobs
    from plash.engine.scheduler import run_dag

    emit = make_emit() if make_emit else (lambda e: None)
    holds = jobs.Holds(store)
    dag = jobs.build_jobs(store, prepared, emit, holds)
    try:
        results = trio.run(run_dag, dag, jobs.LIMITS)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    finally:
        holds.close()
        close = getattr(emit, "close", None)
        if close:
            close()
    return results[jobs.final_key(prepared)]


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The one error to report from a nursery's group: a PlashError or Ctrl-C first."""
    flat: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            flat.append(e)

    walk(group)
    for kind in (KeyboardInterrupt, PlashError):
        for e in flat:
            if isinstance(e, kind):
                return e
    return flat[0] if flat else group


def default_mirror() -> str:
    return os.environ.get("PLASH_DEBIAN_MIRROR", DEFAULT_MIRROR)
