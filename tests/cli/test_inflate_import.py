"""import-docker and import-tar give the same images whether zlib-ng or the standard zlib inflates, for every user.

zlib-ng is kept from importing by a package of that name, first on the
import path, that refuses; it leaves a mark when tried, which shows that
the unpacker (a launcher child) fell back to zlib.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import tarfile
from pathlib import Path

from conftest import Plash
from oci_images import Layout
from trees import file_tree

T = 1_700_000_000
rng = random.Random(1515)


def _tar(members: list[tuple[str, bytes, bytes, dict[str, str]]]) -> bytes:
    """A PAX tarball of (name, type, data, pax headers)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, pax in members:
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.pax_headers = kind, T, pax
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind == tarfile.SYMTYPE:
                info.linkname = data.decode()
                data = b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


BASE = _tar([("etc/", tarfile.DIRTYPE, b"", {}), ("etc/os-release", tarfile.REGTYPE, b"ID=test\n", {}),
             ("usr/", tarfile.DIRTYPE, b"", {}), ("usr/lib/", tarfile.DIRTYPE, b"", {}),
             ("usr/lib/big.so", tarfile.REGTYPE, rng.randbytes(700_000) + bytes(700_000), {}),
             ("usr/lib/" + "l" * 150, tarfile.REGTYPE, b"long name", {}),
             ("usr/lib/x", tarfile.REGTYPE, b"x", {"SCHILY.xattr.user.plash": "kept"}),
             ("lib", tarfile.SYMTYPE, b"usr/lib", {})])
TOP = _tar([("etc/", tarfile.DIRTYPE, b"", {}), ("etc/.wh.os-release", tarfile.REGTYPE, b"", {}),
            ("etc/hostname", tarfile.REGTYPE, b"top\n", {})])


def _blocker(plash: Plash) -> tuple[dict[str, str], Path]:
    """An environment in which zlib_ng does not import, and the file its attempts are marked in."""
    base = plash.work / "no-zlib-ng"
    (base / "zlib_ng").mkdir(parents=True)
    mark = base / "tried"
    (base / "zlib_ng" / "__init__.py").write_text(
        f"open({str(mark)!r}, 'a').write('tried\\n')\nraise ImportError('zlib-ng is kept out by the test')\n")
    os.chmod(base, 0o777)  # the mark is written by the user's unpacker
    os.chmod(base / "zlib_ng", 0o755)
    return {"PYTHONPATH": str(base)}, mark


def _tree(root: Path) -> list[tuple[str, ...]]:
    # (the times of whiteouts and of the directories imports make are the import's own)
    return file_tree(str(root), dir_times=False, links=False)


def _images(plash: Plash, ids: list[str], env: dict[str, str]) -> list[list[tuple[str, ...]]]:
    return [_tree(Path(plash.ok("nodepath", i, env=env)) / "root") for i in ids]


def _chain(plash: Plash, top: str, env: dict[str, str]) -> list[str]:
    ids = [top]
    while ids[-1] != "0":
        ids.append(plash.ok("parent", ids[-1], env=env))
    return ids[:-1]


def test_the_same_images_with_either_inflater(plash: Plash, shared_dir: Path) -> None:
    layout = Layout(shared_dir / f"inflate-{plash.user}")
    layout.image([(BASE, "gzip"), (TOP, "gzip")], tag="t")
    layout.write()
    tarball = shared_dir / f"inflate-{plash.user}.tar.gz"
    tarball.write_bytes(gzip.compress(BASE, 6, mtime=0) + gzip.compress(TOP, 6, mtime=0))
    tarball.chmod(0o644)
    blocked, mark = _blocker(plash)
    made = []
    for env in ({}, {**blocked, "PLASH_DATA": str(plash.work / "store-zlib")}):
        docker = plash.ok("import-docker", "--quiet", f"oci:{layout.path}:t", env=env)
        tar = plash.ok("import-tar", str(tarball), env=env)
        ids = [*_chain(plash, docker, env), tar]
        made.append((ids, _images(plash, ids, env)))
    assert mark.read_text().count("tried") >= 2  # the unpackers of the second store did without zlib-ng
    assert made[0] == made[1]
    ids, trees = made[0]
    assert len(ids) == 4 and ids[-1] == "4"  # the config's layer, the two of the image, the tarball
    merged = {row[0]: row for tree in trees[:-1] for row in tree}
    assert merged["usr/lib/big.so"][4] == hashlib.sha256(_member_data("usr/lib/big.so")).hexdigest()
    assert merged["etc/hostname"][4] == hashlib.sha256(b"top\n").hexdigest()


def _member_data(name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(BASE)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()
