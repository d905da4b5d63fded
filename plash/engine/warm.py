"""`plash warm`: build many build files as one DAG; shared layers (same key) are made once."""

from __future__ import annotations

import os

from plash.engine.build import Prepared, first_error, prepare
from plash.errors import PlashError
from plash.store.layout import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from plash.engine.jobs import Emit


def warm(store: Store, files: list[str], parallel: int, keep_going: bool,
         make_emit: Callable[[], Emit]) -> list[tuple[str, int | PlashError]]:
    """Build every file; return (file, image id or the error) in the order given."""
    from plash.lang.macros import expand_file

    plans: dict[str, Prepared | PlashError] = {}
    for f in files:
        try:
            plans[f] = prepare(store, expand_file(f), cwd=os.path.dirname(os.path.abspath(f)))
        except PlashError as e:
            if not keep_going:
                raise
            plans[f] = e
    todo = {f: p for f, p in plans.items() if isinstance(p, Prepared) and not p.complete}
    results: dict[str, object] = {}
    if todo:
        import trio

        from plash.engine import jobs
        from plash.engine.scheduler import run_dag

        emit = make_emit()
        holds = jobs.Holds(store)
        dag: dict = {}
        for p in todo.values():
            for key, job in jobs.build_jobs(store, p, emit, holds).items():
                dag.setdefault(key, job)  # the same key is the same work: keep one job
        limits = dict(jobs.LIMITS, step=max(1, parallel))
        try:
            results = trio.run(run_dag, dag, limits, keep_going)
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            holds.close()
            close = getattr(emit, "close", None)
            if close:
                close()
    out: list[tuple[str, int | PlashError]] = []
    for f, plan in plans.items():
        if isinstance(plan, PlashError):
            out.append((f, plan))
        elif plan.complete:
            out.append((f, plan.final_id))  # type: ignore[arg-type]
        else:
            from plash.engine import jobs

            r = results.get(jobs.final_key(plan))
            out.append((f, r if isinstance(r, int) else PlashError(str(r))))
    return out
