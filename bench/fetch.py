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
from oci_images import Layout
from servers import Registry, Server, add_lxc_image

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
    tars = [tarfile.open(fileobj=b, mode="w") for b in bufs]  # noqa: SIM115 (closed below, each)
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


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
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
        # Every run writes into a directory of its own and nothing is deleted until
        # the end: on ext4 without a journal, creating files in the 30 s after a
        # mass deletion makes the inode allocator skip the recently deleted inodes
        # one by one, which would slow whichever tool runs after a clean-up.
        rows: dict[str, list[float]] = {}
        for i in range(args.n):
            out = os.path.join(work, f"run{i}")
            os.makedirs(out)
            env = dict(os.environ, PLASH_DATA=f"{out}/store-docker", PLASH_LXC_URL=server.url)
            env_lxc = dict(env, PLASH_DATA=f"{out}/store-lxc")
            os.makedirs(f"{out}/tarx")
            cases: list[tuple[str, list[list[str]], dict[str, str]]] = [
                ("plash import-docker", [[args.plash, "import-docker", "--quiet", ref]], env),
                ("plash import-lxc", [[args.plash, "import-lxc", "--quiet", "debian:bench"]], env_lxc),
                ("tar -xJf", [["tar", "-xJf", f"{work}/rootfs.tar.xz", "-C", f"{out}/tarx"]], env),
            ]
            if shutil.which("umoci"):
                cases.append(("skopeo copy + umoci unpack", [
                    ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}/sk:1"],
                    ["umoci", "unpack", "--rootless", "--image", f"{out}/sk:1", f"{out}/bundle"]], env))
            if shutil.which("podman"):
                cases.append(("podman pull", [["podman", "--root", f"{out}/podman", "--runroot", f"{out}/podman-run",
                                               "pull", "-q", "--tls-verify=false", ref]], env))
            for name, steps, case_env in cases:
                subprocess.run(["sync"])
                rows.setdefault(name, []).append(sum(timed(step, case_env) for step in steps))
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
        for d in Path(work).glob("run*/podman"):
            subprocess.run(["podman", "--root", str(d), "--runroot", f"{d}-run", "rmi", "-af"], capture_output=True)
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    sys.exit(main())
