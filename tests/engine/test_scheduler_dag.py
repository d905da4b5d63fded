"""The scheduler as functions: order, refusals, per-resource limits, cancellation, keep_going, the error to report.

Jobs that must overlap block on events or on tokens from a memory channel;
the test looks at who is running once every task is blocked
(trio.testing.wait_all_tasks_blocked), then lets one go.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from enginekit import emit  # noqa: F401 (fixtures, used by name)

from plash.engine.scheduler import Job, Skipped, first_error, limit, run, run_dag, sorter
from plash.errors import FetchError, PlashError


def job(key: str, deps: tuple[str, ...] = (), resource: str = "none",
        run: Callable[..., Awaitable[Any]] | None = None) -> Job:
    async def default(*args: Any) -> tuple[str, tuple[Any, ...]]:
        return key, args

    return Job(key, deps, resource, run or default)


def dag(*jobs: Job) -> dict[str, Job]:
    return {j.key: j for j in jobs}


class Gate:
    """Jobs pass one at a time when the test says so; counts how many are inside at once."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[None](0)
        self.inside: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.entered: list[str] = []

    def job(self, key: str, resource: str, deps: tuple[str, ...] = ()) -> Job:
        async def run(*_: Any) -> str:
            await self.wait(resource, key)
            return key

        return Job(key, deps, resource, run)

    async def wait(self, group: str, key: str) -> None:
        self.entered.append(key)
        self.inside[group] = self.inside.get(group, 0) + 1
        self.peak[group] = max(self.peak.get(group, 0), self.inside[group])
        try:
            await self.receive.receive()
        finally:
            self.inside[group] -= 1

    async def release_all(self, count: int, check: Callable[[], None]) -> None:
        """Let count jobs through one by one, checking the state each time all are blocked."""
        for _ in range(count):
            await trio.testing.wait_all_tasks_blocked()
            check()
            await self.send.send(None)


# -- order and refusals --------------------------------------------------------------


async def test_dependencies_run_first_and_their_results_come_in_order_of_deps() -> None:
    started: list[str] = []

    def step(key: str, deps: tuple[str, ...] = ()) -> Job:
        async def run(*args: Any) -> tuple[str, tuple[Any, ...]]:
            started.append(key)
            await trio.testing.wait_all_tasks_blocked()  # a job started too early would get in here
            return key, args

        return Job(key, deps, "none", run)

    results = await run_dag(dag(step("a"), step("b", ("a",)), step("c", ("a",)), step("d", ("c", "b"))), {})
    assert started[0] == "a", started
    assert set(started[1:3]) == {"b", "c"}, started
    assert started[3] == "d", started
    assert results["b"] == ("b", (("a", ()),))
    assert results["d"] == ("d", (results["c"], results["b"]))  # in the order of d's deps, not of finishing


async def test_a_dag_of_no_jobs_gives_no_results() -> None:
    assert await run_dag({}, {"step": 1}) == {}


@pytest.mark.parametrize(("jobs", "message"), [
    (dag(job("a", ("b",)), job("b", ("a",))), "dependency cycle"),
    (dag(job("a", ("a",))), "dependency cycle through a"),
    (dag(job("a"), job("b", ("a", "nowhere"))), "job b depends on unknown job nowhere"),
], ids=("cycle", "self", "unknown"))
async def test_a_cycle_or_an_unknown_dependency_is_a_value_error_before_anything_runs(
        jobs: dict[str, Job], message: str) -> None:
    ran: list[str] = []
    for j in jobs.values():
        async def run(*_: Any, key: str = j.key) -> None:
            ran.append(key)

        j.run = run
    with pytest.raises(ValueError, match=message):
        sorter(jobs)
    with pytest.raises(ValueError, match=message):
        await run_dag(jobs, {})
    assert ran == []


# -- limits ---------------------------------------------------------------------------


async def test_each_resource_has_its_own_limit_and_an_unlimited_one_runs_all_at_once() -> None:
    gate = Gate()
    jobs = dag(*(gate.job(f"step{i}", "step") for i in range(5)),
               *(gate.job(f"import{i}", "import") for i in range(3)),
               *(gate.job(f"none{i}", "none") for i in range(3)))
    limits = {"step": 2, "import": 1}

    def check() -> None:
        waiting = {"step": 5, "import": 3, "none": 3}
        for key in gate.entered:
            waiting[key.rstrip("0123456789")] -= 1
        for group, cap in (("step", 2), ("import", 1), ("none", 3)):
            # as many inside as the limit lets in, while there are jobs left to let in
            expected = min(cap, gate.inside.get(group, 0) + waiting[group])
            assert gate.inside.get(group, 0) == expected, (group, gate.inside, waiting)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_dag, jobs, limits)
        await gate.release_all(len(jobs), check)
    assert gate.peak == {"step": 2, "import": 1, "none": 3}


async def test_limit_download_is_one_limiter_for_all_jobs_of_a_dag() -> None:
    """Two imports, each downloading two blobs at once, never exceed the download limit together."""
    gate = Gate()
    limiters: list[trio.CapacityLimiter] = []

    def importer(key: str) -> Job:
        async def run() -> None:
            async def blob(n: int) -> None:
                limiters.append(limit("download"))
                async with limit("download"):
                    await gate.wait("download", f"{key}-{n}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(blob, 1)
                nursery.start_soon(blob, 2)

        return Job(key, (), "import", run)

    def check() -> None:
        assert gate.inside.get("download", 0) == min(2, 4 - len(gate.entered) + gate.inside.get("download", 0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_dag, dag(importer("a"), importer("b")), {"import": 4, "download": 2})
        await gate.release_all(4, check)
    assert gate.peak == {"download": 2}
    assert all(lim is limiters[0] for lim in limiters), limiters


async def test_a_download_limit_made_on_first_use_inside_a_dag_is_shared_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASH_DOWNLOADS", "1")
    gate = Gate()

    def downloader(key: str) -> Job:
        async def run() -> None:
            async with limit("download"):
                await gate.wait("download", key)

        return Job(key, (), "none", run)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_dag, dag(downloader("a"), downloader("b"), downloader("c")), {})
        await gate.release_all(3, lambda: None)
    assert gate.peak == {"download": 1}


async def test_limit_download_outside_a_dag_is_still_process_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLASH_DOWNLOADS", "1")
    gate = Gate()

    async def blob(n: int) -> None:
        async with limit("download"):
            await gate.wait("download", str(n))

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(blob, n)
        await gate.release_all(3, lambda: None)
    assert gate.peak == {"download": 1}


# -- failures -------------------------------------------------------------------------


async def test_the_first_failure_cancels_its_siblings_and_nothing_after_it_runs(autojump_clock: object) -> None:
    """With the autojump clock a sibling left running would end its hour at once, and say so."""
    outcome: dict[str, str] = {}

    async def failing() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the sibling is asleep by now
        raise PlashError("step 1 failed")

    async def sibling() -> None:
        try:
            await trio.sleep(3600)
        except trio.Cancelled:
            outcome["sibling"] = "cancelled"
            raise
        outcome["sibling"] = "finished"

    async def after(_: object) -> None:
        outcome["after"] = "ran"

    jobs = dag(Job("fail", (), "step", failing), Job("sibling", (), "step", sibling), Job("after", ("fail",), "step", after))
    with pytest.RaisesGroup(pytest.RaisesExc(PlashError, match="step 1 failed")):
        await run_dag(jobs, {"step": 4})
    assert outcome == {"sibling": "cancelled"}


async def test_keep_going_gives_the_exception_as_result_and_skipped_to_its_dependents() -> None:
    error = PlashError("layer 1 failed")
    ran: list[str] = []

    async def bad() -> None:
        ran.append("bad")
        raise error

    def recorded(key: str) -> Callable[..., Awaitable[str]]:
        async def run(*_: Any) -> str:
            ran.append(key)
            return key

        return run

    jobs = dag(Job("bad", (), "step", bad), Job("child", ("bad",), "step", recorded("child")),
               Job("grandchild", ("child",), "step", recorded("grandchild")),
               Job("ok", (), "step", recorded("ok")), Job("ok2", ("ok",), "step", recorded("ok2")))
    results = await run_dag(jobs, {"step": 1}, keep_going=True)
    assert results["bad"] is error
    assert isinstance(results["child"], Skipped), results
    assert "layer 1 failed" in str(results["child"])
    assert isinstance(results["grandchild"], Skipped), results
    assert results["ok"] == "ok"
    assert results["ok2"] == "ok2"
    assert sorted(ran) == ["bad", "ok", "ok2"]


async def test_keep_going_still_stops_for_ctrl_c() -> None:
    async def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.RaisesGroup(KeyboardInterrupt):
        await run_dag(dag(Job("a", (), "step", interrupted)), {}, keep_going=True)


# -- the one error to report ----------------------------------------------------------


def test_first_error_takes_ctrl_c_first_then_a_plash_error_out_of_nested_groups() -> None:
    plash_error, interrupt, other = FetchError("blob: sha256 mismatch"), KeyboardInterrupt(), ValueError("x")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [other, ExceptionGroup("deeper", [plash_error])]),
                                          BaseExceptionGroup("ctrl-c", [interrupt])])
    assert first_error(nested) is interrupt
    assert first_error(ExceptionGroup("outer", [other, ExceptionGroup("inner", [plash_error])])) is plash_error
    assert first_error(ExceptionGroup("outer", [ExceptionGroup("inner", [other]), RuntimeError()])) is other


def test_run_raises_the_one_error_of_a_failed_nursery_alone_and_closes_the_renderer() -> None:
    closed: list[bool] = []

    class Renderer:
        def close(self) -> None:
            closed.append(True)

    async def main(message: str) -> None:
        async def fail_plain() -> None:
            raise ValueError("not this one")

        async def fail_plash() -> None:  # both fail before their first checkpoint: the group holds both
            raise PlashError(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail_plash)
            nursery.start_soon(fail_plain)

    with pytest.raises(PlashError, match="the reported one"):
        run(main, "the reported one", emit=Renderer())
    assert closed == [True]

    async def fine() -> int:
        return 7

    assert run(fine, emit=Renderer()) == 7
    assert closed == [True, True]
