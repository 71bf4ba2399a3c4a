"""X.509 certificates made from an SSH key, as CernVM's Azure recipe has users make them with openssl."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path


def make_certificate(
    directory: Path, bits: int = 2048, *, key_from: Path | None = None, ed25519: bool = False
) -> tuple[Path, Path]:
    """(certificate, private key): an RSA key (``ed25519``: an Ed25519 key) written in PEM and a self-signed
    certificate made from it, what ``openssl req -x509 -new -key id_rsa -out cert.pem`` makes. ``key_from``: sign
    another key file instead."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519 as ed
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "id_rsa"
    if key_from is None:
        key = ed.Ed25519PrivateKey.generate() if ed25519 else rsa.generate_private_key(65537, bits)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8 if ed25519 else serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    else:
        key = serialization.load_pem_private_key(key_from.read_bytes(), None)  # type: ignore[assignment]
        key_path = key_from
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cernvm-fixtures test")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, None if ed25519 else hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
