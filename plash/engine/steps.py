"""The jobs of a build: the base image's import (or a check that it is still there), then one per layer.

Each layer is made by layers.make_layer; a build step is its producer: a
launcher child runs the layer's shell in a container on the parent image,
with the changes kept in the staging dir's upper dir.
"""

from __future__ import annotations

import trio

from plash import testhook
from plash.engine import stepservers
from plash.engine.children import run_child
from plash.engine.events import Event, Kind, note
from plash.engine.launcher import launcher
from plash.engine.layers import LayerSpec, make_layer
from plash.engine.scheduler import Job
from plash.errors import NoImage, PlashError
from plash.lang.caches import step_shell
from plash.launch.stepspec import StepSpec
from plash.store import caches
from plash.store.space import full_store_note

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.layers import Produce
    from plash.engine.locks import Holds
    from plash.engine.plan import Layer, Prepared
    from plash.store.layout import Store
    from plash.store.staging import Staging


def build_jobs(store: Store, prepared: Prepared, emit: Emit, holds: Holds) -> dict[str, Job]:
    """The DAG of one build; every image it makes or uses is held in holds (the caller closes it).

    With prepared.pull the base is imported again if its source changed;
    with prepared.no_cache every layer is made again.
    """
    jobs: dict[str, Job] = {}
    base = prepared.base_key
    if prepared.base_id is None:
        # only a build that imports its base loads the importers (httpx among them: 50 ms)
        from plash.engine.imports import import_source

        async def imported() -> int:
            image = await import_source(store, prepared.source, base, emit, pull=prepared.pull)
            if not await trio.to_thread.run_sync(holds.image, image):
                raise NoImage(f"the imported base image {image} was removed meanwhile")
            return image

        jobs[base] = Job(base, (), "import", imported, label=f"import {prepared.source.kind}")
    else:
        base_id = prepared.base_id

        async def known() -> int:
            if not await trio.to_thread.run_sync(holds.image, base_id):
                raise NoImage(f"no image: {base_id}")
            return base_id

        jobs[base] = Job(base, (), "none", known)
    parent = base
    total = len(prepared.layers)
    for n, layer in enumerate(prepared.layers, 1):
        async def make(parent_id: int, layer: Layer = layer, n: int = n) -> int:
            return await build_layer(store, parent_id, layer, n, total, emit, prepared.cwd, holds,
                                     not prepared.no_cache, prepared.package_cache)

        jobs[layer.key] = Job(layer.key, (parent,), "step", make, label=f"layer {n}")
        parent = layer.key
    return jobs


async def build_layer(store: Store, parent: int, layer: Layer, n: int, total: int, emit: Emit, cwd: str,
                      holds: Holds, reuse: bool = True, package_cache: bool = True) -> int:
    has_step = bool(layer.shell.strip())  # a layer of hints only needs no container
    what = f"layer {n}/{total} ({layer.where})"
    spec = LayerSpec(layer.key, step_producer(store, parent, layer, what, emit, cwd, package_cache)
                     if has_step else None, what, meta={**layer.meta, "created_by": [made_by(layer)]},
                     container=has_step)
    image = await make_layer(store, spec, parent, emit, holds, reuse)
    testhook.pause("layer-made", str(image))
    return image


def step_producer(store: Store, parent: int, layer: Layer, what: str, emit: Emit, cwd: str,
                  package_cache: bool = True) -> Produce:
    """Run the layer's shell in a container on parent, its changes kept in the staging's upper dir.

    The caches the layer asks for (plash.lang.caches) are bound for the
    step and locked while it runs.
    """
    async def produce(staging: Staging) -> None:
        shell, mounts = step_shell(layer.text, package_cache)
        dirs = [await trio.to_thread.run_sync(caches.ensure, store, m.name, m.subdirs) for m in mounts]
        binds = tuple(zip(dirs, (m.path for m in mounts), strict=True))
        async with CacheLocks(dirs, [m.name for m in mounts], emit, what):
            step = StepSpec(store.path, parent, shell, staging.path, cwd, binds)
            await trio.to_thread.run_sync(step.write, staging.step_file)
            await run_step(store, layer, what, emit, staging)

    return produce


class CacheLocks:
    """The locks of the caches a step binds, taken in name order (no two steps can deadlock), polled (cancellable)."""

    def __init__(self, dirs: list[str], names: list[str], emit: Emit, what: str) -> None:
        self.order = sorted(zip(names, dirs, strict=True))
        self.emit, self.what = emit, what
        self.held: list[caches.CacheLock] = []

    async def __aenter__(self) -> None:
        try:
            for name, d in self.order:
                lock = caches.CacheLock(d)
                self.held.append(lock)
                told = False
                while True:
                    if lock.try_lock():
                        break
                    if not told:
                        self.emit(note(f"{self.what} waits for another step using the cache {name}"))
                        told = True
                    await trio.sleep(0.05)
        except BaseException:
            self.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        for lock in self.held:
            lock.close()
        self.held.clear()


async def run_step(store: Store, layer: Layer, what: str, emit: Emit, staging: Staging) -> None:
    """Run the step whose spec is written in staging (in a step server); a failure is a PlashError at the layer's place."""
    if getattr(emit, "wants_output", False):  # a renderer: lines go through it
        emit(Event(Kind.STEP_START, what, text=made_by(layer).split("\n", 1)[0]))
        code = -1
        try:
            code = await stepservers.run_step(staging.step_file,
                                              lambda line: emit(Event(Kind.STEP_OUTPUT, what, text=line)))
        except PlashError:  # the step could not start (its server could not enter the namespaces)
            emit(Event(Kind.STEP_DONE, what, done=1, text="failed"))
            raise
        except BaseException:
            # stopped (Ctrl-C, or another job of the run failed): not a failure of its own
            emit(Event(Kind.STEP_DONE, what, done=-1, text="cancelled"))
            raise
        emit(Event(Kind.STEP_DONE, what, done=code))
    else:
        emit(note(f"building {what}"))
        code = await stepservers.run_step(staging.step_file)
    if code:
        full = full_store_note(store.path)  # before discarding frees the room
        raise PlashError(f"build failed at {layer.where} (exit {code}){full}")
    # the step's supervisor finishes the staging dir itself; if it could not, do it here
    if not staging.finished and await run_child(launcher("finish", staging.path)):
        raise PlashError("cannot clean up the new layer")


def made_by(layer: Layer) -> str:
    """What made a layer, for its history: its build text, without plash's hint lines."""
    return layer.shell.strip() or "\n".join(line for line in layer.text.splitlines() if line.strip())
