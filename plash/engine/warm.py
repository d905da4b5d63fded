"""`plash warm`: build many build files as one DAG; shared layers (same key) are made once."""

from __future__ import annotations

import os

from plash import config
from plash.engine.plan import Prepared, prepare
from plash.errors import PlashError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from plash.engine.events import Emit
    from plash.engine.scheduler import Job
    from plash.store.layout import Store


def warm(store: Store, files: list[str], parallel: int, keep_going: bool,
         make_emit: Callable[[], Emit], options: config.BuildOptions | None = None) -> list[tuple[str, int | PlashError]]:
    """Build every file; return (file, image id or the error) in the order given.

    options: the layer caches, --no-cache, --pull and --no-package-cache (for every file).
    """
    from plash.lang.macros import expand_file

    options = options or config.BuildOptions()
    plans: dict[str, Prepared | PlashError] = {}
    for f in files:
        try:
            plans[f] = prepare(store, expand_file(f), os.path.dirname(os.path.abspath(f)), options.no_cache,
                               options.pull, options.package_cache)
        except PlashError as e:
            if not keep_going:
                raise
            plans[f] = e
    todo = [p for p in plans.values() if isinstance(p, Prepared) and not p.complete]
    results: dict[str, Any] = {}
    if todo:
        from plash.engine import launcher

        if any(p.runs_steps for p in todo):
            launcher.prestart()  # its start overlaps trio's import (plash.engine.launcher)
        try:
            # trio and the engine are loaded only now: a fully cached warm does without them (start-up speed)
            from plash.engine.locks import Holds
            from plash.engine.scheduler import run, run_dag
            from plash.engine.steps import build_jobs

            emit = make_emit()
            holds = Holds(store)
            try:
                dag: dict[str, Job] = {}
                for p in todo:
                    for key, job in build_jobs(store, p, emit, holds).items():
                        dag.setdefault(key, job)  # the same key is the same work: keep one job
                if options.cache_from or options.cache_to:
                    from plash.engine.cache import Cache, cached_jobs, run_cached

                    cache = Cache(options.cache_from, options.cache_to, options.no_cache)
                    dag = cached_jobs(store, todo, dag, cache, emit)
                    results = run(run_cached, store, dag, config.limits(parallel), keep_going, cache, emit, emit=emit)
                else:
                    results = run(run_dag, dag, config.limits(parallel), keep_going, emit=emit)
            finally:
                holds.close()
        finally:
            launcher.drop_early()
    out: list[tuple[str, int | PlashError]] = []
    for f, plan in plans.items():
        if isinstance(plan, PlashError):
            out.append((f, plan))
        elif plan.complete:
            assert plan.final_id is not None
            out.append((f, plan.final_id))
        else:
            r = results.get(plan.final_key)
            out.append((f, r if isinstance(r, int) else PlashError(str(r))))
    return out
