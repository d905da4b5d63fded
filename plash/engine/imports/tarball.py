"""--from-tarball and import of a local tarball file: unpacked in the user namespace."""

from __future__ import annotations

from plash.engine.children import unpack_child
from plash.engine.events import note
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.engine.events import Emit
    from plash.engine.layers import Produce
    from plash.store.staging import Staging


def producer(path: str, emit: Emit) -> Produce:
    async def produce(staging: Staging) -> None:
        emit(note(f"importing {path}"))
        try:
            f = open(path, "rb")  # noqa: ASYNC230, SIM115 (one open of a local file; the unpacker reads it)
        except OSError as e:
            raise PlashError(f"cannot open {path}: {e.strerror}") from None
        with f:
            await unpack_child(staging.upper, f.fileno(), path)

    return produce
