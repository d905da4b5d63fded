"""HTTP servers on 127.0.0.1 for tests: an LXC-style image server with fault injection.

Real sockets and real HTTP (the standard library's server in a thread); the
data are real root file system tarballs the tests make. Paths:

    /streams/v1/index.json, /streams/v1/images.json   simplestreams catalogue
    /meta/1.0/index-system                            the plain index
    /images/<distro>/<release>/<arch>/default/<build>/rootfs.tar.xz

Faults are chosen per file: `faults[path] = "500-once" | "hang" | "truncate" | "truncate-no-range" | "slow" | "throttle"`,
or for every path: `faults["*"] = "401"` (401 without a Bearer challenge). `delay` seconds are
waited before every proxied blob, so that concurrent clients overlap.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Files:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.proxy: str | None = None  # host:port of a registry to front with a Bearer token flow
        self.hits: dict[str, int] = {}
        self.delay = 0.0
        self.lock = threading.Lock()


class QuietHandler(BaseHTTPRequestHandler):
    """The tests' request handler base: HTTP/1.1 (keep-alive, as real servers), no log lines on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


def make_handler(state: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            with state.lock:
                state.hits[path] = state.hits.get(path, 0) + 1
                hits = state.hits[path]
            if state.proxy and path == "/token":  # the anonymous token service of the Bearer flow
                body = b'{"token": "let-me-in"}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if state.proxy and path.startswith("/v2/"):
                if self.headers.get("Authorization") != "Bearer let-me-in":
                    self.send_response(401)
                    host = self.headers.get("Host")
                    self.send_header("WWW-Authenticate",
                                     f'Bearer realm="http://{host}/token",service="test",scope="repository:x:pull"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if "/blobs/" in path:
                    time.sleep(state.delay)
                self._proxy(path)
                return
            if state.faults.get("*") == "401":  # a registry that wants credentials, with no token service
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files.get(path)
            if body is None:
                self.send_error(404)
                return
            fault = state.faults.get(path, "")
            if fault == "500-once" and hits == 1:
                self.send_error(500)
                return
            if fault == "hang":
                time.sleep(30)
                return
            if fault == "slow":
                time.sleep(1)
            start = 0
            rng = self.headers.get("Range")
            if rng and fault != "truncate-no-range" and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
                if fault != "truncate-no-range":
                    self.send_header("Accept-Ranges", "bytes")
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if fault == "throttle":  # about 1.6 MB/s
                for i in range(0, len(part), 16384):
                    self.wfile.write(part[i:i + 16384])
                    time.sleep(0.01)
                return
            if fault.startswith("truncate") and hits == 1:
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

        def _proxy(self, path: str) -> None:
            import urllib.error
            import urllib.request

            req = urllib.request.Request(f"http://{state.proxy}{self.path}",
                                         headers={"Accept": self.headers.get("Accept", "*/*")})
            try:
                with urllib.request.urlopen(req) as r:
                    body, status, ctype = r.read(), r.status, r.headers.get("Content-Type", "")
            except urllib.error.HTTPError as e:
                body, status, ctype = e.read(), e.code, e.headers.get("Content-Type", "")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class Server:
    def __init__(self, proxy: str | None = None) -> None:
        self.state = Files()
        self.state.proxy = proxy
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def add_lxc_image(server: Server, distro: str, release: str, arch: str, rootfs: bytes, build: str = "20261101_00:00",
                  listed_sha: str | None = None, listed_size: int | None = None, key: str = "root.tar.xz",
                  ftype: str | None = "root.tar.xz", others: dict[str, str] | None = None) -> str:
    """Publish a rootfs in the simplestreams catalogue and the plain index; return its path.

    The rootfs item is keyed `key` with `ftype` (None: no ftype field); `others`
    adds items of other kinds to the same version (item key -> ftype), served as
    junk files, as real servers list lxd.tar.xz, root.squashfs and deltas beside it.
    """
    st = server.state
    path = f"images/{distro}/{release}/{arch}/default/{build}/"
    st.files["/streams/v1/index.json"] = json.dumps({"format": "index:1.0", "index": {"images": {
        "datatype": "image-downloads", "path": "streams/v1/images.json", "format": "products:1.0"}}}).encode()
    images = json.loads(st.files.get("/streams/v1/images.json", b'{"products": {}}'))
    product = images["products"].setdefault(f"{distro}:{release}:{arch}:default", {"versions": {}})
    items: dict[str, dict] = {}
    for other_key, other_ftype in (others or {}).items():
        junk = f"not a root file system but {other_ftype}\n".encode()
        st.files[f"/{path}{other_key}"] = junk
        items[other_key] = {"ftype": other_ftype, "path": f"{path}{other_key}", "sha256": hashlib.sha256(junk).hexdigest(),
                            "size": len(junk)}
    if rootfs:  # b"": a version without a root file system tarball (a VM image, say)
        st.files[f"/{path}rootfs.tar.xz"] = rootfs
        items[key] = {"path": f"{path}rootfs.tar.xz", "sha256": listed_sha or hashlib.sha256(rootfs).hexdigest(),
                      "size": listed_size if listed_size is not None else len(rootfs)}
        if ftype is not None:
            items[key]["ftype"] = ftype
    product["versions"][build] = {"items": items}
    st.files["/streams/v1/images.json"] = json.dumps(images).encode()
    if rootfs:
        index = st.files.get("/meta/1.0/index-system", b"").decode()
        index += f"{distro};{release};{arch};default;{build};/{path}\n"
        st.files["/meta/1.0/index-system"] = index.encode()
    return f"/{path}rootfs.tar.xz"


class Registry:
    """Debian's docker-registry on 127.0.0.1 with a fresh storage dir; with htpasswd ({user: password}), only for them."""

    def __init__(self, workdir: str, htpasswd: dict[str, str] | None = None) -> None:
        import shutil
        import socket
        import subprocess
        import urllib.error
        import urllib.request

        binary = shutil.which("docker-registry") or shutil.which("registry")
        if binary is None:
            raise FileNotFoundError("docker-registry")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = f"{workdir}/registry.yml"
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {workdir}/data\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
            if htpasswd:
                f.write(f"auth:\n  htpasswd:\n    realm: plash-tests\n    path: {workdir}/htpasswd\n")
        if htpasswd:
            with open(f"{workdir}/htpasswd", "w") as f:
                f.writelines(f"{user}:{bcrypt(password)}\n" for user, password in htpasswd.items())
        self.creds = next(iter(htpasswd.items())) if htpasswd else None
        self.proc = subprocess.Popen([binary, "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                break
            except OSError as e:
                if isinstance(e, urllib.error.HTTPError) and e.code == 401 and htpasswd:  # up, asking for credentials
                    break
                if time.time() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("docker-registry did not start") from e
                time.sleep(0.1)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(self, layout: str, tag: str, name: str, all_platforms: bool = False) -> None:
        import subprocess

        cmd = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if self.creds:
            cmd.append("--dest-creds={}:{}".format(*self.creds))
        if all_platforms:
            cmd.append("--all")
        cmd += [f"oci:{layout}:{tag}", f"docker://{self.host}/{name}"]
        subprocess.run(cmd, check=True, capture_output=True)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def bcrypt(password: str) -> str:
    """A bcrypt hash of password for an htpasswd file (docker-registry takes no other kind)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt leaves the standard library in 3.13
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
