"""import-docker and from-docker against Debian's docker-registry on 127.0.0.1, images pushed by skopeo."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import rootfs
from conftest import Plash, need
from oci_images import Layout, layer_tar
from servers import QuietHandler, Registry, Server

from plash.engine.fetch.auth import parse_challenge
from plash.engine.fetch.http import FetchError
from plash.engine.fetch.oci import choose_manifest, is_insecure_ok, parse_ref


def busybox_layer() -> bytes:
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "")
    return buf.getvalue()


@pytest.fixture(scope="module")
def registry():
    need(shutil.which("docker-registry") is not None and shutil.which("skopeo") is not None,
         "docker-registry and skopeo are not installed")
    work = tempfile.mkdtemp(prefix="plash-registry-")
    reg = Registry(work)
    layout = Layout(Path(work) / "layout")
    base = busybox_layer()
    extra = layer_tar([("opt/", "dir", ""), ("opt/d/", "dir", ""), ("opt/d/a", "file", "a"), ("opt/d/b", "file", "b"),
                       ("etc/gone", "file", "soon gone")])
    change = layer_tar([("etc/.wh.gone", "file", ""), ("etc/two", "file", "two\n"), ("etc/two-link", "hardlink", "etc/two"),
                        ("opt/d/.wh..wh..opq", "file", ""), ("opt/d/c", "file", "c")])
    top = layer_tar([("etc/three", "file", "three\n")])
    layout.image([(base, "gzip"), (extra, "gzip"), (change, "zstd"), (top, "plain")], env=["PATH=/bin", "FOO=bar"],
                 cmd=["cat", "/etc/three"], workdir="/opt", tag="multi")
    layout.image([(base, "gzip"), (layer_tar([("etc/other", "file", "other\n")]), "gzip")], tag="sibling")
    amd = layout.image([(base, "gzip"), (layer_tar([("etc/arch", "file", "amd64\n")]), "gzip")], arch="amd64")
    arm = layout.image([(base, "gzip"), (layer_tar([("etc/arch", "file", "arm64\n")]), "gzip")], arch="arm64")
    layout.index_of([amd, arm], "list")
    layout.write()
    reg.push(str(layout.path), "multi", "test/multi:1")
    reg.push(str(layout.path), "sibling", "test/multi:sibling")
    reg.push(str(layout.path), "list", "test/list:1", all_platforms=True)
    corrupt = layer_tar([("etc/unique", "file", "corrupt me " * 1000)])
    layout.image([(base, "gzip"), (corrupt, "gzip")], tag="corrupt")
    layout.write()
    reg.push(str(layout.path), "corrupt", "test/corrupt:1")
    req = urllib.request.Request(f"http://{reg.host}/v2/test/corrupt/manifests/1",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req) as r:  # skopeo may have recompressed the layer: ask the registry
        reg.corrupt_blob = json.load(r)["layers"][-1]["digest"]  # type: ignore[attr-defined]
    reg.layout = layout.path  # type: ignore[attr-defined]
    archive = Path(work) / "multi.tar"
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout.path}:sibling", f"docker-archive:{archive}:test/sibling:1"],
                   check=True, capture_output=True)
    archive.chmod(0o644)
    reg.archive = archive  # type: ignore[attr-defined]
    os.chmod(work, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(layout.path)], check=True)
    yield reg
    reg.close()
    shutil.rmtree(work, ignore_errors=True)


def test_import_docker_layers_whiteouts_config(plash: Plash, registry: Registry) -> None:
    r = plash("import-docker", f"{registry.host}/test/multi:1")
    assert r.returncode == 0, r.stderr
    image = r.stdout.strip()
    sh = "cat /etc/two /etc/three; ls /opt/d; test -e /etc/gone || echo gone; echo $FOO"
    assert plash.ok("run", image, "sh", "-c", sh) == "two\nthree\nc\ngone\nbar"
    assert plash.ok("run", image) == "three"  # Entrypoint + Cmd is the default command
    assert plash.ok("run", image, "pwd", cwd="/usr/share") == "/opt"  # WorkingDir when cwd is not inside
    inode = plash.ok("run", image, "sh", "-c", "stat -c %i /etc/two /etc/two-link").split()
    assert inode[0] == inode[1]
    chain = []
    i = image
    while i != "0":
        chain.append(i)
        i = plash.ok("parent", i)
    assert len(chain) == 5  # four layers and the config layer
    # a sibling image shares the base layer: same image, downloaded once
    sibling = plash.ok("import-docker", f"{registry.host}/test/multi:sibling")
    j = sibling
    while plash.ok("parent", j) != "0":
        j = plash.ok("parent", j)
    assert j == chain[-1]
    again = plash("build", "--from-docker", f"{registry.host}/test/multi:1", "--run", "touch /x")
    assert again.returncode == 0, again.stderr
    assert plash.ok("run", again.stdout.strip(), "cat", "/etc/three") == "three"


def test_manifest_list_picks_this_platform(root_plash: Plash, registry: Registry) -> None:
    need(os.uname().machine in ("x86_64", "aarch64"), "platform test knows amd64 and arm64 only")
    image = root_plash.ok("import-docker", f"{registry.host}/test/list:1")
    want = "amd64" if os.uname().machine == "x86_64" else "arm64"
    assert root_plash.ok("run", image, "cat", "/etc/arch") == want


def test_registry_errors_leave_the_store_unchanged(root_plash: Plash, registry: Registry) -> None:
    plash = root_plash
    plash.ok("init")
    before = plash.snapshot()
    r = plash("import-docker", f"{registry.host}/test/multi:nope")
    assert r.returncode == 1
    assert "not found" in r.stderr.splitlines()[-1]
    # corrupt a (plain, unshared) layer blob in the registry's storage: the digest check must catch it
    hexd = registry.corrupt_blob[7:]  # type: ignore[attr-defined]
    storage = registry.proc.args[2].rsplit("/", 1)[0]
    blob = Path(f"{storage}/data/docker/registry/v2/blobs/sha256/{hexd[:2]}/{hexd}/data")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    r = plash("import-docker", f"{registry.host}/test/corrupt:1")
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    # the flipped byte breaks either the digest or first the compression (gzip's own check)
    assert len(errors) == 1 and ("sha256 mismatch" in errors[0] or "not a valid tarball" in errors[0]), r.stderr
    assert plash.snapshot() == before


def test_401_without_token_service(root_plash: Plash) -> None:
    server = Server()
    server.state.faults["*"] = "401"
    try:
        r = root_plash("import-docker", f"{server.url.removeprefix('http://')}/x/y:1")
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1].endswith("HTTP 401 and no token service to ask (not an anonymous registry)")
    finally:
        server.close()


def test_reference_parsing() -> None:
    r = parse_ref("alpine")
    assert (r.registry, r.repository, r.reference) == ("registry-1.docker.io", "library/alpine", "latest")
    r = parse_ref("localhost:5000/a/b:1.2")
    assert (r.registry, r.repository, r.reference) == ("localhost:5000", "a/b", "1.2")
    d = "sha256:" + "a" * 64
    r = parse_ref(f"quay.io/x/y@{d}")
    assert (r.registry, r.repository, r.reference) == ("quay.io", "x/y", d)
    for bad in ("", "UPPER", "a@sha256:12", "a b"):
        with pytest.raises(FetchError, match="invalid"):
            parse_ref(bad)
    assert is_insecure_ok("127.0.0.1:5000")
    assert is_insecure_ok("localhost:5000")
    assert not is_insecure_ok("registry.example:5000")


def test_bearer_challenge_and_platforms() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull"')
    assert c == {"realm": "https://auth.example/token", "service": "registry.example", "scope": "repository:a:pull"}
    assert parse_challenge('Basic realm="x"') == {}
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64  # chosen entries must have a valid digest
    index = {"manifests": [{"digest": a, "platform": {"os": "linux", "architecture": "arm64"}},
                           {"digest": b, "platform": {"os": "linux", "architecture": "amd64"}}]}
    assert choose_manifest(index, "amd64")["digest"] == b
    with pytest.raises(FetchError, match="no linux/s390x"):
        choose_manifest(index, "s390x")


def test_local_oci_layout_and_docker_archive(plash: Plash, registry: Registry) -> None:
    sh = "cat /etc/two /etc/three; ls /opt/d; test -e /etc/gone || echo gone; echo $FOO"
    want = "two\nthree\nc\ngone\nbar"
    from_layout = plash.ok("import-docker", f"oci:{registry.layout}:multi")  # type: ignore[attr-defined]
    assert plash.ok("run", from_layout, "sh", "-c", sh) == want
    # docker archives cannot hold zstd layers: this one is the gzip-only sibling image
    from_archive = plash.ok("import-docker", f"docker-archive:{registry.archive}")  # type: ignore[attr-defined]
    assert plash.ok("run", from_archive, "cat", "/etc/other", "/etc/os-release").startswith("other\nNAME=busybox")
    r = plash("import-docker", f"oci:{registry.layout}:nope")  # type: ignore[attr-defined]
    assert r.returncode == 1
    assert "no image tagged nope" in r.stderr
    r = plash("import-docker", "docker-archive:/nonexistent.tar")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == "plash error: docker-archive:/nonexistent.tar: cannot open: No such file or directory"


def test_anonymous_bearer_token_flow(root_plash: Plash, registry: Registry) -> None:
    front = Server(proxy=registry.host)  # answers 401 with a Bearer challenge until given the token
    try:
        host = front.url.removeprefix("http://")
        image = root_plash.ok("import-docker", f"{host}/test/multi:sibling")
        assert root_plash.ok("run", image, "cat", "/etc/other") == "other"
        assert front.state.hits["/token"] >= 1
    finally:
        front.close()


def test_malicious_layer_writes_nothing_outside(root_plash: Plash, registry: Registry, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    layout = Layout(tmp_path / "evil")
    layout.image([(busybox_layer(), "gzip"), (layer_tar([("../../../../../../" + str(outside).lstrip("/"), "file", "x")]), "gzip")],
                 tag="evil")
    layout.write()
    registry.push(str(layout.path), "evil", "test/evil:1")
    before = (root_plash.ok("init"), root_plash.snapshot())
    r = root_plash("import-docker", f"{registry.host}/test/evil:1")
    assert r.returncode == 1
    assert "unsafe path" in r.stderr.splitlines()[-1]
    assert not outside.exists()
    assert root_plash.snapshot() == before[1]


def test_concurrent_imports_download_each_blob_once(plash: Plash, registry: Registry) -> None:
    front = Server(proxy=registry.host)  # counts the requests that reach the registry
    front.state.delay = 0.5  # every blob takes a while, so that the imports overlap
    try:
        host = front.url.removeprefix("http://")
        runs = plash.many([["import-docker", f"{host}/test/multi:1"]] * 4 + [["import-docker", f"{host}/test/multi:sibling"]] * 4)
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        assert len({r.stdout for r in runs[:4]}) == 1
        assert len({r.stdout for r in runs[4:]}) == 1
        blobs = {path: n for path, n in front.state.hits.items() if "/blobs/" in path}
        assert len(blobs) == 7  # two configs, the shared base layer, three more of multi, one of sibling
        assert set(blobs.values()) == {1}, blobs
        first, sibling = runs[0].stdout.strip(), runs[4].stdout.strip()
        assert plash.ok("run", first, "cat", "/etc/three") == "three"
        assert plash.ok("run", sibling, "cat", "/etc/other") == "other"
        assert chain(plash, first)[0] == chain(plash, sibling)[0]  # the base layer is shared on disk
        assert plash("fsck").returncode == 0
    finally:
        front.close()


def chain(plash: Plash, image: str) -> list[str]:
    """The image's ids from the root layer up."""
    ids = [image]
    while (parent := plash.ok("parent", ids[0])) != "0":
        ids.insert(0, parent)
    return ids


class ExpiringTokens:
    """A registry in front of a real one whose Bearer tokens expire in the middle of an import.

    /token hands out the token of the current generation; /v2/ wants it. The
    first request for a path in `expire_on` that comes with a valid token ends
    that generation (every token handed out so far expires) and is answered
    401 with a challenge, as a registry answers a request whose token has
    just expired; the requests that follow with the old token get 401 too.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.generation = 1
        self.expire_on: set[str] = set()
        self.expired_at: str | None = None
        self.hits: dict[str, int] = {}
        self.unauthorized: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        state = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with state.lock:
                    state.hits[path] = state.hits.get(path, 0) + 1
                    valid = self.headers.get("Authorization") == f"Bearer token-{state.generation}"
                    if path == "/token":
                        self.answer(200, json.dumps({"token": f"token-{state.generation}"}).encode())
                        return
                    if valid and path in state.expire_on and state.expired_at is None:
                        state.generation += 1
                        state.expired_at = path
                        valid = False
                    if not valid:
                        state.unauthorized.append(path)
                if not valid:
                    challenge = f'Bearer realm="http://{state.host}/token",service="test",scope="repository:test/multi:pull"'
                    self.answer(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
                    return
                req = urllib.request.Request(f"http://{state.upstream}{self.path}",
                                             headers={"Accept": self.headers.get("Accept", "*/*")})
                try:
                    with urllib.request.urlopen(req) as r:
                        body, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
                self.answer(status, body, {"Content-Type": ctype})

            def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.mark.parametrize("blob", ["config", "layers"])
def test_a_token_that_expires_on_a_blob_is_renewed(root_plash: Plash, registry: Registry, blob: str) -> None:
    req = urllib.request.Request(f"http://{registry.host}/v2/test/multi/manifests/1",
                                 headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(req) as r:
        manifest = json.load(r)
    blobs = [manifest["config"]] if blob == "config" else manifest["layers"]
    front = ExpiringTokens(registry.host)
    # the config is read before any layer; the layers download side by side, so
    # several of them may meet the expired token at once
    front.expire_on = {f"/v2/test/multi/blobs/{b['digest']}" for b in blobs}
    try:
        image = root_plash.ok("import-docker", f"{front.host}/test/multi:1")
        assert root_plash.ok("run", image, "cat", "/etc/three") == "three"
        assert front.expired_at in front.expire_on  # the token did expire on such a blob, after the manifest worked
        assert front.hits["/token"] == 2  # one token, then one more for every request that met its expiry
        assert front.hits[front.expired_at] == 2  # the blob that met the expiry was asked for again, once
    finally:
        front.close()
