"""The ``azure`` target keys, validated at load time (nothing here talks to Azure), and the X.509 certificate CernVM's
Azure recipe makes from the user's SSH key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ...dirs import write_once
from ..base import RemoteOptions, SshCidr
from ..kit import FIELD_PREFIX
from .tags import OUR_TAGS

RESERVED_USERS = {
    "administrator",
    "admin",
    "user",
    "user1",
    "test",
    "user2",
    "test1",
    "user3",
    "admin1",
    "1",
    "123",
    "a",
    "actuser",
    "adm",
    "admin2",
    "aspnet",
    "backup",
    "console",
    "david",
    "guest",
    "john",
    "owner",
    "root",
    "server",
    "sql",
    "support",
    "support_388945a0",
    "sys",
    "test2",
    "test3",
    "user4",
    "user5",
}
"""Admin user names Azure refuses for Linux VMs."""


class AzureOptions(RemoteOptions):
    """Target keys of the ``azure`` provider. The generic ``image`` key is an image id or a local ``.vhd``."""

    subscription: str | None = None
    """Subscription id; default: AZURE_SUBSCRIPTION_ID from the environment."""
    location: str = "westeurope"
    resource_group: str | None = None
    """An existing resource group (only our own resources in it are deleted); default: one per machine, deleted."""
    vm_size: str = "Standard_D2s_v3"
    """A trait of the instance (profiles may vary by it); eth0 is the synthetic hv_netvsc NIC on every size."""
    storage_account: str | None = None
    """Storage account a local ``.vhd`` image is uploaded to (needed when ``image`` is a file)."""
    container: str = "cernvm-images"
    blob_endpoint: str | None = None
    """The blob service URL; default ``https://<storage_account>.blob.core.windows.net`` (tests: an emulator)."""
    endpoint: str | None = None
    """Another Azure Resource Manager endpoint (a sovereign cloud, or a local fake in tests)."""
    instance_discovery: bool = True
    """Microsoft Entra instance discovery; false for an authority it does not know (Azure Stack, a test endpoint)."""
    subnet_id: str | None = None
    """An existing subnet to attach the NIC to; default: a virtual network with one subnet per machine."""
    vnet_cidr: str = "10.77.0.0/16"
    ssh_cidr: SshCidr
    """The runner's own public address (``203.0.113.7/32``): the NSG admits tcp/22 from it alone."""
    address: Literal["public", "private"] = "public"
    admin_user: str = "cernvm"
    """The VM's admin account (Azure requires one; it gets the run's key, no password)."""
    tags: dict[str, str] = {}
    slowdown: float = Field(5.0, ge=1.0)
    share_timeout: float = Field(3600.0, gt=0)
    """Seconds a launch waits for another machine's upload or image of the same VHD before giving up."""
    ssh_certificate: str | None = None
    """An X.509 certificate made from your SSH key, as CernVM's Azure recipe has it (``openssl req -x509 -new
    -key ~/.ssh/id_rsa -out cert.pem``): the admin user gets the certificate's public key (RSA, 2048 bits or more),
    not the run's own RSA key."""
    ssh_key: str | None = Field(None, validate_default=True)
    """The unencrypted private key ``ssh_certificate`` was made from; the harness logs in with it."""

    @field_validator("admin_user")
    @classmethod
    def _admin(cls, value: str) -> str:
        if value.lower() in RESERVED_USERS or not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", value):
            raise ValueError(
                "a Linux user name of 1-32 lowercase letters, digits, _ and - that Azure does not "
                "reserve (root, admin, administrator, ... are refused)"
            )
        return value

    @field_validator("endpoint", "blob_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https://[^\s/]+", value):
            raise ValueError("an https:// URL (Azure's clients send bearer tokens over HTTPS only)")
        return value.rstrip("/") if value else value

    @field_validator("ssh_certificate")
    @classmethod
    def _certificate(cls, value: str | None) -> str | None:
        if value is not None:
            certificate_public_key(value)
        return value

    @field_validator("ssh_key")
    @classmethod
    def _certificate_key(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "ssh_certificate" not in info.data:
            return value  # the certificate itself was refused; that error says enough
        certificate = info.data["ssh_certificate"]
        if certificate is None and value is not None:
            raise ValueError("no ssh_key without ssh_certificate (the certificate made from this key)")
        if certificate is not None and value is None:
            raise ValueError("the private key ssh_certificate was made from (the harness logs in with it)")
        if certificate is not None and value is not None:
            certificate_public_key(certificate, value)
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        if len(value) > 50 - OUR_TAGS:
            problems.append(
                f"{len(value)} tags, at most {50 - OUR_TAGS} (Azure allows 50, cernvm-fixtures sets up to {OUR_TAGS})"
            )
        for key, text in value.items():
            if not 1 <= len(key) <= 512 or re.search(r"[<>%&\\?/]", key):
                problems.append(f"name {key!r}: 1-512 characters without < > % & \\ ? /")
            if len(text) > 256:
                problems.append(f"value of {key!r} is {len(text)} characters, Azure allows 256")
            if key.lower().startswith((FIELD_PREFIX, "azure", "microsoft", "windows")):
                problems.append(f"name {key!r} is reserved (by Azure or cernvm-fixtures)")
        if problems:
            raise ValueError("valid Azure tags: " + "; ".join(problems))
        return value


RSA_BITS = 3072
"""The admin key's size when the run makes one (Azure takes at least 2048; 3072 is ssh-keygen's default)."""
KEY_RULE = "at least 2048-bit and in ssh-rsa format"
"""Azure's rule for an admin SSH key, in the words of the SDK's SshPublicKey.key_data docstring."""


def run_admin_key(directory: Path, comment: str) -> tuple[Path, str]:
    """(private key file, OpenSSH public key line) of a run's Azure admin key: RSA of RSA_BITS bits, made once in
    ``directory`` (0600, first writer wins, as the run's own key), since Azure refuses the run's Ed25519 key."""

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = directory / "id_rsa"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        write_once(path, private)
    key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return path, f"{public.decode()} {comment}"


def certificate_public_key(certificate: str, key: str | None = None) -> str:
    """The OpenSSH public key an X.509 certificate holds (RSA of 2048 bits or more: what Azure takes), checked
    against ``key``, the private key it was made from, which the SSH transport must read. Problems are ValueErrors
    saying what was expected."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    cert_path = Path(certificate).expanduser()
    try:
        raw = cert_path.read_bytes()
    except OSError as e:
        raise ValueError(f"a readable certificate file ({cert_path}: {e.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificate(raw) if b"-----BEGIN" in raw else x509.load_der_x509_certificate(raw)
    except ValueError:
        raise ValueError(
            f"an X.509 certificate (PEM or DER) made from your SSH key, e.g. with openssl req -x509 -new "
            f"-key ~/.ssh/id_rsa -out cert.pem ({cert_path} is none)"
        ) from None
    public = cert.public_key()
    held = f"{public.key_size}-bit RSA" if isinstance(public, rsa.RSAPublicKey) else type(public).__name__
    if not (isinstance(public, rsa.RSAPublicKey) and public.key_size >= 2048):
        raise ValueError(f"a certificate of an RSA key of 2048 bits or more: Azure's rule is {KEY_RULE!r} ({held} key)")
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    if key is not None:
        _check_private_key(Path(key).expanduser(), line, cert_path)
    return line


def _check_private_key(key_path: Path, public_line: str, cert_path: Path) -> None:
    import paramiko

    try:
        private = paramiko.PKey.from_path(key_path)
    except OSError as e:
        raise ValueError(f"a readable private key file ({key_path}: {e.strerror})") from None
    except (paramiko.PasswordRequiredException, TypeError):  # TypeError: cryptography's "no password given"
        raise ValueError(f"an unencrypted private key ({key_path} is encrypted; it is only read)") from None
    except (paramiko.SSHException, ValueError):
        raise ValueError(
            f"a private key in OpenSSH or PEM format ({key_path} is not; ssh-keygen -p -f KEY rewrites it)"
        ) from None
    if public_line.split()[1] != private.get_base64():
        raise ValueError(f"the private key {cert_path} was made from (their public keys differ)")
