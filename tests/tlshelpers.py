"""Certificates for tests, made with the ``openssl`` command."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, name: str, *, days: int = 30) -> tuple[str, str]:
    """A certificate for ``name`` (and its key), both PEM text."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(days),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_text(), key.read_text()


def ca_and_leaf(directory: Path, *names: str) -> tuple[Path, Path, Path]:
    """A CA (its cert file) and a leaf certificate for ``names`` signed by it (cert and
    key files): what a test server presents on its HTTPS port."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
    leaf_cert, leaf_key, csr = (
        directory / "leaf.pem",
        directory / "leaf.key",
        directory / "leaf.csr",
    )
    ext = directory / "leaf.ext"
    ext.write_text(
        "subjectAltName="
        + ",".join(f"IP:{n}" if n.replace(".", "").isdigit() else f"DNS:{n}" for n in names)
        + "\n"
    )
    run = ["openssl"]
    subprocess.run(
        [
            *run,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(ca_key),
            "-out",
            str(ca_cert),
            "-days",
            "2",
            "-subj",
            "/CN=dockyard test CA",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run,
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(leaf_key),
            "-out",
            str(csr),
            "-subj",
            f"/CN={names[0]}",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(leaf_cert),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ],
        check=True,
        capture_output=True,
    )
    return ca_cert, leaf_cert, leaf_key
