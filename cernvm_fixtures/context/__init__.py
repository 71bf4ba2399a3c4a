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


@dataclass(frozen=True)
class Context:
    """The full context of one instance: its name, the run's SSH key and the requested user data."""

    hostname: str
    ssh_keys: tuple[str, ...] = ()
    user_data: UserData = UserData()

    def cloud_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"hostname": self.hostname}
        if self.ssh_keys:
            config["ssh_authorized_keys"] = list(self.ssh_keys)
        config.update(self.user_data.cloud_config)
        return config

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
