"""import-lxc, from-lxc and import-url against a real HTTP server on 127.0.0.1 serving real rootfs tarballs."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import time

import pytest
import rootfs
from conftest import PLASH, Plash
from procs import own_pid
from servers import Server, add_lxc_image

from plash.engine.fetch.lxc import pick_from_streams

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


@pytest.fixture(scope="module")
def rootfs_xz() -> bytes:
    buf = io.BytesIO()
    rootfs.busybox_tar(buf, "xz")
    return buf.getvalue()


@pytest.fixture
def server(rootfs_xz: bytes):
    s = Server()
    add_lxc_image(s, "busybox", "1", ARCH, rootfs_xz)
    yield s
    s.close()


def lxc(plash: Plash, server: Server, *args: str, **kw) -> subprocess.CompletedProcess:
    return plash(*args, env={"PLASH_LXC_URL": server.url, "PLASH_HTTP_TIMEOUT": "2"}, **kw)


def test_import_lxc_verifies_and_runs(plash: Plash, server: Server) -> None:
    r = lxc(plash, server, "import-lxc", "busybox:1")
    assert r.returncode == 0, r.stderr
    image = r.stdout.strip()
    assert image.isdigit()
    assert "verified" in r.stderr  # plain progress lines without a terminal
    assert plash.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")
    r = lxc(plash, server, "import-lxc", "busybox:1", "--dry")
    assert r.stdout.strip() == f"{server.url}/images/busybox/1/{ARCH}/default/20261101_00:00/rootfs.tar.xz"


def test_from_lxc_is_cached(plash: Plash, server: Server) -> None:
    first = lxc(plash, server, "build", "--from", "busybox:1", "--run", "touch /x")
    assert first.returncode == 0, first.stderr
    path = f"/images/busybox/1/{ARCH}/default/20261101_00:00/rootfs.tar.xz"
    assert server.state.hits[path] == 1
    again = lxc(plash, server, "build", "--from-lxc", "busybox:1", "--run", "touch /x")
    assert (again.stdout, again.stderr) == (first.stdout, "")
    assert server.state.hits[path] == 1


@pytest.mark.parametrize("case", ["sha", "size", "unknown", "hang", "truncate-no-range", "not-a-tarball"])
def test_bad_downloads_leave_the_store_unchanged(plash: Plash, server: Server, rootfs_xz: bytes, case: str) -> None:
    name = "busybox:1"
    if case == "sha":
        add_lxc_image(server, "bad", "1", ARCH, rootfs_xz, listed_sha="0" * 64)
        name = "bad:1"
    elif case == "size":
        add_lxc_image(server, "bad", "1", ARCH, rootfs_xz, listed_size=len(rootfs_xz) + 10)
        name = "bad:1"
    elif case == "unknown":
        name = "nosuch:1"
    elif case == "not-a-tarball":
        add_lxc_image(server, "bad", "1", ARCH, b"this is not a tarball" * 100)
        name = "bad:1"
    else:
        path = add_lxc_image(server, "bad", "1", ARCH, rootfs_xz)
        server.state.faults[path] = case
        name = "bad:1"
    plash.ok("init")
    before = plash.snapshot()
    r = lxc(plash, server, "import-lxc", name, timeout=60)
    assert r.returncode == 1
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert len(errors) == 1, r.stderr
    expected = {"sha": "sha256 mismatch", "size": "size mismatch", "unknown": "not in the image catalogue",
                "hang": "timed out", "truncate-no-range": "cannot resume", "not-a-tarball": "not a valid tarball"}[case]
    assert expected in errors[0]
    assert plash.snapshot() == before


@pytest.mark.parametrize("fault", ["500-once", "truncate"])
def test_transient_faults_are_retried(plash: Plash, server: Server, rootfs_xz: bytes, fault: str) -> None:
    path = add_lxc_image(server, "flaky", "1", ARCH, rootfs_xz)
    server.state.faults[path] = fault
    r = lxc(plash, server, "import-lxc", "flaky:1")
    assert r.returncode == 0, r.stderr
    assert server.state.hits[path] == 2
    assert plash.ok("run", r.stdout.strip(), "true") == ""


def test_plain_index_needs_insecure_or_a_digest(plash: Plash, server: Server, rootfs_xz: bytes) -> None:
    del server.state.files["/streams/v1/images.json"]
    r = lxc(plash, server, "import-lxc", "busybox:1")
    assert r.returncode == 1
    assert "--insecure" in r.stderr
    r = lxc(plash, server, "import-lxc", "busybox:1", "--insecure")
    assert r.returncode == 0, r.stderr
    sha = hashlib.sha256(rootfs_xz).hexdigest()
    assert lxc(plash, server, "import-lxc", "busybox:1", "--sha256", sha).returncode == 0
    r = lxc(plash, server, "import-lxc", "busybox:1", "--sha256", "1" * 64)
    assert r.returncode == 1
    assert "sha256 mismatch" in r.stderr


def test_import_url(plash: Plash, server: Server, rootfs_xz: bytes) -> None:
    server.state.files["/plain.tar.xz"] = rootfs_xz
    url = f"{server.url}/plain.tar.xz"
    image = plash.ok("import-url", url)
    assert plash.ok("run", image, "true") == ""
    sha = hashlib.sha256(rootfs_xz).hexdigest()
    assert plash.ok("import-url", url, "--sha256", sha).isdigit()
    r = plash("import-url", url, "--sha256", "2" * 64)
    assert r.returncode == 1
    assert "sha256 mismatch" in r.stderr
    r = plash("import-url", f"{server.url}/missing")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == f"plash error: {server.url}/missing: HTTP 404 Not Found"
    built = plash.ok("build", "--from-url", url, sha, "--run", "touch /u")
    assert plash.ok("run", built, "ls", "/u") == "/u"


def test_ctrl_c_during_download(plash: Plash, server: Server, rootfs_xz: bytes) -> None:
    path = add_lxc_image(server, "slow", "1", ARCH, rootfs_xz)
    server.state.faults[path] = "hang"
    plash.ok("init")
    before = plash.snapshot()
    proc = subprocess.Popen(plash.command([PLASH, "import-lxc", "slow:1"], {"PLASH_LXC_URL": server.url}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while server.state.hits.get(path, 0) == 0:
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(own_pid(proc), signal.SIGINT)  # plash itself (for test users, runuser sits between)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "plash error: interrupted", err
    assert out == ""
    assert plash.snapshot() == before


def on_terminal(plash: Plash, server: Server, *args: str) -> tuple[str, str]:
    """Run plash with stderr on a pseudo-terminal and stdout on a pipe; return (stdout, terminal text)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(plash.command([PLASH, *args], {"PLASH_LXC_URL": server.url, "TERM": "xterm"}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, cwd=plash.work)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, shown
    return out.decode(), shown.decode(errors="replace")


def test_progress_on_a_terminal_and_results_on_stdout(root_plash: Plash, server: Server) -> None:
    out, text = on_terminal(root_plash, server, "import-lxc", "busybox:1")
    assert out.strip().isdigit()  # stdout: the id alone
    assert "\x1b[" in text  # rich drew on the terminal
    assert "rootfs.tar.xz" in text  # a bar for the download
    assert "━" in text
    out, text = on_terminal(root_plash, server, "build", "--from-lxc", "busybox:1", "--run", "echo step-line-$((6*7))")
    assert out.strip().isdigit()
    assert "step-line-42" in text  # the step's output, through the live display
    assert "layer 1/1" in text
    # and --quiet shows nothing at all
    r = lxc(root_plash, server, "import-lxc", "--quiet", "busybox:1")
    assert r.returncode == 0
    assert r.stderr == ""


def test_eight_processes_import_the_same_image_once(plash: Plash, server: Server) -> None:
    path = f"/images/busybox/1/{ARCH}/default/20261101_00:00/rootfs.tar.xz"
    server.state.faults[path] = "slow"  # the first download takes a second: the others start meanwhile
    runs = lxc_many(plash, server, [["import-lxc", "busybox:1"]] * 8)
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert len({r.stdout for r in runs}) == 1
    assert server.state.hits[path] == 1
    assert sum("waiting for another plash process" in r.stderr for r in runs) >= 1
    assert plash("fsck").returncode == 0
    # a later import is a fresh one: it downloads again and makes a new image
    assert lxc(plash, server, "import-lxc", "busybox:1").stdout != runs[0].stdout
    assert server.state.hits[path] == 2


def lxc_many(plash: Plash, server: Server, runs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    return plash.many(runs, env={"PLASH_LXC_URL": server.url, "PLASH_HTTP_TIMEOUT": "10"})


def test_catalogue_items_are_picked_by_ftype_whatever_their_key(root_plash: Plash, server: Server, rootfs_xz: bytes) -> None:
    # as images.linuxcontainers.org writes it: the newest version of a product may hold no
    # root.tar.xz (a VM build, or a squashfs keyed root.tar.xz), and the keys are the server's choice
    kinds = {"lxd.tar.xz": "lxd.tar.xz", "root.squashfs": "squashfs", "disk.qcow2": "disk-kvm.img",
             "delta-20261031_00:00.vcdiff": "squashfs.vcdiff"}
    add_lxc_image(server, "busybox", "1.35", ARCH, rootfs_xz, build="20261101_00:00", key="rootfs.tar.xz", others=kinds)
    add_lxc_image(server, "busybox", "1.35", ARCH, b"", build="20261102_00:00", others={**kinds, "root.tar.xz": "squashfs"})
    add_lxc_image(server, "busybox", "1.35", ARCH, b"", build="20261103_00:00", others={"lxd.tar.xz": "lxd.tar.xz"})
    r = lxc(root_plash, server, "import-lxc", "busybox:1.35", "--dry")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{server.url}/images/busybox/1.35/{ARCH}/default/20261101_00:00/rootfs.tar.xz"
    r = lxc(root_plash, server, "import-lxc", "busybox:1.35")
    assert r.returncode == 0, r.stderr
    assert root_plash.ok("run", r.stdout.strip(), "cat", "/etc/os-release").startswith("NAME=busybox")
    # sha256 and size are still checked on the item found by its ftype
    add_lxc_image(server, "bad", "1", ARCH, rootfs_xz, key="rootfs.tar.xz", listed_sha="0" * 64, others=kinds)
    before = root_plash.snapshot()
    r = lxc(root_plash, server, "import-lxc", "bad:1")
    assert r.returncode == 1
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("plash error:")]
    assert len(errors) == 1, r.stderr
    assert "sha256 mismatch" in errors[0], r.stderr
    assert root_plash.snapshot() == before


def test_catalogue_items_without_ftype_count_by_their_key(root_plash: Plash, server: Server, rootfs_xz: bytes) -> None:
    add_lxc_image(server, "old", "1", ARCH, rootfs_xz, ftype=None, others={"lxd.tar.xz": "lxd.tar.xz"})
    r = lxc(root_plash, server, "import-lxc", "old:1")
    assert r.returncode == 0, r.stderr
    assert root_plash.ok("run", r.stdout.strip(), "cat", "/etc/os-release").startswith("NAME=busybox")
    add_lxc_image(server, "other", "1", ARCH, rootfs_xz, key="rootfs.tar.xz", ftype=None)  # neither: not a rootfs
    r = lxc(root_plash, server, "import-lxc", "other:1")
    assert r.returncode == 1
    assert r.stdout == ""
    assert [line for line in r.stderr.splitlines() if line.startswith("plash error:")] == [
        f"plash error: other:1 ({ARCH}) is not in the image catalogue of {server.url}"], r.stderr


def test_pick_from_streams() -> None:
    item = {"ftype": "root.tar.xz", "path": "a/rootfs.tar.xz", "sha256": "AB" * 32, "size": 7}
    images = {"products": {"d:r:amd64:default": {"versions": {
        "2": {"items": {"rootfs.squashfs": {"ftype": "squashfs", "path": "b/x", "sha256": "c" * 64, "size": 1}}},
        "1": {"items": {"lxd.tar.xz": {"ftype": "lxd.tar.xz", "path": "a/lxd.tar.xz", "sha256": "d" * 64},
                        "whatever": item}}}}}}
    found = pick_from_streams("http://h", images, "d", "r", "amd64")
    assert found is not None
    assert (found.url, found.sha256, found.size) == ("http://h/a/rootfs.tar.xz", "ab" * 32, 7)
    assert pick_from_streams("http://h", images, "d", "r", "arm64") is None
    # no ftype: the key says what it is
    plain = {"products": {"d:r:amd64:default": {"versions": {"1": {"items": {"root.tar.xz": {
        "path": "p", "sha256": "e" * 64}}}}}}}
    found = pick_from_streams("http://h", plain, "d", "r", "amd64")
    assert found is not None
    assert (found.url, found.size) == ("http://h/p", None)
    # an item without a digest is no use
    del plain["products"]["d:r:amd64:default"]["versions"]["1"]["items"]["root.tar.xz"]["sha256"]
    assert pick_from_streams("http://h", plain, "d", "r", "amd64") is None


@pytest.mark.parametrize(("index", "images"), [
    ('{"index": []}', None),  # a list where an object belongs
    ('{"index": {"images": "x"}}', None),
    ('[' * 100000 + ']' * 100000, None),  # nested past the parser's recursion limit
    (None, '{"products": []}'),
    (None, '{"products": {"busybox:bad:%s:default": {"versions": "x"}}}'),
    (None, '{"products": {"busybox:bad:%s:default": {"versions": {"1": {"items": {"r": {"ftype": "root.tar.xz", '
           '"path": "p", "sha256": "ab", "size": "big"}}}}}}}'),
])
def test_a_malformed_catalogue_is_one_error_line(root_plash: Plash, server: Server, index: str | None,
                                                 images: str | None) -> None:
    if index is not None:
        server.state.files["/streams/v1/index.json"] = index.encode()
    if images is not None:
        server.state.files["/streams/v1/images.json"] = (images.replace("%s", ARCH)).encode()
    root_plash.ok("init")
    before = root_plash.snapshot()
    r = root_plash("import-lxc", "busybox:bad", env={"PLASH_LXC_URL": server.url})
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith("plash error: "), r.stderr
    assert "internal error" not in r.stderr, r.stderr
    assert len([x for x in lines if not x.startswith("hint:")]) == 1, r.stderr
    assert root_plash.snapshot() == before


def test_a_download_that_pauses_after_the_archive_ends(root_plash: Plash, rootfs_xz: bytes) -> None:
    """The unpacker is done at the end-of-archive blocks; the rest (here the compressed stream's tail,
    sent after a pause longer than the unpacker waits) is still downloaded and verified."""
    import hashlib
    import http.server
    import threading

    data = rootfs_xz

    class Tail(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:-12])  # all but the xz stream footer
            self.wfile.flush()
            done.wait(3)  # the hostile part: the tail comes late
            self.wfile.write(data[-12:])

        def log_message(self, *a: object) -> None:
            pass

    done = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tail)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/rootfs.tar.xz"
        image = root_plash.ok("import-url", url, "--sha256", hashlib.sha256(data).hexdigest(), timeout=60)
        assert root_plash.ok("run", image, "cat", "/etc/os-release").startswith("NAME=busybox")
        bad = root_plash("import-url", url, "--sha256", "0" * 64, timeout=60)
        assert bad.returncode == 1, bad.stderr
        assert "sha256 mismatch" in bad.stderr, bad.stderr
    finally:
        done.set()
        server.shutdown()
