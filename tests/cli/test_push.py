"""plash push: images out as OCI images, read back by plash, podman and skopeo.

The image under test has what layer formats get wrong: a whiteout, an
opaque dir, a hard link, a setuid file, a symlink, and (where the user
has ids to give) a file owned by 1000:1000. Registries are Debian's
docker-registry on 127.0.0.1, seen through a proxy that counts requests.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Plash, make_plash, need
from servers import QuietHandler, Registry

TREE = r'''
import hashlib, os, stat, sys
for d, dirs, files in os.walk("."):
    dirs.sort()
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        st = os.lstat(p)
        what = ""
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                what = hashlib.sha256(f.read()).hexdigest()[:16]
        elif stat.S_ISLNK(st.st_mode):
            what = "-> " + os.readlink(p)
        links = "-" if stat.S_ISDIR(st.st_mode) else st.st_nlink
        print(p, oct(st.st_mode), f"{st.st_uid}:{st.st_gid}", links, what)
'''

LAYER_A = ("mkdir -p /data/keep /data/opq; echo old > /data/opq/old; echo gone > /data/gone; "
           "echo s > /data/suid; chmod 4755 /data/suid; ln -s ../keep /data/opq/up")
LAYER_B = ("rm /data/gone; rm -rf /data/opq; mkdir /data/opq; echo new > /data/opq/new; "
           "echo h > /data/h1; ln /data/h1 /data/h2")
OWNED = "echo own > /data/own; chown 1000:1000 /data/own"


def made(plash: Plash, image: str, base: str = "--from") -> str:
    """The test image: two layers over busybox, the second undoing parts of the first."""
    steps = [base, image, "--run", LAYER_A, "--layer", "--run", LAYER_B]
    if plash.user != "nosub":  # one id only: nothing can be owned by 1000
        steps += ["--layer", "--run", OWNED]
    return plash.ok("build", *steps, "--entrypoint", "/bin/cat")


def tree(plash: Plash, image: str) -> list[str]:
    script = plash.work / "tree.py"
    if not script.exists():
        script.write_text(TREE)
        script.chmod(0o644)
    return plash.ok("with-mount", image, "python3", str(script)).splitlines()


def fresh(plash: Plash) -> Plash:
    """Another store of the same user (another machine)."""
    return make_plash(plash.user, plash.work.parent)


def test_push_to_a_layout_and_back_keeps_the_file_tree(plash: Plash, image: str) -> None:
    top = made(plash, image)
    out = plash.work / "layout"
    digest = plash.ok("push", "--quiet", top, f"oci:{out}:v1")
    assert digest.startswith("sha256:") and len(digest) == 71
    other = fresh(plash)
    back = other.ok("import-docker", "--quiet", f"oci:{out}:v1")
    want, got = tree(plash, top), tree(other, back)
    assert got == want
    lines = {line.split()[0]: line for line in got}
    assert "./data/gone" not in lines and "./data/opq/old" not in lines and "./data/opq/new" in lines
    assert lines["./data/h1"].split()[3] == "2" and lines["./data/suid"].split()[1] == "0o104755"
    if plash.user != "nosub":
        assert lines["./data/own"].split()[2] == "1000:1000"
    # the entrypoint went into the config, and ran from the image imported back
    assert other.ok("run", back, "cat", "/data/opq/new") == "new"
    # a layer of the pushed image really says what it hides, in the OCI way
    # skopeo reads the layout and checks every digest on the way
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{out}:v1", f"dir:{plash.work / 'copied'}"], check=True)
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_bytes())
    with tarfile.open(out / "blobs" / "sha256" / manifest["layers"][2]["digest"][7:]) as t:
        names = t.getnames()
    assert "data/.wh.gone" in names and "data/opq/.wh..wh..opq" in names and "data/h2" in names


def test_the_same_build_on_two_machines_pushes_the_same_digests(plash: Plash, busybox_tgz: Path) -> None:
    here, there = busybox_tgz, plash.work.parent / f"elsewhere-{plash.user}" / busybox_tgz.name
    there.parent.mkdir()
    there.parent.chmod(0o755)
    shutil.copy(here, there)
    there.chmod(0o644)
    image = made(plash, str(here), "--from-tarball")
    first = plash.ok("push", "--quiet", image, f"oci:{plash.work / 'a'}")
    again = plash.ok("push", "--quiet", image, f"oci:{plash.work / 'b'}")
    other = fresh(plash)  # another machine, another store, the tarball in another place
    copy = other.ok("push", "--quiet", made(other, str(there), "--from-tarball"), f"oci:{other.work / 'c'}")
    shutil.rmtree(there.parent)
    assert first == again == copy
    blobs = {p.name for p in (plash.work / "a" / "blobs" / "sha256").iterdir()}
    assert blobs == {p.name for p in (other.work / "c" / "blobs" / "sha256").iterdir()}
    # --created names another date: another config, so another manifest; the layers stay
    dated = plash.ok("push", "--quiet", "--created", "2026-01-02", image, f"oci:{plash.work / 'd'}")
    assert dated != first
    config = _config(plash.work / "d")
    assert config["created"] == "2026-01-02T00:00:00Z"
    assert [h["created_by"] for h in config["history"]][1:3] == [LAYER_A, LAYER_B]
    assert config["config"]["Entrypoint"] == ["/bin/cat"]


def _config(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_bytes())
    return json.loads((blobs / manifest["config"]["digest"][7:]).read_bytes())


def test_docker_archive_and_zstd(root_plash: Plash, busybox_tgz: Path) -> None:
    p = root_plash
    top = made(p, p.import_tar(busybox_tgz))
    archive = p.work / "image.tar"
    p.ok("push", "--quiet", top, f"docker-archive:{archive}")
    info = json.loads(subprocess.run(["skopeo", "inspect", f"docker-archive:{archive}"], check=True,
                                     capture_output=True, text=True).stdout)
    assert len(info["Layers"]) == 4
    zst = p.work / "zst"
    p.ok("push", "--quiet", "--compression", "zstd", top, f"oci:{zst}")
    for ref in (f"docker-archive:{archive}", f"oci:{zst}"):
        other = fresh(p)
        assert tree(other, other.ok("import-docker", "--quiet", ref)) == tree(p, top)


class Counting:
    """A proxy in front of a registry that counts requests by method (blob uploads are what matters)."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, str]] = []
        counting = self

        class Handler(QuietHandler):
            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                counting.requests.append((self.command, self.path))
                conn = http.client.HTTPConnection(upstream, timeout=60)
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():  # every one: a client may send Accept several times
                    if k.lower() not in ("connection", "content-length"):
                        conn.putheader(k, v)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                r = conn.getresponse()
                data = r.read()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        if k.lower() == "location":
                            v = v.replace(upstream, f"127.0.0.1:{counting.port}")
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uploads(self) -> int:
        """Blob uploads started (a mount is not one)."""
        return sum(1 for m, p in self.requests if m == "POST" and "mount=" not in p)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry(tmp_path: Path) -> Counting:
    need(shutil.which("docker-registry") is not None, "docker-registry is not installed")
    reg = Registry(str(tmp_path))
    proxy = Counting(reg.host)
    yield proxy
    proxy.close()
    reg.close()


def test_push_to_a_registry(plash: Plash, image: str, registry: Counting) -> None:
    top = made(plash, image)
    ref = f"{registry.host}/team/app:1"
    digest = plash.ok("push", "--quiet", top, ref)
    posts = [r for r in registry.requests if r[0] in ("POST", "PUT")]
    assert registry.uploads() == (5 if plash.user != "nosub" else 4), "\n".join(map(str, posts))  # busybox, A, B (and OWNED), the config
    info = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], check=True,
                                     capture_output=True, text=True).stdout)
    assert info["Digest"] == digest
    # again, and to another tag: nothing is packed or sent again
    before = len(registry.requests)
    assert plash.ok("push", "--quiet", top, f"{registry.host}/team/app:2") == digest
    sent = registry.requests[before:]
    assert not [r for r in sent if r[0] in ("PATCH", "POST")], sent
    # to another repository of the same registry: the layers mounted, not uploaded (the config is)
    before, at = registry.uploads(), len(registry.requests)
    plash.ok("push", "--quiet", top, f"{registry.host}/other/app:1")
    assert registry.uploads() == before + 1, registry.requests
    mounts = [p for m, p in registry.requests[at:] if m == "POST" and "mount=" in p and "from=team%2Fapp" in p]
    assert len(mounts) == (4 if plash.user != "nosub" else 3), registry.requests[at:]
    other = fresh(plash)
    assert tree(other, other.ok("import-docker", "--quiet", ref)) == tree(plash, top)


def test_podman_runs_a_pushed_image(root_plash: Plash, busybox_tgz: Path, registry: Counting,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    need(shutil.which("podman") is not None and shutil.which("runc") is not None,
         "podman and runc are not installed (apt-get install podman runc)")
    p = root_plash
    top = made(p, p.import_tar(busybox_tgz))
    ref = f"{registry.host}/team/app:1"
    p.ok("push", "--quiet", top, ref)
    conf = tmp_path / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")  # no rlimits to raise: this may run in a container
    base = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))  # podman wants a runroot under 50 characters
    for d in ("root", "run", "tmp"):
        (base / d).mkdir(parents=True)
    cmd = ["podman", "--root", str(base / "root"), "--runroot", str(base / "run"), "--tmpdir", str(base / "tmp"),
           "--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs",
           "run", "--runtime", "runc", "--network", "none", "--rm", "--tls-verify=false"]
    check = ("test ! -e /data/gone && test ! -e /data/opq/old && cat /data/opq/new /data/own && "
             "stat -c '%u:%g %h %a' /data/own /data/h1 /data/suid")
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "TMPDIR": str(base / "tmp")}
    try:
        r = subprocess.run([*cmd, "--entrypoint", "/bin/sh", ref, "-c", check], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n") == ["new", "own", "1000:1000 1 644", "0:0 2 644", "0:0 1 4755", ""]
        # the entrypoint is the image's: cat, given a file
        r = subprocess.run([*cmd, ref, "/data/h2"], capture_output=True, text=True, env=env, timeout=300)
        assert (r.returncode, r.stdout) == (0, "h\n"), r.stderr
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(base)], check=False)


def test_bad_pushes_are_one_line_and_change_nothing(root_plash: Plash, busybox_tgz: Path, registry: Counting) -> None:
    p = root_plash
    top = made(p, p.import_tar(busybox_tgz))
    before = p.snapshot()
    for args, words in [
        (["nothere", f"oci:{p.work / 'x'}"], "no image or name: nothere"),
        (["999", f"oci:{p.work / 'x'}"], "no image: 999"),
        ([top, "127.0.0.1:1/x/y:1"], "plash error: cannot reach 127.0.0.1:1: connection refused"),
        ([top, f"{registry.host}/x/y@sha256:{'0' * 64}"], "cannot push to a digest"),
        (["--compression", "xz", top, f"oci:{p.work / 'x'}"], "xz"),
        (["--created", "yesterday", top, f"oci:{p.work / 'x'}"], "--created"),
    ]:
        r = p("push", "--quiet", *args)
        errors = [line for line in r.stderr.splitlines() if not line.startswith("usage: ")]
        assert r.returncode == 1 and words in r.stderr and len(errors) == 1, (args, r.stderr)
        assert r.stdout == ""
    assert p.snapshot() == before


@pytest.mark.parametrize(("status", "words"), [(401, "HTTP 401"), (500, "HTTP 500"), (507, "disk quota exceeded")])
def test_a_registry_that_refuses_fails_the_push_and_keeps_the_store(root_plash: Plash, busybox_tgz: Path,
                                                                    status: int, words: str) -> None:
    p = root_plash
    top = made(p, p.import_tar(busybox_tgz))
    before = p.snapshot()

    class Refusing(QuietHandler):
        def do_GET(self) -> None:  # /v2/: a registry
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_HEAD(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = json.dumps({"errors": [{"code": "DENIED", "message": "disk quota exceeded"}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = p("push", "--quiet", top, f"127.0.0.1:{server.server_address[1]}/full/app:1")
    finally:
        server.shutdown()
        server.server_close()
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert words in r.stderr and "/full/app/blobs/uploads/" in r.stderr
    assert p.snapshot() == before
    assert not os.listdir(p.store / "tmp")


def test_a_big_layer_goes_in_chunks_and_streams(root_plash: Plash, busybox_tgz: Path, registry: Counting) -> None:
    p = root_plash
    base = p.import_tar(busybox_tgz)
    # 40 MB that gzip cannot shrink: over the one-PUT size, so PATCH chunks
    top = p.ok("build", "--from", base, "--run", "head -c 40000000 /dev/urandom > /big")
    ref = f"{registry.host}/big/app:1"
    p.ok("push", "--quiet", top, ref)
    assert any(m == "PATCH" for m, _ in registry.requests)
    other = fresh(p)
    back = other.ok("import-docker", "--quiet", ref)
    want = p.ok("run", top, "sha256sum", "/big")
    assert other.ok("run", back, "sha256sum", "/big") == want
