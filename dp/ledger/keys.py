"""The server's ledger signing key: load it, or generate it once, outside the published run.

The key is an Ed25519 private key in an unencrypted PKCS#8 PEM file readable by its owner
only (mode 0600). Beside it, ``<key>.pub`` holds the raw public key in hex: what the
operator publishes and an auditor pins (``privagg audit --public-key``). A run folder that
is published must never contain the private key, so the default key lives in the user's
configuration folder (``$XDG_CONFIG_HOME/privagg/``, else ``~/.config/privagg/``), one
server identity for every run (:func:`default_key_path`), and a key inside the published
folder is refused.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from dp.errors import LedgerError
from dp.ledger.schema import key_fingerprint, public_key_hex

DEFAULT_KEY_NAME = "ledger-key.pem"


@dataclass(frozen=True)
class LedgerKey:
    """A loaded signing key, where it lives and whether it was just generated."""

    key: Ed25519PrivateKey
    path: Path
    generated: bool

    @property
    def public_hex(self) -> str:
        return public_key_hex(self.key)

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.public_hex)


def default_key_path() -> Path:
    """The default key file: ``privagg/ledger-key.pem`` in the user's configuration folder."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "privagg" / DEFAULT_KEY_NAME


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PKCS#8 PEM); ``LedgerError`` with the reason otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LedgerError(f"cannot read the signing key {path}: {exc.strerror or exc}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise LedgerError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LedgerError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def generate_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (mode 0600, never overwriting) and ``<path>.pub``.

    The key is written to a private temporary file and linked into place, so a reader never
    sees a half-written key and, of two runs generating at once, exactly one key wins
    (:func:`resolve_signing_key` then loads the winner's)."""
    path = Path(path)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, staging = tempfile.mkstemp(prefix=".ledger-key-", dir=path.parent)
    except OSError as exc:
        raise LedgerError(
            f"cannot create the ledger signing key {path}: {exc.strerror or exc} "
            "(give --signing-key FILE, or --unsigned)"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp creates it with mode 0600
            fh.write(pem)
        try:
            os.link(staging, path)
        except FileExistsError:
            raise LedgerError(f"{path} already exists; not overwriting a key") from None
    finally:
        os.unlink(staging)
    Path(str(path) + ".pub").write_text(public_key_hex(key) + "\n", encoding="utf-8")
    return key


def resolve_signing_key(path: str | Path | None, out_dir: str | Path | None) -> LedgerKey:
    """The key a run signs its ledger with: ``path`` if given (it must exist: a mistyped
    path never silently becomes a new key), else :func:`default_key_path`, generated on
    first use. A key inside ``out_dir`` (the folder that gets published, if any) is
    refused."""
    key_path = Path(path) if path is not None else default_key_path()
    if out_dir is not None and _inside(key_path, Path(out_dir)):
        raise LedgerError(
            f"the signing key {key_path} would be inside the published run folder {out_dir}; "
            "keep it outside"
        )
    if key_path.exists() or path is not None:
        return LedgerKey(load_signing_key(key_path), key_path, generated=False)
    try:
        return LedgerKey(generate_signing_key(key_path), key_path, generated=True)
    except LedgerError:
        if not key_path.exists():
            raise
        # another run generated the default key first: sign with that one
        return LedgerKey(load_signing_key(key_path), key_path, generated=False)
