"""The life of a layer (make_layer, make_chain) against a real store in tmp_path.

Producers here only write files into staging.upper, as build steps and
imports do; whatever goes wrong, the store must be left as it was: no
image, no key, no staging dir in tmp/, no lock file. Discarding an
unpublished staging dir runs the launcher's rmtree child.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from enginekit import emit, snapshot, store  # noqa: F401 (fixtures, used by name)

from plash.engine.events import Kind
from plash.engine.layers import LayerSpec, make_chain, make_layer
from plash.engine.locks import Holds, KeyLock
from plash.errors import PlashError
from plash.store.layout import Store
from plash.store.staging import Staging

TIMEOUT = 30  # a hang is a failure, not a stuck suite


class Producer:
    """Writes files into staging.upper; counts its calls; optionally waits or fails after writing."""

    def __init__(self, files: dict[str, str], then: Callable[[], Awaitable[None]] | None = None) -> None:
        self.files, self.then = files, then
        self.calls = 0
        self.stagings: list[str] = []

    async def __call__(self, staging: Staging) -> None:
        self.calls += 1
        self.stagings.append(staging.path)
        write_files(staging.upper, self.files)
        if self.then is not None:
            await self.then()


def write_files(upper: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = Path(upper, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def root_of(store: Store, image: int) -> Path:
    return Path(store.image_dir(image), "root")


def assert_gone(path: str) -> None:
    assert not os.path.lexists(path), path


def assert_left_clean(store: Store) -> None:
    assert os.listdir(store.tmp) == [], "a staging dir was left behind"
    assert os.listdir(store.locks) == [], "a key lock file was left behind"


def assert_in_use(store: Store, image: int) -> None:
    with pytest.raises(PlashError, match="in use"):
        store.detach(image)


async def test_a_miss_produces_and_publishes_the_files_under_the_key(store: Store, emit) -> None:
    produce = Producer({"etc/hello": "hi\n", "usr/bin/tool": "#!/bin/sh\n"})
    spec = LayerSpec("k" * 64, produce, "layer 1/1", meta={"env": ["LANG=C"]})
    with trio.fail_after(TIMEOUT):
        image = await make_layer(store, spec, 0, emit)
    assert produce.calls == 1
    assert (root_of(store, image) / "etc/hello").read_text() == "hi\n"
    assert (root_of(store, image) / "usr/bin/tool").read_text() == "#!/bin/sh\n"
    assert store.lookup_key("k" * 64) == image
    assert store.meta(image)["env"] == ["LANG=C"]
    assert store.parent(image) == 0
    assert_left_clean(store)


async def test_a_second_call_reuses_the_layer_without_producing(store: Store, emit) -> None:
    first, second = Producer({"a": "1"}), Producer({"a": "2"})
    image = await make_layer(store, LayerSpec("key-a", first, "a"), 0, emit)
    again = await make_layer(store, LayerSpec("key-a", second, "a"), 0, emit)
    assert again == image
    assert (first.calls, second.calls) == (1, 0)
    assert store.ids() == [image]


async def test_a_layer_without_a_producer_is_an_empty_layer_of_settings(store: Store, emit) -> None:
    base = await make_layer(store, LayerSpec("base", Producer({"f": "x"}), "base"), 0, emit)
    top = await make_layer(store, LayerSpec("top", None, "settings", meta={"entrypoint": ["/bin/sh"]}), base, emit)
    assert os.listdir(root_of(store, top)) == []
    assert store.parent(top) == base
    assert store.meta(top)["entrypoint"] == ["/bin/sh"]


async def test_two_concurrent_calls_for_one_key_produce_once(store: Store, emit) -> None:
    release = trio.Event()
    waiting = trio.Event()

    def watch(event) -> None:
        emit(event)
        if event.kind == Kind.NOTE and event.label.startswith("waiting for another job of this run"):
            waiting.set()

    producing = trio.Event()

    async def hold_on() -> None:
        producing.set()
        await release.wait()

    produce = Producer({"made-by": "the holder"}, hold_on)
    results: list[int] = []

    async def make() -> None:
        results.append(await make_layer(store, LayerSpec("one-key", produce, "the layer"), 0, watch))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(make)
            nursery.start_soon(make)
            await waiting.wait()  # one holds the key's lock and produces; the other waits for it
            await producing.wait()
            assert produce.calls == 1
            release.set()
    assert produce.calls == 1
    assert results[0] == results[1]
    assert store.ids() == [results[0]]
    assert_left_clean(store)


async def test_a_producer_that_raises_leaves_the_store_as_it_was(store: Store, emit, snapshot) -> None:
    base = await make_layer(store, LayerSpec("base", Producer({"f": "x"}), "base"), 0, emit)
    before = snapshot(store)

    async def fail() -> None:
        raise PlashError("build failed at build.sh:3 (exit 1)")

    produce = Producer({"half/made": "x" * 10000}, fail)
    with trio.fail_after(TIMEOUT), pytest.raises(PlashError, match="build failed"):
        await make_layer(store, LayerSpec("bad", produce, "layer 2/2"), base, emit)
    assert produce.calls == 1
    assert_gone(produce.stagings[0])
    assert store.lookup_key("bad") is None
    assert store.ids() == [base]
    assert_left_clean(store)
    assert snapshot(store) == before


async def test_cancelled_mid_produce_the_staging_dir_is_discarded(store: Store, emit, snapshot) -> None:
    before = snapshot(store)
    started = trio.Event()
    cancelled: list[bool] = []

    async def hang() -> None:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    produce = Producer({"big/file": "x" * 100000}, hang)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(make_layer, store, LayerSpec("k", produce, "a layer"), 0, emit)
            await started.wait()
            assert os.listdir(store.tmp) != []  # the staging dir is there while it is produced
            nursery.cancel_scope.cancel()
    assert cancelled == [True]
    assert_gone(produce.stagings[0])
    assert store.lookup_key("k") is None
    assert_left_clean(store)
    assert snapshot(store) == before


async def test_a_chain_with_one_failing_producer_publishes_none_of_its_layers(store: Store, emit, snapshot) -> None:
    before = snapshot(store)
    first_done, third_done = trio.Event(), trio.Event()

    async def set_first() -> None:
        first_done.set()

    async def set_third() -> None:
        third_done.set()

    async def fail_after_the_others() -> None:
        await first_done.wait()
        await third_done.wait()
        raise PlashError("layer 2 of the image: sha256 mismatch")

    producers = [Producer({"one": "1"}, set_first), Producer({"two": "2"}, fail_after_the_others),
                 Producer({"three": "3"}, set_third)]
    specs = [LayerSpec(f"key-{n}", p, f"layer {n}", kind="oci") for n, p in enumerate(producers, 1)]
    with trio.fail_after(TIMEOUT), pytest.raises(PlashError, match="sha256 mismatch"):
        await make_chain(store, specs, 0, emit)
    assert [p.calls for p in producers] == [1, 1, 1]  # side by side: all three ran, two to their end
    assert [store.lookup_key(s.key) for s in specs] == [None, None, None]
    assert store.ids() == []
    assert_left_clean(store)
    assert snapshot(store) == before


async def test_a_chain_makes_only_what_is_missing_on_top_of_what_is_cached(store: Store, emit) -> None:
    first = await make_chain(store, [LayerSpec("c1", Producer({"one": "1"}), "1")], 0, emit)
    again = Producer({"one": "changed"})
    top = Producer({"two": "2"})
    image = await make_chain(store, [LayerSpec("c1", again, "1"), LayerSpec("c2", top, "2")], 0, emit)
    assert (again.calls, top.calls) == (0, 1)
    assert store.chain(image) == [0, first, image]
    assert (root_of(store, first) / "one").read_text() == "1"
    assert store.lookup_key("c2") == image


async def test_reuse_false_makes_a_fresh_image_under_the_same_key(store: Store, emit) -> None:
    old_files, new_files = Producer({"v": "old"}), Producer({"v": "new"})
    old = await make_layer(store, LayerSpec("import-key", old_files, "the import"), 0, emit)
    new = await make_layer(store, LayerSpec("import-key", new_files, "the import"), 0, emit, reuse=False)
    assert new != old
    assert new_files.calls == 1
    assert (root_of(store, new) / "v").read_text() == "new"
    assert store.lookup_key("import-key") == new
    assert store.ids() == [old, new]  # the old image stays; only the key moves
    assert_left_clean(store)


async def test_holds_hold_a_layer_just_made_until_closed(store: Store, emit) -> None:
    holds = Holds(store)
    try:
        image = await make_layer(store, LayerSpec("held", Producer({"f": "x"}), "held"), 0, emit, holds)
        assert_in_use(store, image)
    finally:
        holds.close()
    assert store.detach(image)[1] == [image]
    assert store.lookup_key("held") is None


async def test_holds_hold_a_reused_layer_until_closed(store: Store, emit) -> None:
    image = await make_layer(store, LayerSpec("cached", Producer({"f": "x"}), "cached"), 0, emit)
    holds = Holds(store)
    try:
        produce = Producer({"f": "y"})
        assert await make_layer(store, LayerSpec("cached", produce, "cached"), 0, emit, holds) == image
        assert produce.calls == 0
        assert_in_use(store, image)
    finally:
        holds.close()
    assert store.detach(image)[1] == [image]


async def test_holds_hold_every_layer_a_chain_made(store: Store, emit) -> None:
    holds = Holds(store)
    try:
        top = await make_chain(store, [LayerSpec("h1", Producer({"a": "1"}), "1"),
                                       LayerSpec("h2", Producer({"b": "2"}), "2")], 0, emit, holds)
        below = store.parent(top)
        assert_in_use(store, top)
        assert_in_use(store, below)
    finally:
        holds.close()
    assert sorted(store.detach(below)[1]) == sorted([below, top])


async def test_a_key_lock_waiter_that_is_cancelled_leaves_the_holders_lock_alone(store: Store, emit) -> None:
    waiting = trio.Event()
    entered: list[bool] = []

    def watch(event) -> None:
        if event.kind == Kind.NOTE:
            waiting.set()

    async def wait_for_it() -> None:
        async with KeyLock(store, "busy-key", watch, "the layer"):
            entered.append(True)

    with trio.fail_after(TIMEOUT):
        async with KeyLock(store, "busy-key", emit, "the layer"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wait_for_it)
                await waiting.wait()
                nursery.cancel_scope.cancel()
            assert entered == []
            assert os.listdir(store.locks) == ["busy-key"]  # the holder's, still in place
        assert os.listdir(store.locks) == []
        async with KeyLock(store, "busy-key", watch, "the layer"):  # free again: taken at once
            pass
    assert emit.events == []
