"""Availability attackers of the gRPC deployment (tests and ``benchmarks/bench_deploy.py``).

* :class:`StalledStreams`: an outsider (no identity key, and no client certificate unless
  given one) opens HTTP/2 streams that send call headers but never a request body, and
  opens a new one whenever the server ends one — the way to hold server resources without
  sending anything.
* :class:`LongPollFlood`: a registered client (it has its own identity key) keeps many
  signed ``Exchange`` long-polls in flight at once, re-issuing each as soon as it returns
  or is refused. ``seen=0`` makes them valid polls ("my next message"; the client never
  answers what it gets); a ``seen`` beyond anything the server sent makes them bogus.

Both run on their own threads until :meth:`close` and count what happened to their calls
by gRPC status. Each spreads its calls over several TLS connections (a local subchannel
pool per channel), so a per-connection stream limit alone does not stop it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc

import secagg
from protocols.net.wire import (
    AUTH_METADATA,
    NO_STAGE,
    SERVICE,
    Exchange,
    decode_welcome,
    encode_hello,
    sign_call,
)

_PER_CONNECTION = 16


def _channels(target: str, ca_pem: bytes, count: int) -> list[grpc.Channel]:
    options = [("grpc.use_local_subchannel_pool", 1)]
    credentials = grpc.ssl_channel_credentials(ca_pem)
    return [grpc.secure_channel(target, credentials, options=options) for _ in range(count)]


class _Attacker:
    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._channels: list[grpc.Channel] = []
        self.in_flight = 0
        self.peak_in_flight = 0

    def _count(self, name: str) -> None:
        with self._lock:
            self.codes[name] += 1

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _spawn(self, count: int, loop: object) -> None:
        for index in range(count):
            thread = threading.Thread(target=loop, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        for channel in self._channels:
            channel.close()
        for thread in self._threads:
            thread.join(10)


class StalledStreams(_Attacker):
    """``count`` stalled calls of ``method`` from an outsider; ``pause`` seconds between
    a call's end and its replacement (the attacker's own pacing, to keep this a resource
    attack rather than a CPU-volume one on a shared test machine)."""

    def __init__(
        self,
        target: str,
        ca_pem: bytes,
        count: int,
        *,
        method: str = "Exchange",
        pause: float = 0.2,
        header: bytes | None = None,
    ) -> None:
        super().__init__()
        self._channels = _channels(target, ca_pem, max(1, -(-count // _PER_CONNECTION)))
        self._method = f"/{SERVICE}/{method}"
        self._pause = pause
        self._metadata = ((AUTH_METADATA, header),) if header is not None else None
        self._spawn(count, self._loop)

    def _never(self) -> Iterator[bytes]:
        self._stop.wait()
        return
        yield b""  # pragma: no cover - a generator that never yields while running

    def _loop(self, index: int) -> None:
        stub = self._channels[index % len(self._channels)].stream_unary(self._method)
        while not self._stop.is_set():
            self._enter()
            try:
                stub(self._never(), timeout=120, metadata=self._metadata)
                self._count("OK")
            except grpc.RpcError as exc:
                code = exc.code()
                self._count(code.name if code is not None else "UNKNOWN")
            except ValueError:  # the channel was closed under us
                return
            finally:
                self._leave()
            self._stop.wait(self._pause)


class LongPollFlood(_Attacker):
    """``count`` concurrent signed long-polls of registered client ``client_id``."""

    def __init__(
        self,
        target: str,
        ca_pem: bytes,
        client_id: int,
        key: secagg.SigningKey,
        count: int,
        *,
        pause: float = 0.2,
        seen: int = 0,
    ) -> None:
        super().__init__()
        self._channels = _channels(target, ca_pem, max(1, -(-count // _PER_CONNECTION)))
        self._seen = seen
        self._cid = client_id
        self._key = key
        self._pause = pause
        self._counter = itertools.count(time.time_ns())
        hello = self._channels[0].unary_unary(f"/{SERVICE}/Hello")
        header = sign_call(key, client_id, next(self._counter), "Hello", b"")
        welcome = hello(encode_hello(client_id), timeout=30, metadata=((AUTH_METADATA, header),))
        self.nonce, _job = decode_welcome(welcome)
        self._spawn(count, self._loop)

    def _request(self) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
        with self._lock:
            body_counter, call_counter = next(self._counter), next(self._counter)
        body = Exchange(self._cid, body_counter, 0, NO_STAGE, b"", self._seen).sign(
            self._key, self.nonce
        )
        header = sign_call(self._key, self._cid, call_counter, "Exchange", self.nonce)
        return body, ((AUTH_METADATA, header),)

    def _loop(self, index: int) -> None:
        stub = self._channels[index % len(self._channels)].unary_unary(f"/{SERVICE}/Exchange")
        while not self._stop.is_set():
            body, metadata = self._request()
            self._enter()
            try:
                stub(body, timeout=60, metadata=metadata)
                self._count("OK")
                refused = False
            except grpc.RpcError as exc:
                code = exc.code()
                self._count(code.name if code is not None else "UNKNOWN")
                refused = True
            except ValueError:
                return
            finally:
                self._leave()
            if refused:
                self._stop.wait(self._pause)
