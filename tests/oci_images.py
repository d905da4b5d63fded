"""Build real OCI image layouts (blobs, manifests, index) for tests, to push with skopeo."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import zstandard


def layer_tar(members: list[tuple[str, str, str]]) -> bytes:
    """A layer tarball from (name, kind, data) with kind file, dir, symlink, hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                raw = data.encode()
                info.size, info.mode = len(raw), 0o644
                tar.addfile(info, io.BytesIO(raw))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, data
                tar.addfile(info)
    return buf.getvalue()


class Layout:
    """An OCI image layout directory under construction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.manifests: list[dict] = []

    def blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (self.path / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    def image(self, layers: list[tuple[bytes, str]], env: list[str] | None = None, cmd: list[str] | None = None,
              workdir: str = "", arch: str = "amd64", tag: str | None = None) -> dict:
        """Add an image; layers are (uncompressed tar, "gzip" | "gzip1" | "zstd" | "plain")."""
        descs, diff_ids = [], []
        for tar, comp in layers:
            diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
            if comp.startswith("gzip"):  # "gzip1" for the fastest level
                level = int(comp[4:] or 9)
                data, media = gzip.compress(tar, level, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"
            elif comp == "zstd":
                data, media = zstandard.ZstdCompressor().compress(tar), "application/vnd.oci.image.layer.v1.tar+zstd"
            else:
                data, media = tar, "application/vnd.oci.image.layer.v1.tar"
            descs.append({"mediaType": media, "digest": self.blob(data), "size": len(data)})
        config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
                  "history": [{"created_by": f"layer {i + 1}"} for i in range(len(layers))],  # as real images have
                  "config": {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                             "Cmd": cmd or ["/bin/sh"], "WorkingDir": workdir}}
        raw_config = json.dumps(config).encode()
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": self.blob(raw_config), "size": len(raw_config)},
                    "layers": descs}
        raw = json.dumps(manifest).encode()
        desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": self.blob(raw), "size": len(raw),
                "platform": {"os": "linux", "architecture": arch}}
        if tag:
            desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.manifests.append(desc)
        return desc

    def index_of(self, manifests: list[dict], tag: str) -> None:
        """Add a manifest list (an OCI index blob) of these manifests under tag."""
        inner = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        raw = json.dumps(inner).encode()
        self.manifests.append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": self.blob(raw),
                               "size": len(raw), "annotations": {"org.opencontainers.image.ref.name": tag}})

    def write(self) -> None:
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [m for m in self.manifests if "annotations" in m]}
        (self.path / "index.json").write_text(json.dumps(index))
        os.chmod(self.path, 0o755)


class Podman:
    """podman with storage of its own under base: never the machine's, and two test suites never share one.

    Only image commands (pull, load, tag, save) are used: they need no OCI runtime.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        for d in ("root", "run", "tmp"):
            (base / d).mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str) -> str:
        import subprocess

        b = self.base
        cmd = ["podman", "--root", str(b / "root"), "--runroot", str(b / "run"), "--tmpdir", str(b / "tmp"),
               "--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs", *args]
        env = {**os.environ, "TMPDIR": str(b / "tmp")}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr}")
        return r.stdout.strip()

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.base, ignore_errors=True)
