"""Context: the user data an instance boots with, and the meta data that goes with it.

CernVM reads several dialects from one user-data blob: cloud-init's
``#cloud-config``, amiconfig's ``[amiconfig]``/``[cernvm]`` sections and the
bootloader's ``[ucernvm-begin] ... [ucernvm-end]`` block. More than one part is
combined as MIME multipart with 7-bit text parts, which every reader accepts.
How the blob reaches the instance (seed ISO, EC2 UserData, ...) is the provider's job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

RUN_KEYS = "cvmfx:run-keys"
"""Stands, in a ``users:`` entry's ``ssh_authorized_keys`` of a test's cloud-config, for the run's SSH public keys
(known only when the instance is launched): a scenario's context can create a user who logs in with the run's key."""


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, the way cloud-config examples are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


@dataclass(frozen=True)
class UserData:
    """What a test asks for on top of the harness's own context (from the ``cernvm_context`` marker)."""

    cloud_config: Mapping[str, Any] = field(default_factory=dict)
    ucernvm: Mapping[str, str] = field(default_factory=dict)
    amiconfig: str = ""
    raw: str = ""

    @property
    def key(self) -> str:
        """Stable short hash: instances booted with equal user data are shared."""
        blob = json.dumps(
            [dict(self.cloud_config), dict(self.ucernvm), self.amiconfig, self.raw], sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def __bool__(self) -> bool:
        return bool(self.cloud_config or self.ucernvm or self.amiconfig or self.raw)


@dataclass(frozen=True, repr=False)
class HostKey:
    """An SSH host key pair the harness makes for one instance and hands over in its cloud-config ``ssh_keys``.

    cloud-init (and the test appliance) install it as the instance's host key, so the harness knows the key to
    expect before the instance boots, on every target, whether or not its console can be read. The cost: the
    private half travels in the user data, so whoever can read the instance's user data (its metadata service,
    the cloud account, the context ISO on this host) could impersonate the instance to this harness.
    """

    private: str
    """OpenSSH private key file content (``-----BEGIN OPENSSH PRIVATE KEY-----``)."""
    public: str
    """``ssh-ed25519 AAAA...``"""

    @classmethod
    def generate(cls) -> HostKey:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return cls(private.decode(), public.decode())

    def __repr__(self) -> str:
        return f"HostKey({self.public!r})"


class _Literal(str):
    """A string the cloud-config shows as a YAML block scalar (``|``), as cloud-init's examples write keys."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


_Dumper.add_representer(_Literal, _literal)


@dataclass(frozen=True)
class Context:
    """The full context of one instance: its name, the run's SSH key and the requested user data."""

    hostname: str
    ssh_keys: tuple[str, ...] = ()
    user_data: UserData = UserData()
    host_key: HostKey | None = None
    """The instance's SSH host key, made by the harness (target key ``host_key = "context"``)."""

    def cloud_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"hostname": self.hostname}
        if self.ssh_keys:
            config["ssh_authorized_keys"] = list(self.ssh_keys)
        if self.host_key is not None:
            # cloud-init's cc_ssh writes these as /etc/ssh/ssh_host_ed25519_key{,.pub}
            config["ssh_keys"] = {
                "ed25519_private": _Literal(self.host_key.private),
                "ed25519_public": self.host_key.public,
            }
        config.update(self.user_data.cloud_config)
        if isinstance(config.get("users"), list):
            config["users"] = [self._with_run_keys(user) for user in config["users"]]
        return config

    def _with_run_keys(self, user: Any) -> Any:
        """A ``users:`` entry with :data:`RUN_KEYS` in its ``ssh_authorized_keys`` replaced by the run's keys."""
        keys = user.get("ssh_authorized_keys") if isinstance(user, Mapping) else None
        if not isinstance(keys, list) or RUN_KEYS not in keys:
            return user
        wanted = [k for key in keys for k in (self.ssh_keys if key == RUN_KEYS else (key,))]
        return {**user, "ssh_authorized_keys": wanted}

    def parts(self) -> list[tuple[str, str]]:
        """(MIME subtype, text) of every part, harness's cloud-config first."""
        found = [("cloud-config", "#cloud-config\n" + yaml.dump(self.cloud_config(), Dumper=_Dumper, sort_keys=False))]
        if self.user_data.ucernvm:
            lines = "".join(f"{k}={v}\n" for k, v in self.user_data.ucernvm.items())
            found.append(("ucernvm", f"[ucernvm-begin]\n{lines}[ucernvm-end]\n"))
        if self.user_data.amiconfig:
            found.append(("amiconfig-user-data", self.user_data.amiconfig))
        if self.user_data.raw:
            found.append(("plain", self.user_data.raw))
        return found

    def render(self) -> bytes:
        """The user-data blob: a single cloud-config, or MIME multipart when there is more."""
        parts = self.parts()
        if len(parts) == 1:
            return parts[0][1].encode()
        message = MIMEMultipart(boundary="==cernvm-fixtures-" + hashlib.sha256(repr(parts).encode()).hexdigest()[:16])
        for subtype, text in parts:
            message.attach(MIMEText(text, subtype, "us-ascii"))
        return message.as_bytes()

    def meta_data(self) -> dict[str, str]:
        return {"instance-id": self.hostname, "local-hostname": self.hostname}
