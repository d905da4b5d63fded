"""Image import speed: plash against podman, skopeo + umoci and tar, side by side in one run.

    python bench/fetch.py [-n 3] [--rootfs debian.tar]

A Debian root file system (made with mmdebstrap unless --rootfs gives a
tarball) is split into a 4-layer OCI image, pushed by skopeo to Debian's
docker-registry on 127.0.0.1, and also published as rootfs.tar.xz on an
LXC-style image server on 127.0.0.1. Then, each from scratch, N times:

    plash import-docker  vs  podman pull  vs  skopeo copy + umoci unpack
    plash import-lxc     vs  tar -xJf of the same rootfs.tar.xz

Medians and ratios go to stdout. Needs docker-registry and skopeo; umoci and
podman rows are skipped when those are not installed.
"""

from __future__ import annotations

import argparse
import io
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from oci_images import Layout  # noqa: E402
from servers import Registry, Server, add_lxc_image  # noqa: E402

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
SPLIT = ("usr/share/", "usr/lib/", "usr/")  # members under these go to their own layers, in order


def debian_tar(path: str | None, work: str) -> bytes:
    if path:
        return Path(path).read_bytes()
    out = os.path.join(work, "debian.tar")
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "bookworm", out], check=True)
    return Path(out).read_bytes()


def split_layers(rootfs: bytes) -> list[bytes]:
    """Split a rootfs tarball into layers by path prefix (dirs go where their members are)."""
    bufs = [io.BytesIO() for _ in range(len(SPLIT) + 1)]
    tars = [tarfile.open(fileobj=b, mode="w") for b in bufs]
    with tarfile.open(fileobj=io.BytesIO(rootfs)) as src:
        for m in src:
            name = m.name.lstrip("./")
            i = next((k for k, p in enumerate(SPLIT) if name.startswith(p)), len(SPLIT))
            if m.islnk():  # a hard link goes to the layer of its target
                target = m.linkname.lstrip("./")
                i = next((k for k, p in enumerate(SPLIT) if target.startswith(p)), len(SPLIT))
            tars[i].addfile(m, src.extractfile(m) if m.isreg() else None)
    for t in tars:
        t.close()
    return [b.getvalue() for b in bufs]


def timed(cmd: list[str], env: dict[str, str] | None = None, before=None) -> float:  # type: ignore[no-untyped-def]
    if before:
        before()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--rootfs", help="a Debian rootfs tarball (default: made with mmdebstrap)")
    ap.add_argument("--plash", default=os.path.join(os.path.dirname(sys.executable), "plash"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="plash-bench-fetch-")
    reg = server = None
    try:
        rootfs = debian_tar(args.rootfs, work)
        layout = Layout(Path(work) / "layout")
        layout.image([(layer, "gzip") for layer in split_layers(rootfs)], tag="debian")
        layout.write()
        reg = Registry(work)
        reg.push(str(layout.path), "debian", "bench/debian:1")
        ref = f"{reg.host}/bench/debian:1"
        xz = lzma.compress(rootfs, preset=6)
        Path(work, "rootfs.tar.xz").write_bytes(xz)
        server = Server()
        add_lxc_image(server, "debian", "bench", ARCH, xz)
        store = os.path.join(work, "store")
        env = dict(os.environ, PLASH_DATA=store, PLASH_LXC_URL=server.url)

        def fresh(*paths: str):  # type: ignore[no-untyped-def]
            def clear() -> None:
                if os.path.exists(store):
                    subprocess.run([args.plash, "purge", "--yes"], env=env, capture_output=True)
                for p in paths:
                    subprocess.run(["rm", "-rf", p])
                    os.makedirs(p, exist_ok=True)
            return clear

        rows: dict[str, list[float]] = {}
        cases: list[tuple[str, list[str], object, list[str] | None]] = [
            ("plash import-docker", [args.plash, "import-docker", "--quiet", ref], fresh(), None),
            ("plash import-lxc", [args.plash, "import-lxc", "--quiet", "debian:bench"], fresh(), None),
            ("tar -xJf", ["tar", "-xJf", f"{work}/rootfs.tar.xz", "-C", f"{work}/tarx"], fresh(f"{work}/tarx"), None),
        ]
        if shutil.which("umoci"):
            umoci_steps = [["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{work}/sk:1"],
                           ["umoci", "unpack", "--rootless", "--image", f"{work}/sk:1", f"{work}/bundle"]]
            def clear_umoci() -> None:
                subprocess.run(["rm", "-rf", f"{work}/sk", f"{work}/bundle"])

            cases.append(("skopeo copy + umoci unpack", [], clear_umoci, umoci_steps))
        if shutil.which("podman"):
            cases.append(("podman pull", ["podman", "pull", "-q", "--tls-verify=false", ref],
                          lambda: subprocess.run(["podman", "rmi", "-af"], capture_output=True), None))
        for _ in range(args.n):
            for name, cmd, before, steps in cases:
                if steps:
                    before()  # type: ignore[operator]
                    rows.setdefault(name, []).append(sum(timed(s) for s in steps))
                else:
                    rows.setdefault(name, []).append(timed(cmd, env, before))
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"image: {len(rootfs) / 1e6:.0f} MB Debian rootfs, 4 gzip layers; rootfs.tar.xz {len(xz) / 1e6:.0f} MB; n={args.n}")
        for k, v in med.items():
            print(f"{k:<30} {v:8.2f} s")
        base = med.get("podman pull") or med.get("skopeo copy + umoci unpack")
        if base:
            which = "podman pull" if "podman pull" in med else "skopeo copy + umoci unpack"
            print(f"plash import-docker / {which} = {med['plash import-docker'] / base:.2f}x (target <= 0.7x vs podman)")
        print(f"plash import-lxc / tar -xJf = {med['plash import-lxc'] / med['tar -xJf']:.2f}x (target <= 1.2x)")
        return 0
    finally:
        if reg:
            reg.close()
        if server:
            server.close()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
