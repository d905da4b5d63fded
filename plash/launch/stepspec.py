"""The build step the engine asks a launcher child to run (`python -m plash.launch step FILE`).

A file, not argv: a layer's shell text may be megabytes. JSON, written and
read only through this class, so both sides agree on one typed contract.
"""

from __future__ import annotations

import json


class StepSpec:
    """Run shell in image of the store at store, changes kept in the staging dir, starting in cwd.

    binds: (host dir, path inside) pairs bound for this step only (its
    package caches and --cache-mount dirs), never part of the layer.
    """

    __slots__ = ("binds", "cwd", "image", "shell", "staging", "store")

    def __init__(self, store: str, image: int, shell: str, staging: str, cwd: str = "/",
                 binds: tuple[tuple[str, str], ...] = ()) -> None:
        self.store, self.image, self.shell, self.staging, self.cwd = store, image, shell, staging, cwd
        self.binds = binds

    def write(self, path: str) -> None:
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            json.dump({name: getattr(self, name) for name in self.__slots__}, f)

    @classmethod
    def read(cls, path: str) -> StepSpec:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: not a step spec")
        binds = tuple((str(src), str(dst)) for src, dst in data.get("binds") or ())
        return cls(str(data["store"]), int(data["image"]), str(data["shell"]), str(data["staging"]),
                   str(data.get("cwd") or "/"), binds)
