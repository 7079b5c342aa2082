"""``privagg certs``: a local CA, a TLS server certificate, client identity keys, registry.

For deployments on machines you control. Writes ``ca.pem`` (give it to every client),
``server.pem``/``server.key`` (the server), ``client-<i>.key`` (client i's Ed25519 identity
key; give each to its device only) and ``registry.json`` (the public identity keys the
server loads). ``--client-certs`` also writes TLS client certificates for mutual TLS.
Certificates from your own CA work too: ``privagg serve`` and ``privagg client`` only read
PEM files.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "certs",
        help="create a local CA, server certificate, client identity keys and registry",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--clients", type=int, required=True, metavar="N")
    parser.add_argument(
        "--host",
        action="append",
        metavar="NAME_OR_IP",
        help="name or IP the server certificate is valid for (repeatable; "
        "default: 127.0.0.1 and localhost)",
    )
    parser.add_argument("--client-certs", action="store_true", help="also issue mTLS certs")
    parser.add_argument("--days", type=int, default=30, help="validity (default: 30)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from protocols.net.pki import make_local_pki

    hosts = tuple(args.host) if args.host else ("127.0.0.1", "localhost")
    pki = make_local_pki(
        args.out,
        num_clients=args.clients,
        hosts=hosts,
        client_certs=args.client_certs,
        days=args.days,
    )
    print(f"CA certificate      {pki.ca_cert}")
    print(f"server certificate  {pki.server_cert} (valid for {', '.join(hosts)})")
    print(f"server key          {pki.server_key}")
    print(f"client registry     {pki.registry} ({len(pki.client_keys)} identity keys)")
    if pki.client_certs:
        print(f"mTLS client certs   {len(pki.client_certs)} in {args.out}")
    return 0
