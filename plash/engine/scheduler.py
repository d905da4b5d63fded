"""Run a DAG of jobs on trio: one nursery, one limit per resource for the whole process.

The order comes from graphlib.TopologicalSorter (which also finds cycles
and unknown dependencies); `run_dag()` starts every ready job in one
nursery, and the first failure cancels its siblings (the nursery does
that), so the caller sees one error. Identical jobs are merged by key
before they get here. Work a job does inside (the downloads of an image
import) takes its slots from the same limiters, through `limit()`.
"""

from __future__ import annotations

import graphlib
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from plash.errors import PlashError


class Job:
    """A unit of work: a unique key, the keys it depends on, its resource, and its coroutine.

    `run` receives the results of its dependencies, in the order of `deps`.
    """

    def __init__(self, key: str, deps: tuple[str, ...], resource: str,
                 run: Callable[..., Awaitable[Any]], label: str = "") -> None:
        self.key, self.deps, self.resource, self.run = key, deps, resource, run
        self.label = label or key


class Skipped(Exception):
    """A job that did not run because a job it depends on failed (with keep_going)."""


# One table per trio.run (a RunVar, not a ContextVar: every task of the run sees the same one)
_limiters: trio.lowlevel.RunVar[dict[str, trio.CapacityLimiter]] = trio.lowlevel.RunVar("plash_limiters")


def limit(resource: str) -> trio.CapacityLimiter:
    """The limiter of a resource for this whole run (made on first use, from config.limits, outside a DAG)."""
    try:
        table = _limiters.get()
    except LookupError:
        table = {}
        _limiters.set(table)
    if resource not in table:
        from plash import config

        table[resource] = trio.CapacityLimiter(config.limits().get(resource, 1))
    return table[resource]


def sorter(jobs: dict[str, Job]) -> graphlib.TopologicalSorter[str]:
    """The jobs' order; ValueError for a dependency that is no job or a cycle."""
    for j in jobs.values():
        for d in j.deps:
            if d not in jobs:
                raise ValueError(f"job {j.key} depends on unknown job {d}")
    order: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter({k: j.deps for k, j in jobs.items()})
    try:
        order.prepare()
    except graphlib.CycleError as e:
        raise ValueError(f"dependency cycle through {e.args[1][0]}") from None
    return order


async def run_dag(jobs: dict[str, Job], limits: dict[str, int], keep_going: bool = False) -> dict[str, Any]:
    """Run all jobs respecting dependencies and per-resource limits; return results by key.

    Normally the first failure cancels everything. With keep_going, a failed
    job's exception becomes its result, the jobs depending on it get Skipped,
    and everything else still runs.
    """
    order = sorter(jobs)
    try:
        table = _limiters.get()
    except LookupError:
        table = {}
        _limiters.set(table)
    table.update({name: trio.CapacityLimiter(n) for name, n in limits.items() if name not in table})
    results: dict[str, Any] = {}
    send, receive = trio.open_memory_channel[str](len(jobs) or 1)

    async def one(job: Job) -> None:
        args = [results[d] for d in job.deps]
        failed = next((a for a in args if isinstance(a, BaseException)), None)
        try:
            if failed is not None:
                results[job.key] = Skipped(str(failed))
            elif job.resource in limits:
                async with limit(job.resource):
                    results[job.key] = await job.run(*args)
            else:
                results[job.key] = await job.run(*args)
        except Exception as e:
            if not keep_going:
                raise
            results[job.key] = first_error(e) if isinstance(e, BaseExceptionGroup) else e
        await send.send(job.key)

    async with trio.open_nursery() as nursery:
        while order.is_active():
            for key in order.get_ready():
                nursery.start_soon(one, jobs[key])
            order.done(await receive.receive())
    return results


def run(main: Callable[..., Awaitable[Any]], *args: Any, emit: object = None) -> Any:
    """trio.run(main, *args), with the one error of a failed nursery raised alone and the renderer closed.

    The step servers the run started (plash.engine.stepservers) end with it.
    """
    try:
        return trio.run(_closing_servers, main, *args)
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    finally:
        close = getattr(emit, "close", None)
        if close:
            close()


async def _closing_servers(main: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    from plash.engine.stepservers import close_pool

    try:
        return await main(*args)
    finally:
        await close_pool()


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error to report from a nursery's group: a PlashError or Ctrl-C first."""
    flat: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            flat.append(e)

    walk(group)
    for kind in (KeyboardInterrupt, PlashError):
        for e in flat:
            if isinstance(e, kind):
                return e
    return flat[0] if flat else group
