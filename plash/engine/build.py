"""Builds: plan synchronously, reuse cached layers, run what is missing as one DAG on trio.

A build whose layers are all cached never starts trio (`prepare` is sync);
otherwise its jobs (engine/steps.py) run on the scheduler.
"""

from __future__ import annotations

from plash import config
from plash.engine.plan import prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from plash.config import BuildOptions
    from plash.engine.events import Emit
    from plash.lang.tokens import Where
    from plash.store.layout import Store


def build(store: Store, lines: list[tuple[str, Where]], make_emit: Callable[[], Emit] | None = None,
          cwd: str | None = None, options: BuildOptions | None = None) -> int:
    """Build and return the final image id; all cached: no trio, nothing printed.

    make_emit gives the sink for engine events (plash/ui renders them); it is
    called only when something has to be built. Steps run in cwd (default:
    this process's) when the image has it. options: the layer caches
    (default: PLASH_CACHE_FROM / PLASH_CACHE_TO), --no-cache, --pull and
    --no-package-cache.
    """
    options = options or config.BuildOptions()
    prepared = prepare(store, lines, cwd, options.no_cache, options.pull, options.package_cache)
    if prepared.complete:
        final = prepared.final_id
        assert final is not None
        return final
    from plash.engine import launcher

    if prepared.runs_steps:
        launcher.prestart()  # its start overlaps trio's import (plash.engine.launcher)
    try:
        # trio and the engine are loaded only now: a cached build does without them (start-up speed)
        from plash.engine.locks import Holds
        from plash.engine.scheduler import run, run_dag
        from plash.engine.steps import build_jobs

        emit = make_emit() if make_emit else (lambda e: None)
        holds = Holds(store)
        try:
            jobs = build_jobs(store, prepared, emit, holds)
            if options.cache_from or options.cache_to:
                from plash.engine.cache import Cache, cached_jobs, run_cached

                cache = Cache(options.cache_from, options.cache_to, options.no_cache)
                jobs = cached_jobs(store, [prepared], jobs, cache, emit)
                results = run(run_cached, store, jobs, config.limits(), False, cache, emit, emit=emit)
            else:
                results = run(run_dag, jobs, config.limits(), emit=emit)
        finally:
            holds.close()
    finally:
        launcher.drop_early()
    image: int = results[prepared.final_key]
    return image
