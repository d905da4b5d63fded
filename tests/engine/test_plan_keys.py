"""The planner: a script split into a base and layers, keys as chains, and what a real store has cached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from enginekit import store  # noqa: F401 (fixtures, used by name)

from plash.engine.plan import Source, layer_keys, prepare, resolve_source, split_script
from plash.errors import PlashError
from plash.lang.expand import hint
from plash.lang.tokens import Where
from plash.store.layout import Store
from plash.store.staging import Staging


def script(*lines: str, file: str = "build.sh") -> list[tuple[str, Where]]:
    return [(line, Where(file, n)) for n, line in enumerate(lines, 1)]


def publish(store: Store, parent: int, files: dict[str, str] | None = None, key: str | None = None) -> int:
    """An image made the way the engine makes one: staged, filled, published."""
    staging = Staging.new(store, "test")
    for name, text in (files or {}).items():
        path = Path(staging.upper, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with staging:
        return staging.publish(parent, None, key)


# -- split_script and layer_keys (pure) ------------------------------------------------


def test_split_script_takes_the_last_image_hint_and_splits_at_layer_hints() -> None:
    source, raw = split_script(script(
        hint("image", "id 1"),
        "apt-get update",
        hint("layer"),
        hint("env", "LANG"),
        "make install",
        hint("image", "map 'my base'"),
        hint("layer"),
        hint("layer"),  # an empty layer is no layer
    ))
    assert source is not None
    assert (source.kind, source.args) == ("map", ("my base",))
    assert len(raw) == 2, raw
    text, shell, meta, where = raw[1]
    assert text == hint("env", "LANG") + "\nmake install"
    assert shell == "make install"  # the hints are not run
    assert meta == {"env": ["LANG"]}
    assert where == Where("build.sh", 5)  # the first line that is run, not the hint before it
    assert raw[0][1] == "apt-get update"


def test_keys_are_chains_over_the_parent_key_and_the_text() -> None:
    _, raw = split_script(script("echo a", hint("layer"), "echo b"))
    a, b = layer_keys("base-key", raw)
    assert layer_keys("base-key", raw[:1])[0].key == a.key  # a layer's key depends on what is below, not above
    assert layer_keys("base-key", raw[1:])[0].key != b.key  # the same text on another parent
    assert [x.key for x in layer_keys("other-base", raw)] != [a.key, b.key]
    assert len({a.key, b.key}) == 2
    assert all(len(k) == 64 for k in (a.key, b.key))


def test_where_a_layer_was_written_is_not_in_its_key() -> None:
    _, here = split_script(script("echo a", file="one.sh"))
    _, there = split_script([("echo a", Where("two.sh", 40))])
    assert layer_keys("k", here)[0].key == layer_keys("k", there)[0].key
    _, hinted = split_script(script(hint("env", "X"), "echo a"))
    assert layer_keys("k", hinted)[0].key != layer_keys("k", here)[0].key  # the hints are in the text: in the key


def test_an_import_key_depends_on_the_source_and_a_tarball_on_its_content(tmp_path: Path) -> None:
    tarball = tmp_path / "root.tar"
    tarball.write_bytes(b"first")
    first = Source("tarball", (str(tarball),)).import_key()
    tarball.write_bytes(b"second")
    assert Source("tarball", (str(tarball),)).import_key() != first
    url = Source("url", ("http://example.invalid/a.tar",)).import_key()
    assert url != Source("url", ("http://example.invalid/b.tar",)).import_key()
    assert url == Source("url", ("http://example.invalid/a.tar",)).import_key()
    with pytest.raises(PlashError, match="cannot read tarball"):
        Source("tarball", (str(tmp_path / "gone.tar"),)).import_key()


# -- prepare against a real store ------------------------------------------------------


def test_prepare_finds_the_cached_layers_of_a_chain(store: Store) -> None:
    base = publish(store, 0, {"etc/os-release": "test"})
    lines = script(hint("image", f"id {base}"), "echo one", hint("layer"), "echo two")

    plan = prepare(store, lines, cwd="/")
    assert (plan.base_id, plan.base_key) == (base, store.key_of(base))
    assert plan.ids == [None, None]
    assert not plan.complete
    assert plan.final_id is None

    one = publish(store, base, key=plan.layers[0].key)
    plan = prepare(store, lines, cwd="/")
    assert plan.ids == [one, None]
    assert not plan.complete

    two = publish(store, one, key=plan.layers[1].key)
    plan = prepare(store, lines, cwd="/")
    assert plan.ids == [one, two]
    assert plan.complete
    assert plan.final_id == two
    assert plan.final_key == plan.layers[1].key


def test_a_cached_layer_on_a_missing_parent_is_not_used(store: Store) -> None:
    base = publish(store, 0)
    lines = script(hint("image", f"id {base}"), "echo one", hint("layer"), "echo two")
    plan = prepare(store, lines)
    elsewhere = publish(store, base)  # not layer one's image: its key is not recorded
    publish(store, elsewhere, key=plan.layers[1].key)
    assert prepare(store, lines).ids == [None, None]


def test_cwd_is_kept_but_is_not_in_any_key(store: Store) -> None:
    base = publish(store, 0)
    lines = script(hint("image", f"id {base}"), "pwd")
    here, there = prepare(store, lines, cwd="/srv/a"), prepare(store, lines, cwd="/srv/b")
    assert (here.cwd, there.cwd) == ("/srv/a", "/srv/b")
    assert here.layers[0].key == there.layers[0].key
    publish(store, base, key=here.layers[0].key)
    assert prepare(store, lines, cwd="/srv/b").complete


def test_a_map_names_the_base_and_its_key_is_the_images(store: Store) -> None:
    base = publish(store, 0, key="a-known-key")
    store.map_set("mybase", base)
    plan = prepare(store, script(hint("image", "map mybase"), "true"))
    assert (plan.base_id, plan.base_key) == (base, "a-known-key")
    by_id = prepare(store, script(hint("image", f"id {base}"), "true"))
    assert by_id.layers[0].key == plan.layers[0].key  # the same base, however it is named


def test_an_import_not_yet_made_has_no_base_id_and_nothing_cached(store: Store) -> None:
    plan = prepare(store, script(hint("image", "url http://example.invalid/root.tar"), "true"))
    assert plan.base_id is None
    assert plan.base_key == Source("url", ("http://example.invalid/root.tar",)).import_key()
    assert plan.ids == [None]
    image = publish(store, 0, key=plan.base_key)
    assert resolve_source(store, plan.source) == (image, plan.base_key)


@pytest.mark.parametrize(("source", "message"), [
    (lambda: None, "no base image"),
    (lambda: Source("map", ("nomap",)), "no map: nomap"),
    (lambda: Source("id", ("99",)), "no image: 99"),
    (lambda: Source("ftp", ("x",)), "unknown image source: ftp"),
], ids=("none", "map", "id", "kind"))
def test_a_base_that_cannot_be_resolved_is_a_plash_error(store: Store, source: Callable[[], Source | None],
                                                         message: str) -> None:
    with pytest.raises(PlashError, match=message):
        resolve_source(store, source())
