"""A training device for the loopback process test: ``privagg client`` plus test-only hooks.

Usage: python training_device.py DUMP_DIR [--pause ROUND STAGE] -- <privagg client args>

It runs the real ``privagg client`` code path, with two additions a real device does not
have: every round's encoded ring vector is also written to ``DUMP_DIR/vec-<id>-<round>.npy``
(so the test can check that the server's aggregate is the exact sum of the included
devices' vectors), and with ``--pause`` the device prints PAUSED and hangs just before
sending its reply at that (round, stage), so the test can SIGKILL it at a known stage.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import protocols.net
from analysis.cli import main as privagg
from protocols.config import Stage
from protocols.net import RoundInfo
from protocols.transport import Direction
from recsys.remote import DeviceTrainer


def main() -> int:
    split = sys.argv.index("--")
    own, client_args = sys.argv[1:split], sys.argv[split + 1 :]
    dump = Path(own[0])
    pause = (int(own[2]), Stage(own[3])) if len(own) > 1 and own[1] == "--pause" else None
    current = {"round": -1}
    encode = DeviceTrainer.__call__

    def dumping(self: DeviceTrainer, info: RoundInfo) -> Any:
        vector = encode(self, info)
        cid = info.spec.cohort[info.position]
        np.save(dump / f"vec-{cid}-{info.round_number}.npy", vector, allow_pickle=False)
        current["round"] = info.round_number
        return vector

    DeviceTrainer.__call__ = dumping  # type: ignore[method-assign]

    def hook(direction: Direction, stage: Stage, client: int, payload: bytes) -> bytes | None:
        if (current["round"], stage) == pause:
            print("PAUSED", flush=True)
            time.sleep(3600)
        return payload

    run_device = protocols.net.run_device

    def with_hook(*args: Any, **kw: Any) -> Any:
        return run_device(*args, hooks=[hook], **kw)

    protocols.net.run_device = with_hook
    return privagg(["client", *client_args])


if __name__ == "__main__":
    sys.exit(main())
