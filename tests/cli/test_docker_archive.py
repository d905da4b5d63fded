"""import-docker docker-archive:FILE of multi-layer archives written by skopeo and podman, imported again and again."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import posixpath
import random
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import rootfs
import zstandard
from conftest import Plash, need
from oci_images import Layout, Podman, layer_tar

# three layers over busybox, each with a few MB that do not compress, so that layers are read side by side
_rand = random.Random(4)
CONTENT = {name: _rand.randbytes(3 << 20).hex()[: 5 << 20] for name in ("one", "two", "three")}
WANT = "".join(f"{hashlib.sha256(CONTENT[n].encode()).hexdigest()}  /opt/{n}\n" for n in ("one", "two", "three"))
CHECK = "sha256sum /opt/one /opt/two /opt/three; test -e /opt/gone || echo gone; cat /etc/layer; head -1 /etc/os-release"
CHECKED = WANT + "gone\nthree\nNAME=busybox"


def busybox_layer() -> bytes:
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "")
    return buf.getvalue()


def rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes]) -> None:
    """Copy a docker archive, passing each layer member's data through change(name, data)."""
    with tarfile.open(src) as tar:
        layers = set(json.load(tar.extractfile("manifest.json"))[0]["Layers"])  # type: ignore[arg-type]
        with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as out:
            for member in tar:
                if not member.isreg():
                    out.addfile(member)
                    continue
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if member.name in layers:
                    data = change(member.name, data)
                    member.size = len(data)
                out.addfile(member, io.BytesIO(data))
    dst.chmod(0o644)


def flip_in_file(data: bytes, needle: str) -> bytes:
    """A layer tarball with one byte of the file holding needle changed (a valid tarball still)."""
    at = data.index(needle.encode()) + 1000
    return data[:at] + (b"0" if data[at:at + 1] != b"0" else b"1") + data[at + 1:]


@pytest.fixture(scope="module")
def archives():
    need(shutil.which("skopeo") is not None, "skopeo is not installed")
    need(shutil.which("podman") is not None, "podman is not installed (apt-get install podman)")
    # podman pull names the image after the layout's path, so no "_" in it: mkdtemp's names may end with
    # one, which podman calls "an invalid reference format"
    work = Path("/tmp") / f"plash-archives-{secrets.token_hex(8)}"
    work.mkdir()
    work.chmod(0o755)
    podman = Podman(work / "podman")
    try:
        layout = Layout(work / "layout")
        layout.image([(busybox_layer(), "gzip1"),
                      (layer_tar([("opt/", "dir", ""), ("opt/one", "file", CONTENT["one"]), ("opt/gone", "file", "x"),
                                  ("etc/layer", "file", "one\n")]), "gzip1"),
                      (layer_tar([("opt/.wh.gone", "file", ""), ("opt/two", "file", CONTENT["two"]),
                                  ("etc/layer", "file", "two\n")]), "gzip1"),
                      (layer_tar([("opt/three", "file", CONTENT["three"]), ("etc/layer", "file", "three\n")]), "plain")],
                     tag="four")
        layout.write()
        found = {"skopeo": work / "skopeo.tar", "podman": work / "podman.tar"}
        subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout.path}:four", f"docker-archive:{found['skopeo']}:test/four:1"],
                       check=True, capture_output=True)
        image_id = podman("pull", "-q", f"oci:{layout.path}:four")
        podman("tag", image_id, "localhost/test/four:podman")
        podman("save", "-q", "--format", "docker-archive", "-o", str(found["podman"]), "localhost/test/four:podman")
        for path in found.values():
            path.chmod(0o644)
        yield found, work
    finally:
        podman.close()
        shutil.rmtree(work, ignore_errors=True)


def layers_of(archive: Path) -> list[bytes]:
    with tarfile.open(archive) as tar:
        names = json.load(tar.extractfile("manifest.json"))[0]["Layers"]  # type: ignore[arg-type]
        return [tar.extractfile(n).read()[:6] for n in names]  # type: ignore[union-attr]


@pytest.mark.parametrize("writer", ["skopeo", "podman"])
def test_multi_layer_archives_import_every_time(plash: Plash, archives, writer: str) -> None:
    found, _ = archives
    archive = found[writer]
    # what the tools really write: four uncompressed layer tarballs, whatever the source's compression
    magics = layers_of(archive)
    assert len(magics) == 4
    assert not any(m.startswith(b"\x1f\x8b") for m in magics)
    images = set()
    for i in range(5):
        store = {"PLASH_DATA": str(plash.work / f"store-{writer}-{i}")}  # a fresh store: every layer is read again
        r = plash("import-docker", f"docker-archive:{archive}", env=store)
        assert r.returncode == 0, f"import {i + 1} of 5: {r.stderr}"
        image = r.stdout.strip()
        assert plash.ok("run", image, "sh", "-c", CHECK, env=store) == CHECKED
        chain = [image]
        while chain[-1] != "0":
            chain.append(plash.ok("parent", chain[-1], env=store))
        assert len(chain) == 6  # four layers, the config layer and the root
        images.add(image)
        plash.sh(["rm", "-rf", store["PLASH_DATA"]])
    # and into one store: the second import finds every layer there
    first = plash.ok("import-docker", f"docker-archive:{archive}")
    assert plash.ok("import-docker", f"docker-archive:{archive}") == first


def test_compressed_layer_members_are_verified_against_diff_ids(plash: Plash, archives) -> None:
    # docker save from a containerd image store writes the registry's gzip blobs: plash must decompress
    # them and check the uncompressed bytes against the config's diff_ids
    found, work = archives
    gz = work / f"gzip-layers-{plash.user}.tar"
    zstd_too = {"calls": 0}

    def compress(name: str, data: bytes) -> bytes:  # gzip, zstd, gzip, zstd
        zstd_too["calls"] += 1
        return zstandard.ZstdCompressor().compress(data) if zstd_too["calls"] % 2 == 0 else gzip.compress(data, 1, mtime=0)

    rewrite(found["skopeo"], gz, compress)
    assert sorted(m[:2] for m in layers_of(gz)) == [b"\x1f\x8b", b"\x1f\x8b", b"\x28\xb5", b"\x28\xb5"]
    image = plash.ok("import-docker", f"docker-archive:{gz}")
    assert plash.ok("run", image, "sh", "-c", CHECK) == CHECKED
    bad = work / f"gzip-layers-changed-{plash.user}.tar"
    rewrite(found["skopeo"], bad, lambda name, data: gzip.compress(flip_in_file(data, CONTENT["two"][:64])
                                                                    if CONTENT["two"][:64].encode() in data else data, 1, mtime=0))
    fresh = dataclasses.replace(plash, store=plash.work / "store-bad")  # where no layer of the image is yet
    fresh.ok("init")
    before = fresh.snapshot()
    r = fresh("import-docker", f"docker-archive:{bad}")
    assert r.returncode == 1
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert len(errors) == 1 and "sha256 mismatch" in errors[0], r.stderr
    assert fresh.snapshot() == before


def test_changed_plain_layer_is_refused(root_plash: Plash, archives) -> None:
    found, work = archives
    bad = work / "plain-changed.tar"
    rewrite(found["podman"], bad, lambda name, data: flip_in_file(data, CONTENT["three"][:64])
            if CONTENT["three"][:64].encode() in data else data)
    root_plash.ok("init")
    before = root_plash.snapshot()
    r = root_plash("import-docker", f"docker-archive:{bad}")
    assert r.returncode == 1
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert len(errors) == 1 and "sha256 mismatch" in errors[0], r.stderr
    assert root_plash.snapshot() == before


def test_gzipped_archive(plash: Plash, archives) -> None:
    # `docker save | gzip > FILE`, which docker load accepts: members cannot be read side by side there
    found, work = archives
    path = work / f"archive-{plash.user}.tar.gz"
    path.write_bytes(gzip.compress(found["podman"].read_bytes(), 1))
    path.chmod(0o644)
    for i in range(2):
        store = {"PLASH_DATA": str(plash.work / f"store-gz-{i}")}
        image = plash.ok("import-docker", f"docker-archive:{path}", env=store)
        assert plash.ok("run", image, "sh", "-c", CHECK, env=store) == CHECKED


def test_bad_archives(root_plash: Plash, archives) -> None:
    found, work = archives
    cases = {}
    # a config whose diff_ids do not match its layers
    def drop_diff_id(src: Path, dst: Path) -> None:
        with tarfile.open(src) as tar, tarfile.open(dst, "w") as out:
            config = json.load(tar.extractfile("manifest.json"))[0]["Config"]  # type: ignore[arg-type]
            for member in tar:
                data = tar.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
                if member.name == config:
                    doc = json.loads(data)
                    doc["rootfs"]["diff_ids"] = doc["rootfs"]["diff_ids"][:-1]
                    data = json.dumps(doc).encode()
                    member.size = len(data)
                out.addfile(member, io.BytesIO(data) if member.isreg() else None)
        dst.chmod(0o644)

    cases["diff-ids"] = work / "fewer-diff-ids.tar"
    drop_diff_id(found["skopeo"], cases["diff-ids"])
    whole = found["skopeo"].read_bytes()
    for case, data in {"truncated": whole[:5_000_000], "no-manifest": whole[:-3000], "garbage": b"not a tarball\n" * 100,
                       "truncated-gz": gzip.compress(whole, 1)[:-100_000]}.items():
        cases[case] = work / f"{case}.tar"
        cases[case].write_bytes(data)
        cases[case].chmod(0o644)
    root_plash.ok("init")
    before = root_plash.snapshot()
    for case, path in cases.items():
        r = root_plash("import-docker", f"docker-archive:{path}")
        assert r.returncode == 1 and r.stdout == "", (case, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
        assert len(errors) == 1 and "internal error" not in errors[0], (case, r.stderr)
        assert all(line.startswith(("plash: ", "plash error: ", "hint: ")) for line in r.stderr.splitlines()), (case, r.stderr)
        assert root_plash.snapshot() == before, case


def test_layers_named_through_links(root_plash: Plash, archives) -> None:
    # old docker save archives name each layer <id>/layer.tar, a symlink (or hard link) where layers repeat
    found, work = archives
    path = work / "linked.tar"
    with tarfile.open(found["skopeo"]) as tar, tarfile.open(path, "w") as out:
        links = {posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname)): m.name
                 for m in tar if m.issym()}
        for member in tar:
            data = tar.extractfile(member).read() if member.isreg() else b""  # type: ignore[union-attr]
            if member.name == "manifest.json":
                doc = json.loads(data)
                doc[0]["Layers"] = [links[n] for n in doc[0]["Layers"]]
                data = json.dumps(doc).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data) if member.isreg() else None)
    path.chmod(0o644)
    assert all(n.endswith("/layer.tar") for n in json.loads(tarfile.open(path).extractfile("manifest.json").read())[0]["Layers"])  # type: ignore[union-attr]  # noqa: SIM115
    image = root_plash.ok("import-docker", f"docker-archive:{path}")
    assert root_plash.ok("run", image, "sh", "-c", CHECK) == CHECKED


def test_a_member_with_a_negative_size_is_refused(root_plash: Plash, tmp_path: Path) -> None:
    """A base-256 negative size points tarfile back to an earlier header: it would read them for ever."""

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data in (("manifest.json", b"[]"), ("a", b"y" * 10), ("evil", b"x" * 600)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    h = 2048  # the third header: its size sends the reader back to the second one
    raw[h + 124:h + 136] = tarfile.itn(-(h + 512 - 1024), 12, tarfile.GNU_FORMAT)
    raw[h + 148:h + 156] = b" " * 8
    raw[h + 148:h + 156] = b"%06o\0 " % sum(raw[h:h + 512])
    archive = tmp_path / "negative.tar"
    archive.write_bytes(bytes(raw))
    root_plash.ok("init")
    before = root_plash.snapshot()
    r = root_plash("import-docker", f"docker-archive:{archive}", timeout=60)
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert errors == [f"plash error: docker-archive:{archive}: corrupt tar header at byte 2048 ('evil': size -1536)"]
    assert root_plash.snapshot() == before


@pytest.mark.parametrize(("index", "message"), [
    ("[[[", "index.json is not JSON"),
    ('{"manifests": 5}', "index.json has no list of manifests"),
    ('{"manifests": [{"digest": "sha256:../../etc", "size": 3}]}', "a manifest entry has no valid sha256 digest"),
    ('{"manifests": [{"digest": "sha256:' + "a" * 64 + '", "size": 3}]}', "missing blob"),
])
def test_a_malformed_oci_layout_is_one_error_line(root_plash: Plash, tmp_path: Path, index: str, message: str) -> None:
    (tmp_path / "index.json").write_text(index)
    root_plash.ok("init")
    before = root_plash.snapshot()
    r = root_plash("import-docker", f"oci:{tmp_path}")
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert r.returncode == 1 and len(errors) == 1 and message in errors[0], r.stderr
    assert "internal error" not in r.stderr
    assert root_plash.snapshot() == before
