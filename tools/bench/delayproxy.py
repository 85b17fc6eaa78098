"""`python -m tools.bench.delayproxy`: a TCP proxy on 127.0.0.1 that adds a fixed delay each way.

Stands in for a managed database in the same region (the article's RDS): with `--rtt 0.002` every
request and every answer arrives 1 ms later than it was sent, in order, so one query costs at least the
2 ms round trip, as on a real network. It runs in its own process so its event loop never competes with
the measured one for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    queue: asyncio.Queue = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    task = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait((0.0, None))
        try:
            await task
        except (ConnectionError, OSError):
            pass
        writer.close()


async def serve(listen_port: int, target_port: int, rtt: float, ready=None) -> None:
    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            cw.close()
            return
        for s in (cw, sw):
            sock = s.get_extra_info("socket")
            if sock is not None:
                import socket

                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pipe(cr, sw, rtt / 2), _pipe(sr, cw, rtt / 2))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    if ready is not None:
        ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.delayproxy", description=__doc__.split("\n")[0])
    p.add_argument("--listen", type=int, default=0, help="port to listen on (0: any; printed on stdout)")
    p.add_argument("--to", type=int, required=True, help="port on 127.0.0.1 to forward to")
    p.add_argument("--rtt", type=float, default=0.002, help="added round trip in seconds (default 0.002)")
    args = p.parse_args(argv)

    def ready(port: int) -> None:
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()

    try:
        asyncio.run(serve(args.listen, args.to, args.rtt, ready))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
