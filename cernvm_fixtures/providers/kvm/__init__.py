"""KVM through libvirt: the documented CernVM domain layout, reached over a 127.0.0.1 port forward.

Layout (from the CernVM "How to run on KVM" guide): hvm x86_64 on the ``pc``
(i440fx) machine booting from the CD drive (ISO on IDE hdc, read-only), a sparse
scratch disk on virtio vda, acpi/apic/pae, 2 GiB RAM. The context goes in as a
NoCloud seed on a second CD drive, the serial console goes to a file, 9p shares
carry shared folders. ``machine = "q35"`` is for hosts whose QEMU has no IDE
(the RHEL 9 family): the CD drives go on q35's built-in SATA (AHCI) controller.

Networking: ``user`` (default) gives the guest QEMU user-mode networking with SSH
forwarded from a free port on 127.0.0.1, and outbound traffic allowed only where the
image loads its OS over the network at boot (``restrict``; a real µCernVM needs its
CernVM-FS servers); the test appliance's own CernVM-FS server is a process on this
host the guest reaches through a ``guestfwd``, so it boots restricted. ``nat`` puts
the guest on a libvirt network (e.g. ``default``) and reaches it at the address from
the DHCP leases, for real hosts.

Modules, leaf first: :mod:`.options` (the target keys), :mod:`.domain` (the domain XML, pure); this package holds
the libvirt connection, the acceleration probe, the provider and the machine.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

from ... import images
from ...context import Context
from ...context.nocloud import write_seed
from ...context.provisioning_iso import write_provisioning_iso
from ...dirs import cache_dir, state_dir
from ...doctor import Check, running
from ...download import redact
from ...errors import ConfigError, PermanentError, ProviderError, ScreenUnavailable, Unsupported
from ...images import appliance_variant
from ...interrupts import abandoned, interruptible
from ...ledger import Resource
from ...screen import write_png
from ...transport.base import Login
from ...transport.ssh import SSHTransport, ssh_login
from ..base import Machine, Provider, console_file_text
from ..kit import (
    ClientCache,
    SdkErrors,
    decode_fields,
    encode_fields,
    machine_directory,
    remove_machine_directory,
    sdk,
    wait_until,
)
from .checks import cpu_checks, device_check
from .domain import (
    MACHINE_LAYOUTS,
    NS,
    USER_NETDEV,
    VGA_TEXT_MEMORY,
    VGA_TEXT_SIZE,
    domain_xml,
    probe_xml,
    stratum1_forward,
    vga_text,
)
from .options import KvmOptions

if TYPE_CHECKING:
    from ...config import Target
    from ...profile import Profile

log = logging.getLogger(__name__)

__all__ = [
    "NS",
    "KvmMachine",
    "KvmOptions",
    "KvmProvider",
    "choose_domain_type",
    "connect",
    "default_uri",
    "domain_xml",
    "free_port",
    "probe_xml",
    "stratum1_forward",
    "vga_text",
]

ISO = images.Accepts(".iso", "ISO images (e.g. ucernvm-prod.<V>-<R>.cernvm.x86_64.iso) or 'appliance[:variant]'")


def _libvirt() -> Any:
    """libvirt-python (silenced: its errors reach us as exceptions, not also on stderr)."""
    libvirt = sdk("kvm", "kvm", "libvirt")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def _no_domain(error: Any) -> bool:
    return bool(error.get_error_code() == _libvirt().VIR_ERR_NO_DOMAIN)


def _message(error: Any) -> str:
    return str(error.get_error_message())


LIBVIRT = SdkErrors(lambda: (_libvirt().libvirtError,), not_found=_no_domain, message=_message)
"""libvirt's errors read once: ``LIBVIRT.call(what, fn, missing_ok=True)`` takes "no such domain" as gone."""


def default_uri() -> str:
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def _open(uri: str) -> Any:
    libvirt = _libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise ProviderError(
            f"cannot connect to libvirt at {uri}: {e.get_error_message()}; "
            "is libvirtd running (and virtlogd)? On Debian: apt-get install libvirt-daemon-system; "
            "virtlogd -d; libvirtd -d"
        ) from None


# Closed at exit while the interpreter is intact (libvirt's __del__ fails during shutdown).
_connections: ClientCache[str, Any] = ClientCache(_open, alive=lambda conn: conn.isAlive(), close=lambda c: c.close())


def connect(uri: str) -> Any:
    """One libvirt connection per URI for the whole process (auto-destroyed domains live as long as it)."""
    return _connections.get(uri)


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (QEMU binds it; a lost race is retried)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def probe_kernel() -> Path | None:
    """A kernel to boot in the acceleration probe: the appliance's, else the host's own."""
    try:
        from ... import appliance

        return appliance.build().kernel
    except Exception as e:  # noqa: BLE001 - any failure just means: try the next source
        log.debug("no appliance kernel for the KVM probe: %s", e)
    for path in sorted(Path("/boot").glob("vmlinuz-*"), reverse=True):
        if os.access(path, os.R_OK):
            return path
    return None


def choose_domain_type(conn, uri: str, wait: float = 10.0) -> str:
    """``kvm`` if hardware acceleration really boots a kernel here, else ``qemu``; cached per host boot.

    /dev/kvm and libvirt's capabilities can both claim KVM on a host where a KVM
    guest never runs (it spins in the host kernel), so a guest must prove it.
    """
    libvirt = _libvirt()
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "kvm")
    except libvirt.libvirtError:
        return "qemu"
    record = cache_dir() / "kvm-probe.json"
    try:
        cached = json.loads(record.read_text())
        if cached.get("boot_id") == _boot_id() and cached.get("uri") == uri:
            return cached["domain_type"]
    except (OSError, ValueError):
        pass
    kernel = probe_kernel()
    if kernel is None:
        log.warning(
            "cannot prove that KVM works here (no kernel to probe with); using TCG. Set domain_type = 'kvm' to force."
        )
        return "qemu"
    workdir = cache_dir() / f"kvm-probe-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / "console.log"
    xml = probe_xml(name=f"cvmfx-probe-{os.getpid()}", kernel=kernel, console=console, uri=uri)
    chosen = "qemu"
    dom = None
    try:
        dom = interruptible(
            "KVM probe: libvirt createXML",
            lambda: conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY),
            undo=_destroy_domain,
        )

        def printed() -> bool | None:
            return True if console.exists() and b"Linux version" in console.read_bytes() else None

        try:
            wait_until("KVM probe guest's kernel", printed, time.monotonic() + wait, 0.1)
            chosen = "kvm"
        except ProviderError:
            pass  # it printed nothing in time: TCG (warned below)
    except libvirt.libvirtError as e:
        log.warning("KVM probe guest failed to start (%s); using TCG", e.get_error_message())
    finally:
        if dom is not None:
            try:
                dom.destroy()
            except libvirt.libvirtError:
                pass
        shutil.rmtree(workdir, ignore_errors=True)
    if chosen == "qemu" and dom is not None:
        log.warning("KVM is advertised but a probe guest printed nothing in %.0f s; using TCG (domain type qemu)", wait)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"boot_id": _boot_id(), "uri": uri, "domain_type": chosen}))
    return chosen


KVM_TRAITS = {"provider": "kvm", "kind": "vm"}
"""What the profile's boot rules match on before a machine exists."""


def _destroy_domain(dom: Any) -> None:
    """Destroy a domain a createXML call started after its caller was interrupted (gone already is fine)."""
    LIBVIRT.call("destroy the domain an interrupted createXML started", dom.destroy, missing_ok=True)


def domain_screenshot(conn: Any, dom: Any, path: Path, what: str) -> Path:
    """The domain's screen (virDomainScreenshot, screen 0: QEMU sends PPM) written to ``path`` as PNG."""
    libvirt = _libvirt()
    chunks: list[bytes] = []
    stream = conn.newStream(0)
    try:
        mime = dom.screenshot(stream, 0, 0)
        stream.recvAll(lambda _stream, data, _opaque: chunks.append(data), None)
        stream.finish()
    except libvirt.libvirtError as e:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise ScreenUnavailable(f"{what}: libvirt took no screenshot: {e.get_error_message()}") from None
    log.debug("%s: screenshot of %d bytes (%s)", what, sum(map(len, chunks)), mime)
    return write_png(b"".join(chunks), path, what)


def domain_fields(dom: Any) -> dict[str, str]:
    """The ledger fields in a domain's metadata element (empty if it has none)."""
    libvirt = _libvirt()
    try:
        text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
        return dict(ElementTree.fromstring(text).attrib)
    except (libvirt.libvirtError, ElementTree.ParseError):
        return {}


class KvmProvider(Provider[KvmOptions, "KvmMachine"]):
    """Boots images under libvirt/QEMU on this host."""

    name = "kvm"
    Options = KvmOptions
    shares_folders = True
    parallel_boots = max(1, os.cpu_count() or 1)  # a TCG guest keeps a core busy while it boots
    creation_order = ("directory", "domain")
    no_power_button = None  # libvirt's ACPI shutdown (virsh shutdown --mode acpi), CernVM's KVM guide's "shutdown"
    no_cable = None  # the NIC's link state (virsh domif-setlink; QEMU's set_link for the user-mode network)
    no_upgrade = None  # the CD drive's medium changed on the running domain (virsh change-media), then a reboot

    @property
    def uri(self) -> str:
        return self.options.uri or default_uri()

    def _boot_source(self) -> tuple[Path | None, tuple[Path, Path, str] | None, int | None]:
        """ISO to boot from the CD drive, or kernel+initrd+cmdline, and the port of the appliance's CernVM-FS
        server on 127.0.0.1 (appliance only); validated before anything is created."""
        variant = appliance_variant(self.target.image)
        if variant is not None:
            from ... import appliance

            built = appliance.build(variant)
            stratum1 = appliance.serve_stratum1(built) if self.options.network == "user" else None
            if self.options.boot == "kernel":
                cmdline = " ".join(filter(None, [built.cmdline, self.options.kernel_args]))
                return None, (built.kernel, built.initrd, cmdline), stratum1
            return built.iso, None, stratum1
        self.check_image_name(self.target)
        iso = images.local_file(self.target, ISO)
        from ... import appliance

        if self.options.network == "user" and appliance.is_appliance_iso(iso):  # e.g. published as a release
            return iso, None, appliance.serve_stratum1(appliance.build())
        return iso, None, None

    def restricted(self, profile: Profile, served: bool) -> bool:
        """Whether the guest's user-mode network reaches nothing but the harness's forwards (``restrict``): yes,
        unless the image loads its OS over the network at boot from servers the harness does not provide
        (``served``: the test appliance's)."""
        if self.options.restrict is not None:
            return self.options.restrict
        return not (profile.boots_over_network(KVM_TRAITS) and not served)

    @classmethod
    def check_image_name(cls, target: Target) -> None:
        """``boot = "kernel"`` boots the appliance's own kernel and initrd: no other image has them apart."""
        if target.options.boot == "kernel" and appliance_variant(target.image) is None:
            raise ConfigError(
                f"{target.where('image')}: {redact(target.image)!r}: targets.{target.declared}.boot = 'kernel' "
                "needs the appliance image ('appliance[:variant]'); boot any other image with boot = 'cdrom'"
            )

    @classmethod
    def check_profile(cls, target: Target, profile: Profile) -> None:
        """An image that loads its OS over the network at boot needs a network that reaches its servers."""
        from ... import appliance as _appliance

        options: KvmOptions = target.options
        image = Path(target.image).expanduser()
        appliance = appliance_variant(target.image) is not None or _appliance.is_appliance_iso(image)
        needs = f"profile {profile.name!r} says the image loads its OS over the network at boot (boot.network)"
        if options.guest_forwards and options.network != "user":
            raise ConfigError(
                f"{target.where('guest_forwards')}: forwards are made by QEMU's user-mode network; use network = 'user'"
            )
        taken = [where for where in options.guest_forwards if where.rpartition(":")[2] == "80"]
        if appliance and taken:
            raise ConfigError(
                f"{target.where('guest_forwards')}: {taken[0]!r}: guest port 80 is the test appliance's CernVM-FS "
                f"server's ({_appliance.STRATUM1}:80, and QEMU names a forward's device by its guest port); "
                "forward another port"
            )
        if appliance and options.network == "nat":
            raise ConfigError(
                f"{target.where('network')}: 'nat' cannot reach the test appliance's CernVM-FS server (a process "
                "on this host that only user-mode networking forwards to the guest); use network = 'user'"
            )
        if profile.boots_over_network(KVM_TRAITS) and not appliance and options.network == "user" and options.restrict:
            raise ConfigError(
                f"{target.where('restrict')}: true isolates the guest, but {needs}: it would stop with "
                "'Unable to mount cvmfs root filesystem!'; set restrict = false, or network = 'nat'"
            )

    def machine(self, name: str) -> KvmMachine:
        return KvmMachine(self, name)

    def launch(self, machine: KvmMachine, context: Context) -> None:
        libvirt = _libvirt()
        iso, kernel, stratum1 = self._boot_source()
        machine.restricted = self.restricted(self.target.load_profile(), served=stratum1 is not None)
        machine.stratum1 = stratum1
        conn = connect(self.uri)
        domain_type: str = self.options.domain_type
        if domain_type == "auto":
            domain_type = choose_domain_type(conn, self.uri)
        machine.set_domain_type(domain_type)
        name, directory = machine.name, machine.directory
        self.record_directory(machine, directory)
        disk = directory / "scratch.img"
        with open(disk, "wb") as f:
            f.truncate(self.options.disk_size * 1024**3)
        if self.options.context_medium == "azure":
            write_provisioning_iso(context, directory / "seed.iso")
        else:
            write_seed(context, directory / "seed.iso")
        machine.make_shared_folders(directory)
        keep = self.run.keep.value != "never"
        resource = self.record(machine, "domain", name, uri=self.uri, directory=str(directory))
        for _attempt in range(5):
            port = free_port() if self.options.network == "user" else None
            xml = domain_xml(
                name=name,
                domain_type=domain_type,
                options=self.options,
                uri=self.uri,
                iso=iso,
                kernel=kernel,
                disk=disk,
                seed=directory / "seed.iso",
                console=machine.console_file,
                shared=machine.shared_folders,
                ssh_port=port,
                metadata=encode_fields(resource),
                restrict=machine.restricted,
                stratum1=stratum1,
            )
            try:
                flags = 0 if keep else libvirt.VIR_DOMAIN_START_AUTODESTROY
                machine.domain = interruptible(
                    f"{name}: libvirt createXML",
                    functools.partial(conn.createXML, xml, flags),
                    undo=_destroy_domain,
                    key=None if keep else f"domain {name}",
                )
            except libvirt.libvirtError as e:
                message = e.get_error_message()
                if "Could not set up host forwarding rule" in message:  # QEMU's words for a port taken meanwhile
                    continue
                raise ProviderError(f"{name}: libvirt could not start the domain: {message}") from None
            machine.ssh_port = port
            break
        else:
            raise ProviderError(f"{name}: no free port on 127.0.0.1 for the SSH forward after 5 attempts")

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        if resource.kind == "directory":
            remove_machine_directory(resource)
            return
        if resource.kind != "domain":
            raise ProviderError(f"kvm cannot destroy unknown resource kind {resource.kind!r}")
        if abandoned(f"domain {resource.name}"):
            # libvirt would answer only once the interrupted createXML returns (up to a minute on a slow host);
            # the call's undo destroys the domain then, and its auto-destroy flag does if this process is gone
            log.warning("%s: still being created by libvirt; destroyed as soon as libvirt returns", resource.name)
            return
        dom = LIBVIRT.call(resource.name, connect(resource.data["uri"]).lookupByName, resource.name, missing_ok=True)
        if dom is None:
            return
        found = decode_fields(domain_fields(dom))
        if found is None or found.run != resource.run:
            log.warning("domain %s belongs to another run; left alone", resource.name)
            return

        def stop() -> None:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()

        LIBVIRT.call(resource.name, stop, missing_ok=True)

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """The screen of the recorded domain (looked up by name on the recorded URI; only a domain of this run)."""
        if resource.kind != "domain":
            raise ScreenUnavailable(f"{resource.name}: a kvm {resource.kind} has no screen (its domain has)")
        libvirt = _libvirt()
        conn = connect(resource.data["uri"])
        try:
            dom = conn.lookupByName(resource.name)
        except libvirt.libvirtError as e:
            raise ScreenUnavailable(f"{resource.name}: no such domain: {e.get_error_message()}") from None
        found = decode_fields(domain_fields(dom))
        if found is None or found.run != resource.run:
            raise ScreenUnavailable(f"{resource.name}: the domain of that name belongs to another run")
        return domain_screenshot(conn, dom, path, resource.name)

    @classmethod
    def leftovers(cls, target, recorded: set[str]) -> list[Resource]:
        """Domains named ``cvmfx-*`` that carry our metadata but no ledger entry covers.

        Only a domain whose own name is the recorded name counts, and as its directory only
        ``runs/<run>/machines/<name>`` under this state directory, never a path from the metadata.
        """
        uri = target.options.uri or default_uri()
        found = []
        for dom in connect(uri).listAllDomains():
            if not dom.name().startswith("cvmfx-") or dom.name() in recorded:
                continue
            resource = decode_fields(domain_fields(dom))
            if resource is None or resource.provider != "kvm" or resource.kind != "domain":
                continue
            if resource.name != dom.name():
                continue
            found.append(replace(resource, data={"uri": uri}))
            directory = machine_directory(state_dir(), resource.run, resource.name)
            if directory is not None:
                found.append(replace(resource, kind="directory", data={"path": str(directory)}))
        return found

    @classmethod
    def checks(cls, target) -> list[Check]:
        """CernVM's KVM prerequisites (CPU, module, /dev/kvm access), then what the harness needs from libvirt."""
        options: KvmOptions = target.options
        tcg = "guests run under software emulation (TCG), several times slower"
        found = [*cpu_checks(tcg), device_check(tcg)]
        uri = options.uri or default_uri()
        if uri.startswith("qemu:///system"):
            for daemons in (("virtlogd",), ("libvirtd", "virtqemud")):
                name = running(*daemons)
                fix = f"{daemons[0]} -d (as root), or systemctl start {daemons[0]}"
                found.append(
                    Check.ok(daemons[0], f"{name} is running")
                    if name
                    else Check.problem(daemons[0], "not running", fix)
                )
        try:
            conn = connect(uri)
        except ProviderError as e:
            fix = f"start libvirtd and virtlogd, or set targets.{target.name}.uri"
            return [*found, Check.problem("libvirt", str(e), fix)]

        def version(number: int) -> str:
            return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"

        versions = f"libvirt {version(conn.getLibVersion())}, QEMU {version(conn.getVersion())}"
        found.append(Check.ok("libvirt", f"{uri}: {versions}"))
        if options.network == "nat":
            found.append(cls._nat_check(conn, options.nat_network))
        if options.domain_type != "qemu":
            what = "hardware acceleration"
            if choose_domain_type(conn, uri) == "kvm":
                found.append(Check.ok(what, "a KVM probe guest booted (domain type kvm)"))
            elif options.domain_type == "kvm":
                found.append(
                    Check.problem(
                        what,
                        f"a KVM probe guest did not boot, but targets.{target.name}.domain_type = 'kvm'",
                        "domain_type = 'auto' or 'qemu'",
                    )
                )
            else:
                found.append(
                    Check.warning(
                        what,
                        f"a KVM probe guest did not boot: {tcg} (deadlines x{options.slowdown:g})",
                        "a host where KVM works (see the lines above)",
                    )
                )
        return found

    @staticmethod
    def _nat_check(conn, network: str) -> Check:
        """The libvirt network ``network = "nat"`` attaches to must exist and be active."""
        libvirt = _libvirt()
        what = f"network {network}"
        try:
            net = conn.networkLookupByName(network)
        except libvirt.libvirtError:
            return Check.problem(
                what,
                "not defined in libvirt",
                f"virsh net-define /usr/share/libvirt/networks/{network}.xml && virsh net-start {network}",
            )
        if not net.isActive():
            return Check.problem(
                what, "defined but not active", f"virsh net-start {network} && virsh net-autostart {network}"
            )
        return Check.ok(what, f"active (bridge {net.bridgeName()})")


class KvmMachine(Machine):
    """A libvirt domain plus its files (scratch disk, seed, console log, shared folders)."""

    def __init__(self, provider: KvmProvider, name: str) -> None:
        super().__init__(provider, name)
        self.options: KvmOptions = provider.options
        self.uri = provider.uri
        self.domain: Any = None
        self.ssh_port: int | None = None
        self.restricted = True
        self.stratum1: int | None = None
        self.directory = provider.run.machine_dir(name)
        self.console_file = self.directory / "console.log"
        self.traits.update(kind="vm", nic_model=self.options.nic_model, network=self.options.network)

    def set_domain_type(self, domain_type: str) -> None:
        """Software emulation (``qemu``) is several times slower: stretch the deadlines."""
        self.traits["domain_type"] = domain_type
        self.slowdown = 1.0 if domain_type == "kvm" else self.options.slowdown

    def wait_running(self, deadline: float) -> None:
        libvirt = _libvirt()
        seen = {"state": "unknown"}

        def running() -> bool | None:
            state, reason = self.domain.state()
            seen["state"] = f"state {state}, reason {reason}"
            if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
                raise PermanentError(f"domain stopped (state {state}, reason {reason})")
            return True if state == libvirt.VIR_DOMAIN_RUNNING else None

        wait_until("domain running", running, deadline, 0.2, status=lambda: f"domain still in {seen['state']}")

    def address(self) -> tuple[str, int]:
        """Where SSH listens: the 127.0.0.1 forward, or the NAT address from the DHCP leases."""
        if self.options.network == "user":
            if self.ssh_port is None:
                raise ProviderError(f"{self.name}: no port forward yet")
            return "127.0.0.1", self.ssh_port
        libvirt = _libvirt()
        leases = self.domain.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
        for iface in leases.values():
            for addr in iface.get("addrs") or []:
                if addr["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                    return addr["addr"], 22
        raise ProviderError(f"{self.name}: no DHCP lease yet on network {self.options.nat_network!r}")

    def transport(self) -> SSHTransport:
        host, port = self.provider.run.endpoint(self, *self.address())
        return SSHTransport(host, port, self.options.user, self.key_file, self.host_keys)

    def console_log(self) -> str:
        return console_file_text(self.console_file)

    def network(self) -> str:
        if self.options.network == "nat":
            return f"libvirt network {self.options.nat_network!r} (NAT)"
        if self.restricted:
            return "QEMU user-mode networking, restricted (restrict=on): the guest reaches only the SSH forward" + (
                " and the test appliance's CernVM-FS server (guestfwd 10.0.2.100:80)" if self.stratum1 else ""
            )
        return "QEMU user-mode networking, unrestricted: the guest reaches what this host reaches"

    def screen_text(self) -> str | None:
        """The rows of the guest's VGA text memory that hold anything, read from outside (the guest need not
        answer): where a boot stopped in text mode, its last messages are there. None in graphics mode."""
        if self.domain is None:
            return None
        libvirt = _libvirt()
        try:
            memory = self.domain.memoryPeek(VGA_TEXT_MEMORY, VGA_TEXT_SIZE, libvirt.VIR_MEMORY_PHYSICAL)
        except libvirt.libvirtError as e:
            log.debug("%s: no VGA text memory: %s", self.name, e.get_error_message())
            return None
        return vga_text(memory)

    def press_power_button(self) -> None:
        """libvirt's ACPI power button event (``virsh shutdown --mode acpi``): the guest decides what happens."""
        if self.domain is None:
            raise ProviderError(f"{self.name}: the domain was not started")
        what = f"{self.name}: libvirt could not press the power button"
        LIBVIRT.call(what, self.domain.shutdownFlags, _libvirt().VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def set_link(self, up: bool) -> None:
        """The NIC's link up or down: libvirt's ``domif-setlink`` for a libvirt network; for the user-mode network
        (a QEMU netdev libvirt does not manage), QEMU's own ``set_link`` through libvirt's monitor passthrough."""
        if self.domain is None:
            raise ProviderError(f"{self.name}: the domain was not started")
        what = f"{self.name}: could not {'plug' if up else 'pull'} the network cable"
        if self.options.network == "user":
            qemu = sdk("kvm", "kvm", "libvirt_qemu")
            command = json.dumps({"execute": "set_link", "arguments": {"name": USER_NETDEV, "up": up}})
            LIBVIRT.call(what, qemu.qemuMonitorCommand, self.domain, command, 0)
            return
        root = ElementTree.fromstring(LIBVIRT.call(what, self.domain.XMLDesc, 0))
        interface = root.find("devices/interface")
        if interface is None:
            raise ProviderError(f"{what}: the domain has no network interface")
        link = interface.find("link")
        if link is None:
            link = ElementTree.SubElement(interface, "link")
        link.set("state", "up" if up else "down")
        xml = ElementTree.tostring(interface, encoding="unicode")
        LIBVIRT.call(what, self.domain.updateDeviceFlags, xml, _libvirt().VIR_DOMAIN_AFFECT_LIVE)

    def change_image(self, target: Target) -> None:
        """Change the medium in the CD drive the domain boots from to ``target``'s ISO (libvirt's ``change-media``:
        the cdrom disk's source, live); the guest's next reboot starts it on the same scratch disk. The appliance's
        CernVM-FS server keeps running (every appliance version serves the same OS repository)."""
        if self.domain is None:
            raise ProviderError(f"{self.name}: the domain was not started")
        if self.options.boot != "cdrom":
            raise Unsupported(f"{self.name}: boots its kernel directly (boot = {self.options.boot!r}), not from the CD")
        iso, _, _ = KvmProvider(target, self.provider.run)._boot_source()
        if iso is None:
            raise Unsupported(f"{self.name}: target {target.name!r} has no ISO to put in the CD drive")
        what = f"{self.name}: could not change the CD drive's medium to {iso}"
        root = ElementTree.fromstring(LIBVIRT.call(what, self.domain.XMLDesc, 0))
        wanted = MACHINE_LAYOUTS[self.options.machine].iso_target
        disk = next(
            (d for d in root.findall("devices/disk") if (t := d.find("target")) is not None and t.get("dev") == wanted),
            None,
        )
        source = disk.find("source") if disk is not None else None
        if disk is None or source is None:
            raise ProviderError(f"{what}: the domain has no CD drive {wanted} with a medium")
        source.set("file", str(iso))
        xml = ElementTree.tostring(disk, encoding="unicode")
        LIBVIRT.call(what, self.domain.updateDeviceFlags, xml, _libvirt().VIR_DOMAIN_AFFECT_LIVE)

    def is_running(self) -> bool:
        """Whether the domain is still active (a guest that powered off ends its transient domain)."""
        if self.domain is None:
            return False
        return bool(LIBVIRT.call(self.name, self.domain.isActive, missing_ok=True))

    def screenshot(self, path: Path) -> Path:
        """libvirt's screenshot of the domain's VGA display (see :func:`domain_xml`), as PNG."""
        if self.domain is None:
            raise ScreenUnavailable(f"{self.name}: the domain was not started")
        return domain_screenshot(connect(self.uri), self.domain, path, self.name)

    def publish_lifetime(self) -> None:
        """The kept mark in the domain's own metadata (a sweep from metadata alone leaves it)."""
        entry = next((r for r in self.resources if r.kind == "domain"), None)
        if self.domain is None or entry is None:
            return
        libvirt = _libvirt()
        xml = ElementTree.tostring(ElementTree.Element("resource", encode_fields(entry)), encoding="unicode")
        element = (libvirt.VIR_DOMAIN_METADATA_ELEMENT, xml, "cvmfx", NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        LIBVIRT.call(f"{self.name}: domain metadata", self.domain.setMetadata, *element)

    def login_command(self) -> Login:
        user_net = self.options.network == "user"
        host, port = ("127.0.0.1", self.ssh_port or 22) if user_net else (f"<{self.name} address>", 22)
        key_file = self.key_file
        return ssh_login(self.options.user, host, port, key_file, self.host_keys() or [], self.directory)
