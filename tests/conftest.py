"""Fixtures shared by every test folder.

``_private_config_home`` (automatic): the ledger signing key's default folder points into the
session's temporary folder.

``ray_runtime``: one local Ray instance for the whole test session. Every test that runs a
:class:`recsys.executors.RayExecutor` requests it, so the executors attach to this instance
instead of starting and shutting down their own (re-initializing Ray in one process, with
actors of an earlier instance still being torn down, could hang a later test). It has more
logical CPUs than the machine has cores so that the actors of one test never wait for the
resources of another test's actors to be released; they mostly wait for the driver anyway.
Skipped with the reason when Ray is not installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

RAY_LOGICAL_CPUS = 4


@pytest.fixture(autouse=True, scope="session")
def _private_config_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs sign their ledgers with a key generated in the user's configuration folder:
    point it at a session folder so the suite never writes into the real home."""
    import os

    old = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = old


@pytest.fixture(scope="session")
def ray_runtime() -> Iterator[Any]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'privagg[ray]')")
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=RAY_LOGICAL_CPUS,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    if started:
        ray.shutdown()
