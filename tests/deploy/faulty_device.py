"""A device for the loopback process test that misbehaves at one (round, stage).

Usage: python faulty_device.py TARGET ID KEY CA DATA MODE ROUND STAGE
MODE is ``pause`` (print PAUSED and hang before sending the reply, so the test can SIGKILL
this process at a known stage), ``garbage`` (send random bytes instead of the reply) or
``oversized`` (send a reply larger than the server's message cap).
"""

from __future__ import annotations

import os
import sys
import time

import grpc
import numpy as np

import secagg
from protocols.config import Stage
from protocols.net import ClientTLS, JobSpec, TransportError, load_identity_key, run_device
from protocols.net.wire import AUTH_METADATA, decode_welcome, encode_hello, sign_call
from protocols.transport import Direction


def _auth(
    key: secagg.SigningKey, cid: int, counter: int, method: str, nonce: bytes
) -> tuple[tuple[str, bytes], ...]:
    return ((AUTH_METADATA, sign_call(key, cid, counter, method, nonce)),)


def main() -> int:
    target, cid, key, ca, data, mode, rnd, stage = sys.argv[1:9]
    values = np.load(data)
    with open(ca, "rb") as handle:
        ca_pem = handle.read()
    when = (int(rnd), Stage(stage))
    current = {"round": -1}

    def inputs(round_number: int, job: JobSpec) -> np.ndarray:
        current["round"] = round_number
        return secagg.to_ring(values[round_number], job.bits)

    def hook(direction: Direction, st: Stage, client: int, payload: bytes) -> bytes | None:
        if (current["round"], st) != when:
            return payload
        if mode == "pause":
            print("PAUSED", flush=True)
            time.sleep(3600)
        if mode == "garbage":
            return os.urandom(len(payload))
        # oversized: bypass this device's own send cap with a raw channel, so the server's
        # receive cap is what refuses the message
        # (the call header is signed, so the server admits the call and reads its body)
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_pem))
        own = load_identity_key(key)
        first = time.time_ns()
        try:
            welcome = channel.unary_unary("/privagg.Aggregation/Hello")(
                encode_hello(client), metadata=_auth(own, client, first, "Hello", b"")
            )
            nonce, _job = decode_welcome(welcome)
            channel.unary_unary("/privagg.Aggregation/Exchange")(
                b"PN" + bytes(4 << 20), metadata=_auth(own, client, first + 1, "Exchange", nonce)
            )
        except grpc.RpcError as exc:
            print(f"OVERSIZED {exc.code().name}", flush=True)
        os._exit(4)

    try:
        run_device(
            target,
            int(cid),
            load_identity_key(key),
            inputs,
            ClientTLS(ca_pem),
            retry_seconds=5,
            hooks=[hook],
        )
    except TransportError as exc:
        print(f"REFUSED {exc}", flush=True)
        return 3
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
