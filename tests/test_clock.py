"""The virtual clock: long timeouts cost no wall time; real I/O is still waited for."""

from __future__ import annotations

import asyncio

import pytest

from hardware.clock import RealClock, VirtualClock, run_external


def test_sixty_second_timeout_costs_no_wall_time(vclock: VirtualClock, real_waits: list[float | None]) -> None:
    async def main() -> float:
        t0 = vclock.now()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(60.0):
                await asyncio.get_running_loop().create_future()  # never completes
        return vclock.now() - t0

    with asyncio.Runner(loop_factory=vclock.new_event_loop) as runner:
        elapsed = runner.run(main())
    assert elapsed == pytest.approx(60.0)
    assert real_waits and set(real_waits) == {0}     # the loop only polled: the 60 s were jumped, not waited


def test_clock_sleep_and_wall(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    start = vclock.wall()
    vrun.run(vclock.sleep(3600))
    assert (vclock.wall() - start).total_seconds() == pytest.approx(3600)


def test_loopback_socket_answer_is_not_mistaken_for_idle(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    """A peer on a real loopback socket answers before any virtual timeout fires."""

    async def main() -> bytes:
        async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(await r.readexactly(4))
            await w.drain()
            w.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        async with asyncio.timeout(0.001):  # one virtual millisecond is plenty: no jump happens
            data = await reader.readexactly(4)
        writer.close()
        server.close()
        await server.wait_closed()
        return data

    assert vrun.run(main()) == b"ping"


def test_external_work_is_waited_for_in_real_time(vclock: VirtualClock, vrun: asyncio.Runner) -> None:
    """While a thread does real work the virtual clock follows real time instead of jumping."""
    import threading

    done = threading.Event()

    def blocking() -> str:
        done.wait(0.05)  # a short real wait standing in for a pyscard call
        return "answer"

    async def main() -> str:
        async with asyncio.timeout(5.0):
            return await run_external(vclock, blocking)

    assert vrun.run(main()) == "answer"
    assert vclock.now() < 5.0


def test_real_clock_is_monotonic() -> None:
    c = RealClock()
    a = c.now()
    assert c.now() >= a
    assert c.wall().tzinfo is not None
