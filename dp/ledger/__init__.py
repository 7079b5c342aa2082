"""The privacy ledger: an append-only, tamper-evident, signed record of every round's cost.

Three modules, one job each: :mod:`dp.ledger.schema` (what a row and the metadata hold,
how they are hashed and signed, and how a release was made), :mod:`dp.ledger.store` (the
SQLite file: create, append, reopen) and :mod:`dp.ledger.audit` (verification against
pinned keys and a published head, replay, consistency and provenance checks).

Dropouts: for distributed mechanisms the charged event uses n = min(planned minimum,
survivors) noise contributors (:func:`dp.charging.charged_event`), so a round whose realized
noise is below plan is charged for what really happened and flagged ``below_plan``.
"""

from dp.charging import charged_event
from dp.ledger.audit import (
    AuditReport,
    Finding,
    PublishedHead,
    RoundCheck,
    audit_ledger,
    parse_expected_head,
    parse_public_key,
    publish_line,
    read_trusted_keys,
)
from dp.ledger.schema import (
    ADJACENCIES,
    ADJACENCY_DESCRIPTIONS,
    AGGREGATIONS,
    NOISE_SOURCES,
    SCHEMA,
    STATUSES,
    THREAT_MODELS,
    LedgerEntry,
    LedgerMeta,
    LedgerSigner,
    Provenance,
    Signer,
    canonical_bytes,
    entry_from_row,
    head_message,
    key_fingerprint,
    participants_digest,
    public_key_hex,
    sha256_hex,
)
from dp.ledger.store import PrivacyLedger, connect_readonly, read_entries, read_meta

__all__ = [
    "ADJACENCIES",
    "ADJACENCY_DESCRIPTIONS",
    "AGGREGATIONS",
    "NOISE_SOURCES",
    "SCHEMA",
    "STATUSES",
    "THREAT_MODELS",
    "AuditReport",
    "Finding",
    "LedgerEntry",
    "LedgerMeta",
    "LedgerSigner",
    "PrivacyLedger",
    "Provenance",
    "PublishedHead",
    "RoundCheck",
    "Signer",
    "audit_ledger",
    "canonical_bytes",
    "charged_event",
    "connect_readonly",
    "entry_from_row",
    "head_message",
    "key_fingerprint",
    "parse_expected_head",
    "parse_public_key",
    "participants_digest",
    "public_key_hex",
    "publish_line",
    "read_entries",
    "read_meta",
    "read_trusted_keys",
    "sha256_hex",
]
