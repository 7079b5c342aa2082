"""A device's gatekeeper: the welcome and every round announcement, checked before use.

:class:`DeviceGuard` composes the device's :class:`~protocols.policy.SecAggPolicy` with the
job manifest it pins (:mod:`protocols.net.manifest`). :func:`protocols.net.run_device`
calls :meth:`DeviceGuard.check_welcome` on the server's welcome (a refusal ends the device
before it sends any request derived from its data) and :meth:`DeviceGuard.check_round` on
each round's announcement before it computes or sends anything for that round (a refusal
sits the round out; the reason names the rule).
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.config import SecAggConfig
from protocols.net.manifest import JobManifest, PinStore
from protocols.net.wire import JobSpec
from protocols.policy import PolicyViolation, Rule, SecAggPolicy

__all__ = ["DeviceGuard"]


class DeviceGuard:
    """Checks a job against a device's policy and pinned manifest (see module docstring).

    ``pinned`` is a manifest the device was given (``--job``); otherwise, with ``pins``, the
    first manifest a server sends is trusted and its key remembered (the fingerprint goes to
    ``notice``); with ``require_manifest`` (the default) a welcome without a valid signed
    manifest is refused.
    """

    def __init__(
        self,
        policy: SecAggPolicy,
        *,
        pinned: JobManifest | None = None,
        pins: PinStore | None = None,
        require_manifest: bool = True,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.policy = policy
        self.pinned = pinned
        self.pins = pins
        self.require_manifest = require_manifest
        self.notice = notice or (lambda _text: None)
        self.manifest: JobManifest | None = None
        self.job: JobSpec | None = None
        self.refusals: list[PolicyViolation] = []
        self._joined: set[int] = set()

    def _refuse(self, rule: Rule, reason: str) -> PolicyViolation:
        violation = PolicyViolation(rule, reason)
        self.refusals.append(violation)
        return violation

    def check_welcome(self, target: str, job: JobSpec, signed: bytes) -> None:
        """Accept the job of a welcome (and its signed manifest) or raise PolicyViolation."""
        try:
            manifest = JobManifest.verify(signed) if signed else None
        except PolicyViolation as exc:
            self.refusals.append(exc)
            raise
        if manifest is not None and manifest.job != job:
            raise self._refuse(Rule.MANIFEST, "the welcome's job is not its signed manifest's")
        if self.pinned is not None:
            if manifest is None or manifest.body() != self.pinned.body():
                got = "no manifest" if manifest is None else f"manifest {manifest.fingerprint}"
                raise self._refuse(
                    Rule.MANIFEST,
                    f"the server sent {got}, this device pinned {self.pinned.fingerprint}",
                )
        elif manifest is None:
            if self.require_manifest:
                raise self._refuse(
                    Rule.MANIFEST,
                    "the server sent no signed job manifest (pin one with --job, or allow "
                    "unsigned jobs in the device policy)",
                )
        elif self.pins is not None:
            try:
                first = self.pins.check_or_pin(target, manifest.server_key)
            except PolicyViolation as exc:
                self.refusals.append(exc)
                raise
            how = "trusting on first use" if first else "pinned server key matches"
            self.notice(f"job manifest {manifest.fingerprint} ({how}; job id {manifest.job_id})")
        try:
            self.policy.check_job(
                threat_model=job.threat(),
                corrupt_fraction=job.corrupt_fraction,
                bits=job.bits,
                rounds=job.rounds,
            )
            if not job.per_round:
                self.policy.check_round(
                    job.secagg_config(), vector_length=job.vector_length, participations=0
                )
        except PolicyViolation as exc:
            self.refusals.append(exc)
            raise
        self.manifest, self.job = manifest, job

    def check_round(
        self, job: JobSpec, round_number: int, config: SecAggConfig, vector_length: int
    ) -> None:
        """Accept one round's announced configuration or raise PolicyViolation."""
        if round_number >= job.rounds and not job.per_round:
            raise self._refuse(
                Rule.ROUNDS, f"round {round_number} is beyond the job's {job.rounds} rounds"
            )
        if len(self._joined) >= job.rounds:
            raise self._refuse(
                Rule.ROUNDS,
                f"this device already joined the job's {job.rounds} rounds",
            )
        try:
            self.policy.check_round(
                config, vector_length=vector_length, participations=len(self._joined)
            )
        except PolicyViolation as exc:
            self.refusals.append(exc)
            raise

    def honest_floor(self, config: SecAggConfig) -> int:
        """t − n_C of a round with the device's own corrupt assumption."""
        return self.policy.honest_floor(config)

    def joined(self, round_number: int) -> None:
        """Record that this device sends its input in ``round_number``."""
        self._joined.add(round_number)
