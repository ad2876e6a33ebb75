"""TLS certificates as dockyard sees them: an owner's PEM checked against its key, and
the certificate a router really serves for a name (read over a TLS handshake with SNI).

Parsing uses the ``openssl`` command (Debian's, always present with Python's ssl) rather
than a new library: dockyard only needs the subject, the names and the expiry date.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard.domain.records import DomainRecord
from dockyard.errors import ValidationFailed


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    not_after: datetime
    names: frozenset[str]

    def covers(self, host: str) -> bool:
        if host in self.names:
            return True
        parent = host.partition(".")[2]
        return bool(parent) and f"*.{parent}" in self.names


def describe(pem: str) -> CertificateInfo:
    """Subject, issuer, expiry and DNS names of the first certificate in ``pem``."""
    out = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-subject",
            "-issuer",
            "-enddate",
            "-ext",
            "subjectAltName",
            "-nameopt",
            "RFC2253",
        ],
        input=pem,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if out.returncode != 0:
        raise ValueError(f"not a PEM certificate: {out.stderr.strip()[:200]}")
    fields: dict[str, str] = {}
    names: set[str] = set()
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("subject", "issuer", "notAfter"):
            fields[key] = value.strip()
        for part in line.split(","):
            part = part.strip()
            if part.startswith("DNS:"):
                names.add(part[4:].lower())
    not_after = datetime.strptime(fields["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
    return CertificateInfo(
        subject=fields.get("subject", ""),
        issuer=fields.get("issuer", ""),
        not_after=not_after,
        names=frozenset(names),
    )


def check_pair(*, name: str, tlscert: object, tlskey: object) -> CertificateInfo:
    """The owner's certificate, once it is shown to be PEM, to match its key and to cover
    ``name``; a 422 that says which of these is wrong otherwise."""
    if not isinstance(tlscert, str) or "BEGIN CERTIFICATE" not in tlscert:
        raise ValidationFailed(
            {"tlscert": ["must be a PEM certificate (-----BEGIN CERTIFICATE-----)"]}
        )
    if not isinstance(tlskey, str) or "PRIVATE KEY" not in tlskey:
        raise ValidationFailed(
            {"tlskey": ["must be a PEM private key (-----BEGIN ... PRIVATE KEY-----)"]}
        )
    try:
        info = describe(tlscert)
    except (ValueError, KeyError) as exc:
        raise ValidationFailed({"tlscert": [str(exc)]}) from None
    with tempfile.TemporaryDirectory() as scratch:
        cert_path = os.path.join(scratch, "cert.pem")
        key_path = os.path.join(scratch, "key.pem")
        with open(cert_path, "w") as f:
            f.write(tlscert)
        with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(tlskey)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_path, key_path)
        except ssl.SSLError:
            raise ValidationFailed(
                {
                    "tlskey": [
                        "does not match tlscert (or is encrypted): give the certificate's own unencrypted key"
                    ]
                }
            ) from None
    if not info.covers(name):
        raise ValidationFailed(
            {
                "tlscert": [
                    f"does not cover {name}: it is for {', '.join(sorted(info.names)) or info.subject}"
                ]
            }
        )
    return info


def served_certificate(
    host: str, port: int, server_name: str, *, timeout: float = 2.0
) -> CertificateInfo | None:
    """The certificate ``host:port`` presents for ``server_name``, or None when it presents
    none (no HTTPS there, or the handshake fails or takes longer than ``timeout``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # Read, not trust: this reports what visitors get, whoever issued it.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            contextlib.closing(socket.create_connection((host, port), timeout=timeout)) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    if not der:
        return None
    try:
        return describe(ssl.DER_cert_to_PEM_cert(der))
    except (ValueError, KeyError):
        return None


def inspect_domains(
    records: Sequence[DomainRecord], *, https: tuple[str, int] | None
) -> list[tuple[CertificateInfo | None, CertificateInfo | None]]:
    """For each domain: the certificate served at ``https`` (host, port) for its name, and
    the owner's own certificate. The handshakes run side by side, each bounded, so a
    listing takes one timeout at worst; with ``https`` None nothing is served."""

    def one(record: DomainRecord) -> tuple[CertificateInfo | None, CertificateInfo | None]:
        own = None
        if record.tlscert is not None:
            try:
                own = describe(record.tlscert)
            except (ValueError, KeyError):
                own = None
        served = served_certificate(*https, record.name) if https is not None else None
        return served, own

    if len(records) <= 1:
        return [one(record) for record in records]
    with ThreadPoolExecutor(max_workers=min(8, len(records))) as pool:
        return list(pool.map(one, records))
