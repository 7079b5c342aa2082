"""privagg inside Flower: distributed DP and SecAgg(+) as a ClientApp mod and a fit workflow.

Three lines change in a Flower app that used Flower's SecAgg+::

    from privagg.flower import PrivaggWorkflow, privagg_mod
    app = ClientApp(client_fn=client_fn, mods=[privagg_mod])      # was secaggplus_mod
    DefaultWorkflow(fit_workflow=PrivaggWorkflow(clip_norm=1.0, noise_multiplier=1.0,
                                                 ledger=ledger))  # was SecAggPlusWorkflow

The device clips, DP-encodes and masks its update with privagg's own client
(:class:`protocols.SecAggClient`) after checking the server's offer against its
:class:`DevicePolicy`; the server drives :class:`protocols.SecAggServer` over Flower's
messages and charges every round in a :class:`dp.ledger.PrivacyLedger`. Needs
``pip install 'privagg[flower]'``; see docs/FLOWER.md.
"""

from privagg.flower.client_mod import PrivaggMod, SessionLost, flat_update, privagg_mod
from privagg.flower.offer import RoundOffer, model_digest, simulation_noise_seed
from privagg.flower.policy import DevicePolicy, OfferRefused
from privagg.flower.simulation import backend_config, dropout_mod
from privagg.flower.workflow import (
    NEIGHBOURING_RELATION,
    PrivaggWorkflow,
    RoundReport,
    apply_mean_update,
)

__all__ = [
    "NEIGHBOURING_RELATION",
    "DevicePolicy",
    "OfferRefused",
    "PrivaggMod",
    "PrivaggWorkflow",
    "RoundOffer",
    "RoundReport",
    "SessionLost",
    "apply_mean_update",
    "backend_config",
    "dropout_mod",
    "flat_update",
    "model_digest",
    "privagg_mod",
    "simulation_noise_seed",
]
