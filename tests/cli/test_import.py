"""import-tar: compressions, stdin, bad files, and tarballs that try to escape the layer."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import rootfs
import zstandard
from conftest import PLASH, Plash


def _tar(members: list[tuple[str, str, str]]) -> bytes:
    """A tarball from (name, kind, data-or-linkname) triples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data.encode()))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
            elif kind == "chardev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize("compression", ["gz", "xz", "bz2", "zstd", "plain"])
def test_compressions(plash: Plash, shared_dir: Path, compression: str) -> None:
    path = shared_dir / f"rootfs-{plash.user}.{compression}"
    raw = io.BytesIO()
    rootfs.busybox_tar(raw, "" if compression in ("zstd", "plain") else compression)
    data = raw.getvalue()
    if compression == "zstd":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    path.chmod(0o644)
    image = plash.import_tar(path)
    assert plash.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")


def test_import_from_stdin(plash: Plash, busybox_tgz: Path) -> None:
    image = plash.ok("import-tar", input=busybox_tgz.read_bytes())
    assert image == b"1\n"
    image2 = plash.ok("import-tar", "-", input=busybox_tgz.read_bytes())
    assert image2 == b"2\n"


def test_special_files_and_modes(plash: Plash, shared_dir: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        rootfs_buf = io.BytesIO()
        rootfs.busybox_tar(rootfs_buf, "")
        rootfs_buf.seek(0)
        with tarfile.open(fileobj=rootfs_buf) as src:
            for m in src:
                tar.addfile(m, src.extractfile(m) if m.isreg() else None)
        for name, mode, kind in [("./ro", 0o555, tarfile.DIRTYPE), ("./ro/inner", 0o500, tarfile.DIRTYPE),
                                 ("./fifo", 0o644, tarfile.FIFOTYPE), ("./dev/null", 0o666, tarfile.CHRTYPE),
                                 ("./suid", 0o4755, tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            if name == "./suid":
                info.uid = 5
            tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        # a hard link inside the layer is fine
        link = tarfile.TarInfo("./etc/passwd-link")
        link.type, link.linkname = tarfile.LNKTYPE, "./etc/passwd"
        tar.addfile(link)
    path = shared_dir / f"special-{plash.user}.tar"
    path.write_bytes(buf.getvalue())
    path.chmod(0o644)
    image = plash.import_tar(path)
    layer = Path(plash.ok("nodepath", image)) / "root"
    assert oct(os.stat(layer / "ro").st_mode & 0o7777) == "0o555"
    assert oct(os.stat(layer / "ro" / "inner").st_mode & 0o7777) == "0o500"
    assert not (layer / "dev" / "null").exists()  # device nodes are skipped
    assert os.stat(layer / "etc" / "passwd-link").st_ino == os.stat(layer / "etc" / "passwd").st_ino
    mode = os.stat(layer / "suid").st_mode & 0o7777
    # setuid kept only where the owner could be kept
    assert mode == (0o755 if plash.user == "nosub" else 0o4755)
    out = plash.ok("run", image, "sh", "-c", "test -p /fifo && echo fifo")
    assert out == "fifo"
    plash.ok("rm", image)  # read-only dirs do not stop deletion
    assert os.listdir(plash.store / "tmp") == []


ESCAPES = {
    "dotdot": [("./etc/", "dir", ""), ("../escaped", "file", "x")],
    "dotdot-deep": [("./a/", "dir", ""), ("a/../../escaped", "file", "x")],
    "symlinked-parent": [("evil", "symlink", "{outside}"), ("evil/escaped", "file", "x")],
    "symlinked-parent-relative": [("evil", "symlink", "../../../../../../../../{outside}"), ("evil/escaped", "file", "x")],
    "hardlink-dotdot": [("link", "hardlink", "../../../../../../../../{outside}/target")],
    "hardlink-absolute": [("link", "hardlink", "{outside}/target")],
}


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_malicious_tarballs_write_nothing_outside(plash: Plash, shared_dir: Path, kind: str) -> None:
    outside = plash.work / "outside"
    plash.sh(["mkdir", str(outside)])
    plash.sh(["sh", "-c", f"echo original > {outside}/target"])
    members = [(n, k, d.replace("{outside}", str(outside).lstrip("/") if d.startswith("../") else str(outside)))
               for n, k, d in ESCAPES[kind]]
    path = shared_dir / f"evil-{kind}-{plash.user}.tar"
    path.write_bytes(_tar(members))
    path.chmod(0o644)
    plash.ok("init")
    before = plash.snapshot()
    r = plash("import-tar", str(path))
    assert r.returncode == 1
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("plash error:"), r.stderr
    assert sorted(os.listdir(outside)) == ["target"]
    assert (outside / "target").read_text() == "original\n"
    assert os.stat(outside / "target").st_nlink == 1
    assert not (plash.work.parent / "escaped").exists()
    assert not Path("/escaped").exists()
    assert plash.snapshot() == before


def test_absolute_member_names_stay_inside(plash: Plash, shared_dir: Path) -> None:
    target = plash.work / "abs-target"
    path = shared_dir / f"abs-{plash.user}.tar"
    path.write_bytes(_tar([(str(target), "file", "inside")]))
    path.chmod(0o644)
    image = plash.import_tar(path)
    assert not target.exists()
    layer = Path(plash.ok("nodepath", image)) / "root"
    assert (layer / str(target).lstrip("/")).read_text() == "inside"


@pytest.mark.parametrize("case", ["missing", "directory", "garbage", "empty", "truncated", "unreadable"])
def test_bad_files(plash: Plash, busybox_tgz: Path, shared_dir: Path, case: str) -> None:
    path = shared_dir / f"bad-{case}-{plash.user}"
    if case == "directory":
        path.mkdir()
    elif case == "garbage":
        path.write_bytes(os.urandom(5000))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(busybox_tgz.read_bytes()[:300_000])
    elif case == "unreadable":
        path.write_bytes(busybox_tgz.read_bytes())
        path.chmod(0o600)
    if path.exists() and case not in ("unreadable", "directory"):
        path.chmod(0o644)
    plash.ok("init")
    before = plash.snapshot()
    r = plash("import-tar", str(path))
    if case == "unreadable" and plash.user == "root":
        assert r.returncode == 0  # root may read it; nothing to test for root here
        return
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("plash error:"), r.stderr
    assert plash.snapshot() == before


def test_import_does_not_leave_a_mount_or_process(plash: Plash, busybox_tgz: Path) -> None:
    proc = subprocess.run(plash.command([PLASH, "import-tar", str(busybox_tgz)]), capture_output=True, text=True)
    assert proc.returncode == 0
    assert os.listdir(plash.store / "tmp") == []
