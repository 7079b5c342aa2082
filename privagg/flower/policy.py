"""What a device accepts: its own floor on the privacy parameters a server proposes.

The server is the adversary: every number in a round offer (noise multiplier, clipping
norm, guaranteed noise shares, SecAgg threshold, ring width, simulation noise) is checked
on the device against this policy before the device trains, encodes or sends a byte. A
refusal is a typed :class:`OfferRefused` (the Flower reply is an error, the server counts
the device as a dropout).

This is the single place a device decision is made (:meth:`DevicePolicy.check`); a
project-wide device policy (``protocols``/``dp`` policy objects) plugs in here as one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import protocols
from privagg.flower.offer import RoundOffer

__all__ = ["DevicePolicy", "OfferRefused"]


class OfferRefused(ValueError):
    """The device refuses a round offer (one line saying which rule failed)."""


@dataclass(frozen=True)
class DevicePolicy:
    """The device's floor on a round offer.

    ``min_noise_multiplier`` bounds the central noise of any released sum from below (in
    units of the clipping norm); ``min_noise_shares`` is the fewest honest noise shares the
    device accepts in a released sum (the plan's ``min_contributors``); ``max_clip_norm``
    caps the sensitivity; ``min_threshold_fraction`` is the smallest SecAgg threshold t / n
    accepted; ``allow_simulation_noise`` admits the seeded, non-secure noise of
    :class:`dp.SimulationRng` (tests and reproducible simulations only);
    ``require_consistency_check`` refuses rounds without the signed advertise and
    consistency rounds of the malicious-server mode (needs a PKI, see ``PrivaggMod``);
    ``allow_plain_training`` lets plain Flower fit requests (which return the raw update)
    through the mod.
    """

    min_noise_multiplier: float = 0.5
    min_noise_shares: int = 2
    max_clip_norm: float = 10.0
    min_threshold_fraction: float = 0.5
    min_bits: int = 16
    max_cohort: int = 1 << 16
    allow_simulation_noise: bool = False
    require_consistency_check: bool = False
    allow_plain_training: bool = False

    def check(self, offer: RoundOffer) -> None:
        """Raise :class:`OfferRefused` unless the offer meets every rule of this policy."""
        if not math.isfinite(offer.noise_multiplier) or (
            offer.noise_multiplier < self.min_noise_multiplier
        ):
            raise OfferRefused(
                f"noise multiplier {offer.noise_multiplier} is below the device's floor "
                f"{self.min_noise_multiplier}"
            )
        if offer.min_contributors < self.min_noise_shares:
            raise OfferRefused(
                f"the offer guarantees {offer.min_contributors} noise shares, the device "
                f"needs {self.min_noise_shares}"
            )
        if not 0.0 < offer.clip_norm <= self.max_clip_norm:
            raise OfferRefused(
                f"clipping norm {offer.clip_norm} is outside (0, {self.max_clip_norm}]"
            )
        n = len(offer.node_ids)
        if n > self.max_cohort:
            raise OfferRefused(f"cohort of {n} exceeds the device's maximum {self.max_cohort}")
        full = offer.neighbors is None or offer.neighbors >= n - 1
        group = n if full else offer.neighbors + 1  # type: ignore[operator]
        if offer.threshold <= self.min_threshold_fraction * group:
            raise OfferRefused(
                f"SecAgg threshold {offer.threshold} of a share group of {group} is not "
                f"above the device's minimum fraction {self.min_threshold_fraction}"
            )
        if offer.min_contributors > offer.threshold:
            raise OfferRefused(
                f"{offer.min_contributors} guaranteed noise shares exceed the threshold "
                f"{offer.threshold}: the server could release a sum with fewer"
            )
        if offer.bits < self.min_bits:
            raise OfferRefused(f"a {offer.bits}-bit ring is below the device's {self.min_bits}")
        if self.require_consistency_check and (
            offer.threat_model != protocols.ThreatModel.MALICIOUS_SERVER.value
        ):
            raise OfferRefused(
                "the device requires the malicious-server mode (signed keys and a signed "
                f"consistency check), the server offers {offer.threat_model}"
            )
        if offer.simulation_noise_seed is not None and not self.allow_simulation_noise:
            raise OfferRefused(
                "the server asks for seeded simulation noise, which is not secure; the "
                "device's policy does not allow it"
            )
