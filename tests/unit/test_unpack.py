"""The unpacker on its own: many directories, read-only trees, replacing entries."""

from __future__ import annotations

import io
import resource
import subprocess
import sys
import tarfile
from pathlib import Path

from plash.store.unpack import unpack


def tar_of(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            body = (data or {}).get(m.name)
            if body is not None:
                m.size = len(body)
            tar.addfile(m, io.BytesIO(body) if body is not None else None)
    return buf.getvalue()


def info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.mode, i.linkname = kind, mode, link
    return i


def test_many_directories_with_few_file_descriptors(tmp_path: Path) -> None:
    members = []
    for a in range(40):
        members.append(info(f"d{a}/", tarfile.DIRTYPE, 0o755))
        for b in range(30):
            members.append(info(f"d{a}/e{b}/", tarfile.DIRTYPE, 0o755))
            members.append(info(f"d{a}/e{b}/f"))
    raw = tar_of(members)
    src = tmp_path / "many.tar"
    src.write_bytes(raw)
    dest = tmp_path / "out"
    dest.mkdir()
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))
from plash.store.unpack import unpack
print(unpack(open({str(src)!r}, 'rb'), {str(dest)!r}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == len(members)
    assert (dest / "d39" / "e29" / "f").exists()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)  # the limit was only lowered in the child


def test_replacing_entries(tmp_path: Path) -> None:
    members = [info("a/", tarfile.DIRTYPE, 0o755), info("a/x"), info("a", tarfile.SYMTYPE, 0o777, "target"),
               info("f"), info("f/", tarfile.DIRTYPE, 0o755)]
    raw = tar_of(members, {"a/x": b"x", "f": b"f"})
    dest = tmp_path / "out"
    dest.mkdir()
    unpack(io.BytesIO(raw), str(dest))
    assert (dest / "a").is_symlink() and (dest / "f").is_dir()
