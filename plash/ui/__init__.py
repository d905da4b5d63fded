"""Everything shown on stderr: progress and error reports (rich lives only here).

This package's __init__ imports nothing: naming the renderer costs a cached
build nothing, and the renderers load only when the engine asks for one.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from plash.engine.events import Emit


def renderer_factory(quiet: bool = False, progress: str | None = None, prefix: bool = False) -> Callable[[], Emit]:
    """What the engine calls for its event sink when something is to be built or fetched (and only then).

    The sink draws on this process's stderr, as progress says (auto, tty,
    plain or json; None: $PLASH_PROGRESS, else auto), nothing but failures
    with quiet; prefix: steps run side by side (warm), so their lines say whose.
    """

    def make() -> Emit:
        from plash.ui.progress import renderer

        return renderer(quiet, progress, prefix)

    return make
