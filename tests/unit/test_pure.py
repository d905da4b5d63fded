"""Pure functions of the store and launcher, tested directly (no namespaces)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plash.errors import NoImage, UnpackError
from plash.launch.container import ContainerSpec, container_env, split_assignments
from plash.launch.mounts import overlay_options, plan, resolve_in_root
from plash.store.layout import Store, parse_image_id
from plash.store.owners import owner_alive
from plash.store.staging import Staging
from plash.store.unpack import member_parts


@pytest.mark.parametrize(("text", "ok"), [("1", 1), ("42", 42), ("007", 7)])
def test_parse_image_id_accepts(text: str, ok: int) -> None:
    assert parse_image_id(text) == ok


@pytest.mark.parametrize("text", ["0", "", "-1", "x", "1.0", " 1", "١"])  # noqa: RUF001 (an Arabic-Indic digit one, on purpose)
def test_parse_image_id_refuses(text: str) -> None:
    with pytest.raises(NoImage, match="image must be a positive number"):
        parse_image_id(text)


def test_split_assignments() -> None:
    assert split_assignments(["A=1", "B=x=y", "cmd", "C=3"]) == ({"A": "1", "B": "x=y"}, ["cmd", "C=3"])
    assert split_assignments(["=x", "cmd"]) == ({}, ["=x", "cmd"])
    assert split_assignments(["1A=x"]) == ({}, ["1A=x"])


def test_container_env_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASH_EXPORT", "FOO:BAR")
    host = {"TERM": "t", "HOME": "/h", "FOO": "f", "SECRET": "s", "PATH": "/host", "LC_X": "1", "LC_Y": "2"}
    env = container_env(["NAMED"], ["LC_"], ["PATH=/img/bin", "IMG=1"], host=host | {"NAMED": "n"})
    assert env == {"PATH": "/img/bin", "IMG": "1", "TERM": "t", "HOME": "/h", "FOO": "f", "NAMED": "n",
                   "LC_X": "1", "LC_Y": "2"}


def test_overlay_options_of_a_deep_image_fit_one_page() -> None:
    dirs = tuple(str(i) for i in range(1200, 1000, -1))  # 200 layers with 4-digit ids
    spec = ContainerSpec(store="/a/very/long,odd:path" * 20, layer_dirs=dirs, argv=())
    opts = overlay_options(spec)
    assert len(opts) < 4096
    assert "/a/very" not in opts  # store path never appears: relative paths only
    assert opts.startswith("lowerdir=1200/root:1199/root:")
    assert opts.endswith("upperdir=../mnt/upper,workdir=../mnt/work,userxattr")


def test_plan_orders_mounts() -> None:
    spec = ContainerSpec(store="/s", layer_dirs=("2", "1"), argv=("true",),
                         binds=(("/home", "/home"), ("/proc", "/proc")))
    kinds = [(op.kind, op.target) for op in plan(spec)]
    assert kinds == [("tmpfs", "/s/mnt"), ("mkdirs", "/s/mnt"), ("overlay", "/s/mnt/root"),
                     ("bind", "/home"), ("bind", "/proc")]
    staged = ContainerSpec(store="/s", layer_dirs=("1",), argv=(), staging=Staging.at("/s/tmp/x"))
    ops = plan(staged)
    assert [op.kind for op in ops] == ["overlay"]
    assert "upperdir=../tmp/x/img/root,workdir=../tmp/x/work" in ops[0].options


def test_resolve_in_root_stays_inside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "run").mkdir()
    os.symlink("/run/stub.conf", root / "etc" / "resolv.conf")  # absolute: relative to root
    os.symlink("../../../../..", root / "up")
    created: list[str] = []
    got = resolve_in_root(str(root), "/etc/resolv.conf", "file", created)
    assert got == f"{root}/run/stub.conf"
    assert created == ["/run/stub.conf"]
    assert (root / "run" / "stub.conf").is_file()
    created = []
    got = resolve_in_root(str(root), "/up/home", "dir", created)
    assert got == f"{root}/home"
    assert created == ["/home"]
    with pytest.raises(FileNotFoundError):
        resolve_in_root(str(root), "/missing/x", None, [])


def test_member_parts() -> None:
    assert member_parts("./a/b/") == ["a", "b"]
    assert member_parts("/abs/x") == ["abs", "x"]
    assert member_parts(".") == []
    with pytest.raises(UnpackError):
        member_parts("a/../../b")


@given(st.lists(st.sampled_from(["a", "..", ".", "", "b", "/", "c d"]), max_size=8))
def test_member_parts_never_leave_the_root(pieces: list[str]) -> None:
    name = "/".join(pieces)
    try:
        parts = member_parts(name)
    except UnpackError:
        assert ".." in name.split("/")
        return
    assert all(p not in ("", ".", "..") and "/" not in p for p in parts)


def test_owner_alive() -> None:
    with open(f"/proc/{os.getpid()}/stat") as f:
        start = f.read().rsplit(")", 1)[1].split()[19]
    assert owner_alive(f"{os.getpid()}.{start}.x-1")
    assert not owner_alive(f"{os.getpid()}.{int(start) + 1}.x-1")  # pid reused by another process
    assert not owner_alive("999999999.1.x-1")
    assert not owner_alive("junk")


def test_publish_is_atomic_and_ids_skip_used_ones(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "store")).ensure()
    staged = s.mkdtemp("t")
    os.makedirs(f"{staged}/img/root")
    assert s.publish(f"{staged}/img", 0) == 1
    (tmp_path / "store" / "next_id").write_text("1\n")  # as if the counter was lost
    staged2 = s.mkdtemp("t")
    os.makedirs(f"{staged2}/img/root")
    assert s.publish(f"{staged2}/img", 1) == 2
    assert s.chain(2) == [0, 1, 2]
    assert s.descendants(1) == [1, 2]
