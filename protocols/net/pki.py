"""Local certificates and the client-key registry (pyca ``cryptography``).

:func:`make_local_pki` writes what a deployment on hosts you control needs: a CA, a TLS
server certificate for the given names/IPs, optional TLS client certificates (mutual TLS),
one Ed25519 identity key per client and the registry of their public keys that the server
loads. Identity keys are the PKI of the malicious-server model: the server accepts a
client's messages only when signed by the key registered for that client id. Private keys
are written with mode 0600. User-provided certificates work the same way: the server and
client only read PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import secagg
from protocols.errors import ConfigError

__all__ = [
    "LocalPKI",
    "load_identity_key",
    "load_registry",
    "make_local_pki",
    "write_identity_key",
]

_REGISTRY_VERSION = 1


@dataclass(frozen=True)
class LocalPKI:
    """Paths written by :func:`make_local_pki`."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    registry: Path
    client_keys: tuple[Path, ...]
    client_certs: tuple[tuple[Path, Path], ...]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:  # noqa: PERF203 - a host is an IP or a DNS name
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _issue(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    *,
    days: int,
    ca: bool,
    hosts: Sequence[str] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if hosts:
        builder = builder.add_extension(_san(hosts), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def write_identity_key(path: Path) -> bytes:
    """Create an Ed25519 identity key at ``path`` (PEM, 0600); return its public bytes."""
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(path, _pem_key(key))
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_identity_key(path: str | Path) -> secagg.SigningKey:
    """Read a client's Ed25519 identity key (PEM PKCS#8, unencrypted)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key")
    return secagg.SigningKey(key)


def load_registry(path: str | Path) -> dict[int, bytes]:
    """Client id -> Ed25519 public key, from a registry JSON file written by privagg certs."""
    try:
        data = json.loads(Path(path).read_text())
        clients = data["clients"]
        if data.get("version") != _REGISTRY_VERSION or not isinstance(clients, dict):
            raise ValueError
        registry = {int(cid): bytes.fromhex(hexkey) for cid, hexkey in clients.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{path} is not a privagg client registry (version 1)") from None
    if any(len(key) != 32 or cid < 0 for cid, key in registry.items()):
        raise ConfigError(f"{path}: every entry must be a 32-byte Ed25519 public key")
    return registry


def _write_registry(path: Path, keys: Mapping[int, bytes]) -> None:
    clients = {str(cid): key.hex() for cid, key in sorted(keys.items())}
    path.write_text(json.dumps({"version": _REGISTRY_VERSION, "clients": clients}, indent=1))


def make_local_pki(
    out_dir: str | Path,
    *,
    num_clients: int,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    client_certs: bool = False,
    days: int = 30,
) -> LocalPKI:
    """Write a CA, a server certificate for ``hosts``, ``num_clients`` identity keys and the
    registry (and TLS client certificates when ``client_certs``) into ``out_dir``."""
    if num_clients < 1 or not hosts:
        raise ConfigError("need at least one client and one host name")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "privagg local CA")])
    ca = _issue("privagg local CA", ca_key.public_key(), ca_name, ca_key, days=days, ca=True)
    ca_path = out / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "ca.key", _pem_key(ca_key))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue(
        "privagg aggregation server",
        server_key.public_key(),
        ca_name,
        ca_key,
        days=days,
        ca=False,
        hosts=hosts,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    (out / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "server.key", _pem_key(server_key))
    keys: dict[int, bytes] = {}
    key_paths: list[Path] = []
    tls_pairs: list[tuple[Path, Path]] = []
    for cid in range(num_clients):
        path = out / f"client-{cid}.key"
        keys[cid] = write_identity_key(path)
        key_paths.append(path)
        if client_certs:
            tls_key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue(
                f"privagg client {cid}",
                tls_key.public_key(),
                ca_name,
                ca_key,
                days=days,
                ca=False,
                usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            )
            cert_path, tls_key_path = out / f"client-{cid}.pem", out / f"client-{cid}-tls.key"
            cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            _write_private(tls_key_path, _pem_key(tls_key))
            tls_pairs.append((cert_path, tls_key_path))
    registry = out / "registry.json"
    _write_registry(registry, keys)
    return LocalPKI(
        ca_path,
        out / "server.pem",
        out / "server.key",
        registry,
        tuple(key_paths),
        tuple(tls_pairs),
    )
