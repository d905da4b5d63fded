"""Where a pushed image goes: a registry, an OCI image layout dir (oci:DIR[:TAG]) or a docker-archive file.

Each target makes (or finds) the blob of every layer, then writes the
config and manifest. A registry and a layout keep what they have: a blob
already there is neither packed nor sent again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import httpx
import trio

from plash.engine.fetch import oci
from plash.engine.layers import Download
from plash.engine.push import upload
from plash.engine.push.blobs import Packed, pack_layer, remember, remembered
from plash.engine.push.image import CONFIG_TYPE, MANIFEST_TYPE, REF_NAME, digest_of
from plash.engine.scheduler import limit
from plash.errors import PlashError
from plash.store.packing import REG, header

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.store.layout import Store


class Target:
    """The common part: packing a layer with the push's settings, remembering what it gave."""

    compression = "gzip"

    def __init__(self, store: Store, compression: str, clamp: int, emit: Emit) -> None:
        self.store, self.clamp, self.emit = store, clamp, emit
        self.compression = self.compression if self.compression == "none" else compression
        self.made: dict[int, Packed] = {}  # remembered once the push has succeeded: a failed one changes no store

    def known(self, image: int) -> Packed | None:
        return remembered(self.store, image, self.compression, self.clamp)

    async def pack(self, image: int, dest_dir: str, label: str) -> Packed:
        packed = await pack_layer(self.store, image, self.compression, self.clamp, dest_dir, self.emit, label)
        known = self.known(image)
        if known is not None:
            packed.pushed = known.pushed
        self.made[image] = packed
        return packed

    def remember(self) -> None:
        """Keep what the layers gave, next to them (see blobs.remembered)."""
        for image, packed in self.made.items():
            remember(self.store, image, self.compression, self.clamp, packed)

    async def open(self) -> None:
        """Check the target before any layer is packed (a registry that is not there fails at once)."""

    async def layer(self, image: int, label: str) -> Packed:
        raise NotImplementedError

    async def finish(self, config: bytes, manifest: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Remove what the push made only for itself (temp dirs)."""


class Layout(Target):
    """oci:DIR[:TAG]: an OCI image layout dir, made if missing; an image of the same tag is replaced."""

    def __init__(self, store: Store, spec: str, compression: str, clamp: int, emit: Emit) -> None:
        super().__init__(store, compression, clamp, emit)
        self.spec = spec
        self.path, _, tag = spec.partition(":") if not os.path.isdir(spec) else (spec, "", "")
        self.tag = tag or "latest"
        self.blobs = os.path.join(self.path, "blobs", "sha256")
        try:
            os.makedirs(self.blobs, exist_ok=True)
        except OSError as e:
            raise PlashError(f"oci:{spec}: cannot make the layout dir: {e.strerror}") from None

    async def layer(self, image: int, label: str) -> Packed:
        known = self.known(image)
        if known is not None:
            with contextlib.suppress(OSError):
                if os.stat(os.path.join(self.blobs, known.hex)).st_size == known.size:
                    return known
        return await self.pack(image, self.blobs, label)

    def _write_blob(self, data: bytes) -> str:
        digest = digest_of(data)
        _write_file(os.path.join(self.blobs, digest.removeprefix("sha256:")), data)
        return digest

    async def finish(self, config: bytes, manifest: bytes) -> None:
        await trio.to_thread.run_sync(self._finish, config, manifest)

    def _finish(self, config: bytes, manifest: bytes) -> None:
        self._write_blob(config)
        digest = self._write_blob(manifest)
        _write_file(os.path.join(self.path, "oci-layout"), b'{"imageLayoutVersion":"1.0.0"}')
        index_path = os.path.join(self.path, "index.json")
        try:
            with open(index_path, "rb") as f:
                index = json.loads(f.read(oci.MANIFEST_LIMIT + 1))
            entries = [m for m in index.get("manifests", [])
                       if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) != self.tag]
        except FileNotFoundError:
            index, entries = {}, []
        except (OSError, ValueError, AttributeError) as e:
            raise PlashError(f"oci:{self.spec}: index.json is not an OCI index ({e})") from None
        entries.append({"mediaType": MANIFEST_TYPE, "digest": digest, "size": len(manifest),
                        "annotations": {REF_NAME: self.tag}})
        index = {**index, "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": entries}
        _write_file(index_path, json.dumps(index, sort_keys=True, separators=(",", ":")).encode())


class Archive(Target):
    """docker-archive:FILE: `docker save`'s format (manifest.json, the config, plain layer tarballs)."""

    compression = "none"

    def __init__(self, store: Store, path: str, clamp: int, emit: Emit) -> None:
        super().__init__(store, "none", clamp, emit)
        self.dest = os.path.abspath(path)
        if os.path.isdir(self.dest):
            raise PlashError(f"docker-archive:{path}: is a directory")
        self.tmp = store.mkdtemp("push")
        self.layers: list[Packed] = []

    async def layer(self, image: int, label: str) -> Packed:
        return await self.pack(image, self.tmp, label)

    async def finish(self, config: bytes, manifest: bytes) -> None:
        await trio.to_thread.run_sync(self._write, config, manifest)

    def _write(self, config: bytes, manifest: bytes) -> None:
        doc = json.loads(manifest)
        config_name = digest_of(config).removeprefix("sha256:") + ".json"
        names = [f"{d['digest'].removeprefix('sha256:')}.tar" for d in doc["layers"]]
        listing = json.dumps([{"Config": config_name, "RepoTags": [], "Layers": names}],
                             separators=(",", ":")).encode()
        tmp = f"{self.dest}.{os.getpid()}.plash-part"
        try:
            with open(tmp, "xb") as out:
                _member(out, config_name, config)
                for d, name in zip(doc["layers"], names, strict=True):
                    hexd = d["digest"].removeprefix("sha256:")
                    path = os.path.join(self.tmp, hexd)
                    out.write(header(name.encode(), REG, 0o644, size=d["size"]))
                    with open(path, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                    out.write(b"\0" * (-d["size"] % 512))
                _member(out, "manifest.json", listing)
                out.write(b"\0" * 1024)
            os.replace(tmp, self.dest)
        except OSError as e:
            raise PlashError(f"docker-archive:{self.dest}: cannot write it: {e.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class Registry(Target):
    """A registry reference: blobs the registry has are skipped, mounted when another repository has them."""

    def __init__(self, store: Store, c: httpx.AsyncClient, ref: oci.Ref, credentials: tuple[str, str] | None,
                 compression: str, clamp: int, emit: Emit) -> None:
        super().__init__(store, compression, clamp, emit)
        if ref.digest:
            raise PlashError(f"{ref}: cannot push to a digest; name a tag")
        self.ref, self.c = ref, c
        self.reg = oci.Registry(c, ref, credentials, actions="pull,push")
        self.tmp: str | None = None

    async def open(self) -> None:
        await upload.request(self.c, "GET", self.reg.base.rsplit("/v2/", 1)[0] + "/v2/", (200,),
                             what="reaching the registry:")

    async def layer(self, image: int, label: str) -> Packed:
        here = (self.ref.registry, self.ref.repository)
        known = self.known(image)
        if known is not None:
            if await upload.has_blob(self.c, self.reg.base, known.digest):
                return known
            for registry, repository in known.pushed:
                if registry == self.ref.registry and repository != self.ref.repository:
                    started = await upload.mount(self.c, self.reg.base, known.digest, repository)
                    if started is None:
                        self._pushed(image, known, here)
                        return known
                    break  # not mounted: the upload it started is left to expire; packed and sent below
        if self.tmp is None:
            self.tmp = self.store.mkdtemp("push")
        packed = await self.pack(image, self.tmp, label)
        try:
            if not await upload.has_blob(self.c, self.reg.base, packed.digest):
                assert packed.path is not None
                async with limit("download"):  # uploads share the run's transfer slots with downloads
                    progress = Download(self.emit, label, packed.size, "upload")
                    await upload.upload_blob(self.c, self.reg.base, packed.path, packed.digest, packed.size,
                                             progress)
                    progress.done()
            self._pushed(image, packed, here)
        finally:
            if packed.path:
                os.unlink(packed.path)
        return packed

    def _pushed(self, image: int, packed: Packed, where: tuple[str, str]) -> None:
        if where not in packed.pushed:
            packed.pushed.append(where)
            self.made[image] = packed

    async def finish(self, config: bytes, manifest: bytes) -> None:
        await upload.put_bytes_blob(self.c, self.reg.base, config, digest_of(config))
        await upload.put_manifest(self.c, self.reg.base, self.ref.tag or "latest", manifest, MANIFEST_TYPE)

    def close(self) -> None:
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _member(out: object, name: str, data: bytes) -> None:
    w = out.write  # type: ignore[attr-defined]
    w(header(name.encode(), REG, 0o644, size=len(data)))
    w(data)
    w(b"\0" * (-len(data) % 512))


def _write_file(path: str, data: bytes) -> None:
    """path with data, atomically (a reader never sees half of it)."""
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    with open(tmp, "xb") as f:  # O_EXCL: never through a symlink someone put there
        f.write(data)
    os.replace(tmp, path)


__all__ = ["CONFIG_TYPE", "Archive", "Layout", "Registry", "Target"]
