"""Map names: which words can name an entry of map/, and the names a store holds.

A map name is one path component of map/ and never leads outside it: it
has only letters, digits and _ . @ + -, does not start with . or -, and
fits in NAME_MAX. Imported on `plash run`'s path (an image argument may be
a name): os only.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plash.store.layout import Store

_MAP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@+-")


def valid_map_name(name: str) -> bool:
    """Whether name can be a map name: it then names one entry of map/ and nothing outside it."""
    return 0 < len(name) <= 255 and name[0] not in ".-" and set(name) <= _MAP_CHARS  # 255: NAME_MAX


def _being_replaced(name: str) -> bool:
    """Whether name is the temporary NAME.PID.RAND.new replace_link renames into place."""
    parts = name.rsplit(".", 3)
    return (len(parts) == 4 and parts[3] == "new" and parts[1].isdigit() and len(parts[2]) == 8
            and set(parts[2]) <= set("0123456789abcdef"))


def map_entries(store: Store) -> dict[str, int]:
    """Every map name that points to an image, with its id, sorted by name (a missing map/ has none)."""
    try:
        names = sorted(os.listdir(store.maps))
    except OSError:
        return {}
    out = {}
    for name in names:
        if valid_map_name(name) and not _being_replaced(name):
            found = store.follow(os.path.join(store.maps, name))
            if found is not None:
                out[name] = found
    return out
