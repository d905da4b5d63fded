"""Another local user must not reach into a store: no setuid file run from it, no lock taken in it."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import USERS, Plash, make_plash


def with_setuid_id(busybox_tgz: Path, dest: Path) -> Path:
    """The busybox root file system plus usr/bin/suid-id: the host's `id`, setuid, owned by 0."""
    with tarfile.open(busybox_tgz) as src, tarfile.open(dest, "w") as out:
        for m in src.getmembers():
            out.addfile(m, src.extractfile(m) if m.isfile() else None)
        data = Path("/usr/bin/id").read_bytes()
        info = tarfile.TarInfo("usr/bin/suid-id")
        info.size, info.mode, info.uid, info.gid = len(data), 0o4755, 0, 0
        out.addfile(info, io.BytesIO(data))
    dest.chmod(0o644)
    return dest


def as_neighbour(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", USERS["nosub"], "--", *argv], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("owner", ["root", "sub"])
def test_a_neighbour_cannot_reach_into_a_store(owner: str, users_base: Path, busybox_tgz: Path) -> None:
    p: Plash = make_plash(owner, users_base)
    p.work.chmod(0o755)  # the store's parent is open to all, as a home or /var/tmp is
    image = p.import_tar(with_setuid_id(busybox_tgz, p.work / "suid.tar"))
    assert p.ok("run", image, "stat", "-c", "%a", "/usr/bin/suid-id") == "4755"
    assert (p.store.stat().st_mode & 0o777) == 0o700
    suid = Path(p.ok("nodepath", image)) / "root/usr/bin/suid-id"
    r = as_neighbour(str(suid), "-u")
    assert r.returncode != 0 and "Permission denied" in r.stderr, f"the neighbour ran it: {r.stdout}"
    for probe in (["cat", str(p.store / "lock")], ["ls", str(p.store / "layer")],
                  ["flock", "-n", str(p.store / "lock"), "true"]):
        r = as_neighbour(*probe)
        assert r.returncode != 0, f"{probe}: the neighbour got in"
    # a store left open (by an older plash, or a umask) is closed on first use, and said so
    p.store.chmod(0o755)
    r = p("run", image, "true")
    assert r.returncode == 0
    assert r.stderr == f"plash: made the store private (mode 700, it was 755): {p.store}\n"
    assert (p.store.stat().st_mode & 0o777) == 0o700
    assert p("run", image, "true").stderr == ""
    subprocess.run(["rm", "-rf", str(p.work)])


def test_export_tar_cannot_be_turned_onto_another_file(root_plash: Plash, busybox_tgz: Path, tmp_path: Path) -> None:
    """A neighbour plants symlinks where root's export would put its temp file (names from the next pids)."""
    import pwd

    victim = tmp_path / "precious"
    victim.write_text("precious\n")
    tmp_path.chmod(0o755)
    image = root_plash.import_tar(busybox_tgz)
    root_plash.work.chmod(0o755)
    theirs = root_plash.work / "theirs"  # a dir of the neighbour's, where root exports
    theirs.mkdir()
    pw = pwd.getpwnam(USERS["nosub"])
    os.chown(theirs, pw.pw_uid, pw.pw_gid)
    dest = theirs / "out.tar"
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    # one process plants them all (each ln would use up a pid itself)
    plant = (f"import os\nfor pid in range({last + 1}, {last + 400}):\n"
             f"    os.symlink({str(victim)!r}, f'{dest}.plash-{{pid}}.part')\n")
    assert as_neighbour("/usr/bin/python3", "-c", plant).returncode == 0
    r = root_plash("export-tar", image, str(dest))
    assert r.returncode == 0, r.stderr
    assert victim.read_text() == "precious\n"
    with tarfile.open(dest) as t:
        assert "./bin/busybox" in t.getnames()
    assert sorted(p.name for p in theirs.iterdir() if not p.is_symlink()) == ["out.tar"]


def test_copy_refuses_a_planted_symlink_or_someone_elses_dir(root_plash: Plash, busybox_tgz: Path) -> None:
    image = root_plash.import_tar(busybox_tgz)
    root_plash.work.chmod(0o755)
    theirs = root_plash.work / "theirs"
    theirs.mkdir()
    pw = __import__("pwd").getpwnam(USERS["nosub"])
    os.chown(theirs, pw.pw_uid, pw.pw_gid)
    (root_plash.work / "link").symlink_to(theirs)
    for dest, why in ((root_plash.work / "link", "it exists already and is not a directory"),
                      (theirs, "it belongs to another user")):
        r = root_plash("copy", image, str(dest))
        assert (r.returncode, r.stderr) == (1, f"plash error: cannot copy to {dest}: {why}\n")
    assert list(theirs.iterdir()) == []
