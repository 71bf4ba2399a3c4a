"""Copied beside the conftest of a scenario run through stand-ins (and imported there): one KVM stand-in per
cloud instance, booted from the user data the cloud's fake or emulator holds for that instance, reached on
127.0.0.1 and destroyed when the session ends. What a stand-in prints on its console can be sent to where the
fake serves the instance's console, so the provider reads the host keys from there as on the real cloud, and its
screen named to the fake that serves the instance's screenshot."""

from __future__ import annotations

import email
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from cernvm_fixtures import config
from cernvm_fixtures.context import Context
from cernvm_fixtures.providers.kvm import KvmProvider
from cernvm_fixtures.run import Run

DEADLINES = {"running": 120, "reachable": 300, "login": 120, "ready": 120}
"""TCG on a shared 2-core machine."""


@dataclass(frozen=True)
class UserData(Context):
    """A context that renders to the user data the cloud holds for the instance, byte for byte."""

    blob: bytes = b""

    def render(self) -> bytes:
        return self.blob


def cloud_config(blob: bytes) -> dict:
    """The ``#cloud-config`` part of user data (plain or MIME multipart)."""
    message = email.message_from_bytes(blob)
    parts = [p.get_payload(decode=True) for p in message.walk() if not p.is_multipart()]
    for part in parts if message.is_multipart() else [blob]:
        if part.startswith(b"#cloud-config"):
            return yaml.safe_load(part)
    raise AssertionError("the user data the cloud holds has no cloud-config part")


class StandIns:
    """The stand-ins of one provider's instances. ``user_data(machine, host)`` reads what the cloud holds for an
    instance (and may check what a real instance would check); ``booted(machine, standin)`` runs once its
    stand-in is up (e.g. to serve its console as the instance's)."""

    def __init__(
        self,
        provider: str,
        user_data: Callable[[Any, str], bytes],
        booted: Callable[[Any, Any], None] | None = None,
    ) -> None:
        self.provider, self.user_data, self.booted = provider, user_data, booted
        self.standins: dict[str, Any] = {}
        self.run: Run | None = None
        self.stop = threading.Event()

    def endpoint(self, machine: Any, host: str) -> tuple[str, int] | None:
        """Where SSH to ``machine`` goes: its stand-in's 127.0.0.1 forward (booted on first use)."""
        if machine.provider.name != self.provider:
            return None
        if machine.name not in self.standins:
            self.standins[machine.name] = self.boot(machine, host)
            with open("standins.log", "a") as log:
                print(machine.name, host, "->", self.standins[machine.name].name, file=log)
        return "127.0.0.1", self.standins[machine.name].ssh_port

    def boot(self, machine: Any, host: str) -> Any:
        blob = self.user_data(machine, host)
        if self.run is None:
            self.run = Run()
        # the serial console of CernVM's cloud images (hvm, tar.gz, vhd: console=ttyS0), which the fakes serve
        raw = {
            "standin": {
                "provider": "kvm",
                "domain_type": "qemu",
                "deadlines": DEADLINES,
                "boot": "kernel",
                "kernel_args": "console=ttyS0",
            }
        }
        target = config.parse({"targets": raw}, f"{self.provider} stand-in").targets["standin"]
        provider = KvmProvider(target, self.run)
        standin = provider.machine(self.run.name("standin"))
        try:
            provider.launch(standin, UserData(hostname=cloud_config(blob)["hostname"], blob=blob))
        except BaseException:
            standin.destroy()
            raise
        if self.booted is not None:
            self.booted(machine, standin)
        return standin

    def forward_console(self, standin: Any, url: str) -> None:
        """Send what the stand-in's console gains to ``url`` (a fake's test hook) until the session ends."""
        threading.Thread(target=forward_console, args=(standin, url, self.stop), daemon=True).start()

    @staticmethod
    def name_screen(standin: Any, url: str) -> None:
        """Tell a fake (its test hook ``url``) which libvirt domain's screen is the instance's: the fake takes the
        stand-in's screenshot itself whenever the cloud's screenshot call asks for it."""
        request = urllib.request.Request(url, data=standin.name.encode(), method="POST")
        urllib.request.urlopen(request, timeout=10).read()

    def finish(self) -> None:
        self.stop.set()
        while self.standins:
            self.standins.popitem()[1].destroy()
        if self.run is not None:
            self.run.finish()


def forward_console(standin: Any, url: str, stop: threading.Event) -> None:
    """POST what the stand-in's console file gains to ``url`` until ``stop`` is set or the instance is gone."""
    sent = 0
    while not stop.is_set():
        data = standin.console_file.read_bytes() if standin.console_file.exists() else b""
        if len(data) > sent:
            try:
                urllib.request.urlopen(urllib.request.Request(url, data=data[sent:], method="POST"), timeout=10).read()
            except urllib.error.HTTPError:
                return
            sent = len(data)
        stop.wait(0.3)
