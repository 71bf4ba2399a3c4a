"""The ``virtualbox`` target keys, and a CernVM Launch configuration file (``launch_config``) as those keys, so the
suite runs on the machine definition people already launch CernVM with. Validated at load (nothing here runs
VBoxManage)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ...errors import ConfigError
from ..base import ProviderOptions

# --- options ----------------------------------------------------------------------------------------


class VirtualBoxOptions(ProviderOptions):
    """Target keys of the ``virtualbox`` provider (defaults: the documented manual set-up)."""

    vboxmanage: list[str] = []
    """The VBoxManage command (argv); default /usr/lib/virtualbox/VBoxManage, else ``VBoxManage`` on PATH."""
    os_type: str = "Linux26_64"
    """VirtualBox's "Linux 2.6 / 3.x / 4.x (64-bit)", as documented."""
    memory: int = Field(2048, ge=1024, description="MiB (the guide: at least 1 GB, 2 GB suggested)")
    cpus: int = Field(1, ge=1)
    execution_cap: int = Field(100, ge=1, le=100)
    disk_size: int = Field(20, ge=1, description="GiB, dynamically allocated VDI (the guide: at least 20 GB)")
    nic_type: Literal["virtio", "82540EM"] = "virtio"
    """``virtio`` as CernVM Launch sets it (guest driver virtio_net); ``82540EM`` is VirtualBox's default e1000."""
    host_only_adapter: str | None = None
    """An EXISTING host-only interface for adapter 2 (the guide's second adapter); none is ever created."""
    graphical: bool = True
    """Bidirectional clipboard and drag and drop, VBoxSVGA (the guide's set-up; CernVM Launch flag 32)."""
    headless: bool = True
    slowdown: float = Field(1.0, ge=1.0)
    user: str = "root"
    launch_config: str | None = None
    """A CernVM Launch configuration file (``key=value``): its cpus, memory, disk, flags, ... win over the keys here."""

    @field_validator("vboxmanage")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if value and not (shutil.which(value[0]) or Path(value[0]).is_file()):
            raise ValueError(f"{value[0]!r} is not an executable (give the VBoxManage command as a list of words)")
        return value

    @field_validator("launch_config")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Declared last, so the file is checked against every other key (e.g. flag 64 needs host_only_adapter)."""
        if value is not None:
            try:
                LaunchConfig.read(value, "launch_config").apply(cls.model_construct(**info.data))
            except ConfigError as e:
                raise ValueError(str(e).removeprefix("launch_config: ")) from None
        return value

    @model_validator(mode="after")
    def _launch_config(self) -> VirtualBoxOptions:
        """A CernVM Launch file is read when the config loads, so its errors come before anything is created."""
        if self.launch_config is None:
            return self
        try:
            applied = LaunchConfig.read(self.launch_config, "launch_config").apply(self)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        for key in ("cpus", "memory", "execution_cap", "disk_size", "headless", "graphical"):
            object.__setattr__(self, key, getattr(applied, key))
        return self


LAUNCH_KEYS = {
    "name",
    "apiPort",
    "cernvmVersion",
    "cpus",
    "memory",
    "disk",
    "diskPath",
    "diskURL",
    "diskChecksum",
    "sharedFolder",
    "executionCap",
    "flags",
}
"""Keys of a CernVM Launch configuration file (cernvm-launch's defaults and README)."""
FLAG_HEADFUL, FLAG_GRAPHICAL, FLAG_DUAL_NIC = 16, 32, 64
"""libcernvm's HVF_HEADFUL, HVF_GRAPHICAL and HVF_DUAL_NIC session flags."""


@dataclass(frozen=True)
class LaunchConfig:
    """A CernVM Launch machine definition, as the options it maps to."""

    values: Mapping[str, str]
    origin: str

    @classmethod
    def read(cls, path: str, where: str) -> LaunchConfig:
        """Parse ``key=value`` lines (``#`` comments); unknown keys are errors naming what is valid."""
        file = Path(path).expanduser()
        try:
            text = file.read_text()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read CernVM Launch config {path!r}: {e.strerror}") from None
        values: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or key not in LAUNCH_KEYS:
                raise ConfigError(
                    f"{file}:{number}: {line!r} is not a CernVM Launch setting; "
                    f"valid keys: {', '.join(sorted(LAUNCH_KEYS))}"
                )
            values[key] = value.strip()
        return cls(values, str(file))

    def integer(self, key: str, default: int) -> int:
        raw = self.values.get(key)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{self.origin}: {key}={raw!r} is not a whole number") from None

    def apply(self, options: VirtualBoxOptions) -> VirtualBoxOptions:
        """The options with this machine definition's values (Launch's disk is in MB, ours in GiB)."""
        flags = self.integer("flags", 49)
        disk_mb = self.integer("disk", options.disk_size * 1024)
        update = {
            "cpus": self.integer("cpus", options.cpus),
            "memory": self.integer("memory", options.memory),
            "execution_cap": self.integer("executionCap", options.execution_cap),
            "disk_size": max(1, -(-disk_mb // 1024)),
            "headless": not flags & FLAG_HEADFUL,
            "graphical": bool(flags & FLAG_GRAPHICAL),
        }
        if flags & FLAG_DUAL_NIC and not options.host_only_adapter:
            raise ConfigError(
                f"{self.origin}: flags={flags} asks for a host-only second adapter (64); "
                "name an existing host-only interface in the target's host_only_adapter"
            )
        try:
            return VirtualBoxOptions.model_validate({**options.model_dump(), **update, "launch_config": None})
        except ValueError as e:
            raise ConfigError(f"{self.origin}: {e}") from None
