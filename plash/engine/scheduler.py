"""Run a DAG of jobs on trio: one nursery, separate limits per resource.

`ready()` is the pure step: which jobs may start given what is done and
running. `run_dag()` starts every ready job in one nursery; the first failure
cancels its siblings (the nursery does that), so the caller sees one error.
Identical jobs are merged by key before they get here.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio


class Job:
    """A unit of work: a unique key, the keys it depends on, its resource, and its coroutine.

    `run` receives the results of its dependencies, in the order of `deps`.
    """

    def __init__(self, key: str, deps: tuple[str, ...], resource: str,
                 run: Callable[..., Awaitable[Any]], label: str = "") -> None:
        self.key, self.deps, self.resource, self.run = key, deps, resource, run
        self.label = label or key


def ready(jobs: dict[str, Job], done: set[str], started: set[str]) -> list[Job]:
    """Jobs not yet started whose dependencies are all done."""
    return [j for k, j in jobs.items() if k not in started and all(d in done for d in j.deps)]


def check_dag(jobs: dict[str, Job]) -> None:
    """Every dependency exists and there is no cycle."""
    for j in jobs.values():
        for d in j.deps:
            if d not in jobs:
                raise ValueError(f"job {j.key} depends on unknown job {d}")
    state: dict[str, int] = {}

    def visit(k: str) -> None:
        if state.get(k) == 1:
            raise ValueError(f"dependency cycle through {k}")
        if state.get(k) == 2:
            return
        state[k] = 1
        for d in jobs[k].deps:
            visit(d)
        state[k] = 2

    for k in jobs:
        visit(k)


class Skipped(Exception):
    """A job that did not run because a job it depends on failed (with keep_going)."""


async def run_dag(jobs: dict[str, Job], limits: dict[str, int], keep_going: bool = False) -> dict[str, Any]:
    """Run all jobs respecting dependencies and per-resource limits; return results by key.

    Normally the first failure cancels everything. With keep_going, a failed
    job's exception becomes its result, the jobs depending on it get Skipped,
    and everything else still runs.
    """
    check_dag(jobs)
    limiters = {name: trio.CapacityLimiter(n) for name, n in limits.items()}
    results: dict[str, Any] = {}
    done: set[str] = set()
    started: set[str] = set()
    send, receive = trio.open_memory_channel[str](len(jobs) or 1)

    async def one(job: Job) -> None:
        limiter = limiters.get(job.resource)
        args = [results[d] for d in job.deps]
        failed = next((a for a in args if isinstance(a, BaseException)), None)
        try:
            if failed is not None:
                results[job.key] = Skipped(str(failed))
            elif limiter is None:
                results[job.key] = await job.run(*args)
            else:
                async with limiter:
                    results[job.key] = await job.run(*args)
        except Exception as e:
            if not keep_going:
                raise
            results[job.key] = e
        await send.send(job.key)

    async with trio.open_nursery() as nursery:
        while len(done) < len(jobs):
            for job in ready(jobs, done, started):
                started.add(job.key)
                nursery.start_soon(one, job)
            done.add(await receive.receive())
    return results
