"""KVM through libvirt: the documented CernVM domain layout, reached over a 127.0.0.1 port forward.

Layout (from the CernVM "How to run on KVM" guide): hvm x86_64 booting from the
CD drive (ISO on IDE hdc, read-only), a sparse scratch disk on virtio vda,
acpi/apic/pae, 2 GiB RAM. The context goes in as a NoCloud seed on a second CD
drive, the serial console goes to a file, 9p shares carry shared folders.

Networking: ``user`` (default) gives the guest QEMU user-mode networking with
outbound traffic disabled and SSH forwarded from a free port on 127.0.0.1;
``nat`` puts it on a libvirt network (e.g. ``default``) and reaches it at the
address from the DHCP leases, for real hosts.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree
from xml.sax.saxutils import quoteattr

from pydantic import Field

from ..config import APPLIANCE
from ..context import Context
from ..context.nocloud import write_seed
from ..dirs import cache_dir
from ..doctor import Check, device_access, running
from ..errors import ConfigError, PermanentError, ProviderError
from ..ledger import Resource
from ..transport.ssh import SSHTransport
from .base import Machine, Provider, ProviderOptions, console_text

log = logging.getLogger(__name__)

NS = "https://cernvm-fixtures.invalid/ns/libvirt/1"
"""XML namespace of the metadata element that lets sweep recognise our domains."""



class KvmOptions(ProviderOptions):
    """Target keys of the ``kvm`` provider."""

    uri: str | None = None
    """libvirt URI; default qemu:///system for root, qemu:///session for other users."""
    domain_type: Literal["auto", "kvm", "qemu"] = "auto"
    """``kvm`` (hardware), ``qemu`` (TCG emulation), or ``auto``: kvm only if a probe guest boots under it."""
    memory: int = Field(2048, ge=256, description="MiB")
    vcpus: int = Field(1, ge=1)
    disk_size: int = Field(20, ge=1, description="GiB, sparse scratch disk")
    network: Literal["user", "nat"] = "user"
    nat_network: str = "default"
    nic_model: Literal["virtio", "e1000", "rtl8139"] = "virtio"
    boot: Literal["cdrom", "kernel"] = "cdrom"
    """``kernel``: direct kernel boot (appliance only), faster than the documented CD boot."""
    graphics: bool = True
    """A VNC display bound to 127.0.0.1, as in the documented layout."""
    slowdown: float = Field(4.0, ge=1.0)
    """Readiness deadlines are multiplied by this under software emulation (domain type qemu)."""
    user: str = "root"


_connections: dict[str, object] = {}
_connections_lock = threading.Lock()


@atexit.register
def _close_connections() -> None:
    """Close while the interpreter is intact (libvirt's __del__ fails during shutdown)."""
    while _connections:
        _, conn = _connections.popitem()
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _libvirt():
    try:
        import libvirt
    except ImportError:
        raise ConfigError("the kvm provider needs libvirt-python: pip install 'cernvm-fixtures[kvm]'") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def default_uri() -> str:
    return "qemu:///system" if os.geteuid() == 0 else "qemu:///session"


def connect(uri: str):
    """One libvirt connection per URI for the whole process (auto-destroyed domains live as long as it)."""
    libvirt = _libvirt()
    with _connections_lock:
        conn = _connections.get(uri)
        if conn is None or not conn.isAlive():
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as e:
                raise ProviderError(
                    f"cannot connect to libvirt at {uri}: {e.get_error_message()}; "
                    "is libvirtd running (and virtlogd)? On Debian: apt-get install libvirt-daemon-system; "
                    "virtlogd -d; libvirtd -d"
                ) from None
            _connections[uri] = conn
        return conn


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
        from .. import appliance

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
        log.warning("cannot prove that KVM works here (no kernel to probe with); using TCG. Set domain_type = 'kvm' to force.")
        return "qemu"
    workdir = cache_dir() / f"kvm-probe-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    console = workdir / "console.log"
    xml = f"""<domain type='kvm'>
  <name>cvmfx-probe-{os.getpid()}</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{kernel}</kernel><cmdline>console=ttyS0 panic=-1</cmdline></os>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices><serial type='file'><source path='{console}'/></serial></devices>
  {_seclabel(uri)}
</domain>"""
    chosen = "qemu"
    dom = None
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if console.exists() and b"Linux version" in console.read_bytes():
                chosen = "kvm"
                break
            time.sleep(0.1)
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


def _seclabel(uri: str) -> str:
    """As root on the system URI, run QEMU as root so it can use the run's files where they are."""
    if os.geteuid() == 0 and uri.startswith("qemu:///system"):
        return "<seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>"
    return ""


def domain_xml(
    *,
    name: str,
    domain_type: str,
    options: KvmOptions,
    uri: str,
    iso: Path | None,
    kernel: tuple[Path, Path, str] | None,
    disk: Path,
    seed: Path,
    console: Path,
    shared: dict[str, Path],
    ssh_port: int | None,
    metadata: str,
) -> str:
    """The libvirt domain XML for one machine (pure function, unit-tested)."""
    q = quoteattr
    if kernel is not None:
        vmlinuz, initrd, cmdline = kernel
        boot = f"<kernel>{vmlinuz}</kernel><initrd>{initrd}</initrd><cmdline>{cmdline}</cmdline>"
    else:
        boot = "<boot dev='cdrom'/>"
    devices = []
    if iso is not None:
        devices.append(
            f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file={q(str(iso))}/>"
            "<target dev='hdc' bus='ide'/><readonly/></disk>"
        )
    devices.append(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file={q(str(disk))}/>"
        "<target dev='vda' bus='virtio'/></disk>"
    )
    devices.append(
        f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file={q(str(seed))}/>"
        "<target dev='hdd' bus='ide'/><readonly/></disk>"
    )
    for tag, path in shared.items():
        devices.append(
            f"<filesystem type='mount' accessmode='passthrough'><source dir={q(str(path))}/>"
            f"<target dir={q(tag)}/></filesystem>"
        )
    if options.network == "nat":
        devices.append(
            f"<interface type='network'><source network={q(options.nat_network)}/>"
            f"<model type={q(options.nic_model)}/></interface>"
        )
    devices.append(f"<serial type='file'><source path={q(str(console))}/><target port='0'/></serial>")
    if options.graphics:
        devices.append("<graphics type='vnc' autoport='yes' listen='127.0.0.1'/>")
    devices.append("<memballoon model='none'/>")
    commandline = ""
    if options.network == "user":
        device = {"virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}[options.nic_model]
        args = [
            "-netdev",
            f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device",
            f"{device},netdev=n0,bus=pci.0,addr=0x9",
        ]
        commandline = (
            "<qemu:commandline>" + "".join(f"<qemu:arg value={q(a)}/>" for a in args) + "</qemu:commandline>"
        )
    nl = "\n    "
    return f"""<domain type={q(domain_type)} xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <metadata><cvmfx:resource xmlns:cvmfx={q(NS)} json={q(metadata)}/></metadata>
  <memory unit='MiB'>{options.memory}</memory>
  <vcpu>{options.vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type>{boot}</os>
  <features><acpi/><apic/><pae/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    {nl.join(devices)}
  </devices>
  {_seclabel(uri)}
  {commandline}
</domain>
"""


class KvmProvider(Provider):
    """Boots images under libvirt/QEMU on this host."""

    name = "kvm"
    Options = KvmOptions
    shares_folders = True

    @property
    def uri(self) -> str:
        return self.options.uri or default_uri()

    def _boot_source(self) -> tuple[Path | None, tuple[Path, Path, str] | None]:
        """ISO to boot from the CD drive, or kernel+initrd+cmdline; validated before anything is created."""
        image = self.target.image
        if image == APPLIANCE or image.startswith(APPLIANCE + ":"):
            from .. import appliance

            variant = image.partition(":")[2] or "ok"
            built = appliance.build(variant)
            if self.options.boot == "kernel":
                return None, (built.kernel, built.initrd, built.cmdline)
            return built.iso, None
        if self.options.boot == "kernel":
            raise ConfigError(f"{self.target.where('boot')}: 'kernel' needs the appliance image")
        iso = self.target.image_file(".iso", "ISO images (e.g. ucernvm-prod.<V>-<R>.cernvm.x86_64.iso) or 'appliance[:variant]'")
        return iso, None

    def machine(self, name: str) -> KvmMachine:
        return KvmMachine(self, name)

    def launch(self, machine: Machine, context: Context) -> None:
        assert isinstance(machine, KvmMachine)
        libvirt = _libvirt()
        iso, kernel = self._boot_source()
        conn = connect(self.uri)
        domain_type = self.options.domain_type
        if domain_type == "auto":
            domain_type = choose_domain_type(conn, self.uri)
        machine.set_domain_type(domain_type)
        name, directory = machine.name, machine.directory
        self.record(machine, "directory", name, path=str(directory))
        directory.mkdir(parents=True)
        disk = directory / "scratch.img"
        with open(disk, "wb") as f:
            f.truncate(self.options.disk_size * 1024**3)
        write_seed(context, directory / "seed.iso")
        machine.make_shared_folders(directory)
        keep = self.run.keep.value != "never"
        resource = self.record(machine, "domain", name, uri=self.uri, directory=str(directory))
        for attempt in range(5):
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
                metadata=resource.to_json(),
            )
            try:
                machine.domain = conn.createXML(xml, 0 if keep else libvirt.VIR_DOMAIN_START_AUTODESTROY)
            except libvirt.libvirtError as e:
                message = e.get_error_message()
                if "hostfwd" in message or "host forwarding" in message:
                    continue
                raise ProviderError(f"{name}: libvirt could not start the domain: {message}") from None
            machine.ssh_port = port
            break
        else:
            raise ProviderError(f"{name}: no free port on 127.0.0.1 for the SSH forward after 5 attempts")

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        if resource.kind == "directory":
            shutil.rmtree(resource.data["path"], ignore_errors=True)
            return
        if resource.kind != "domain":
            raise ProviderError(f"kvm cannot destroy unknown resource kind {resource.kind!r}")
        libvirt = _libvirt()
        conn = connect(resource.data["uri"])
        try:
            dom = conn.lookupByName(resource.name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return
            raise ProviderError(f"{resource.name}: {e.get_error_message()}") from None
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise ProviderError(f"{resource.name}: {e.get_error_message()}") from None

    @classmethod
    def leftovers(cls, target, recorded: set[str]) -> list[Resource]:
        """Domains named ``cvmfx-*`` that carry our metadata but no ledger entry covers."""
        libvirt = _libvirt()
        uri = target.options.uri or default_uri()
        found = []
        for dom in connect(uri).listAllDomains():
            if not dom.name().startswith("cvmfx-") or dom.name() in recorded:
                continue
            try:
                text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS)
            except libvirt.libvirtError:
                continue
            try:
                resource = Resource.from_json(ElementTree.fromstring(text).get("json", ""))
            except (ElementTree.ParseError, ValueError, TypeError, KeyError):
                continue
            found.append(resource)
            if "directory" in resource.data:
                found.append(replace(resource, kind="directory", data={"path": resource.data["directory"]}))
        return found

    @classmethod
    def checks(cls, target) -> list[Check]:
        """CernVM's KVM prerequisites (CPU, module, /dev/kvm access), then what the harness needs from libvirt."""
        options: KvmOptions = target.options
        tcg = "guests run under software emulation (TCG), several times slower"
        found = [*cls._cpu_checks(tcg), cls._device_check(tcg)]
        uri = options.uri or default_uri()
        if uri.startswith("qemu:///system"):
            for daemons in (("virtlogd",), ("libvirtd", "virtqemud")):
                name = running(*daemons)
                fix = f"{daemons[0]} -d (as root), or systemctl start {daemons[0]}"
                found.append(Check.ok(daemons[0], f"{name} is running") if name else
                             Check.problem(daemons[0], "not running", fix))
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
                found.append(Check.problem(what, f"a KVM probe guest did not boot, but targets.{target.name}."
                                           "domain_type = 'kvm'", "domain_type = 'auto' or 'qemu'"))
            else:
                found.append(Check.warning(what, f"a KVM probe guest did not boot: {tcg} (deadlines "
                                           f"x{options.slowdown:g})", "a host where KVM works (see the lines above)"))
        return found

    @staticmethod
    def _cpu_checks(tcg: str) -> list[Check]:
        """The CPU offers virtualization (vmx/svm) and its vendor's KVM module is loaded."""
        try:
            cpu = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpu = ""
        flags = {f for line in cpu.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
        offered = sorted(flags & {"vmx", "svm"})
        modules = sorted(p.name for p in Path("/sys/module").glob("kvm_*"))
        vendor = [m for m in modules if m in ("kvm_intel", "kvm_amd")]
        return [
            Check.ok("CPU virtualization", f"flag {offered[0]}") if offered else
            Check.warning("CPU virtualization", f"no vmx/svm CPU flag: {tcg}",
                          "enable VT-x/AMD-V in the firmware, or nested virtualization on the hypervisor"),
            Check.ok("KVM module", vendor[0]) if vendor else
            Check.warning("KVM module", f"neither kvm_intel nor kvm_amd is loaded (have: {', '.join(modules) or '-'})",
                          "modprobe kvm_intel (Intel CPU) or modprobe kvm_amd (AMD CPU)"),
        ]

    @staticmethod
    def _device_check(tcg: str) -> Check:
        """/dev/kvm as CernVM documents it: root:kvm 0660 or more open (else libvirt re-probes QEMU endlessly)."""
        device = Path("/dev/kvm")
        if not device.exists():
            return Check.warning("/dev/kvm", f"missing: {tcg}", "modprobe kvm_intel or kvm_amd")
        access, usable = device_access(device, "kvm")
        if usable:
            return Check.ok("/dev/kvm", f"{access} (documented: root:kvm 0660 or more open)")
        return Check.warning(
            "/dev/kvm",
            f"{access}, documented root:kvm 0660: libvirt then re-probes QEMU on every lookup and each domain start "
            "takes about a minute",
            'chgrp kvm /dev/kvm && chmod 0660 /dev/kvm, and KERNEL=="kvm", GROUP="kvm", MODE="0660" in '
            "/etc/udev/rules.d/65-kvm.rules (./dev setup does both)",
        )

    @staticmethod
    def _nat_check(conn, network: str) -> Check:
        """The libvirt network ``network = "nat"`` attaches to must exist and be active."""
        libvirt = _libvirt()
        what = f"network {network}"
        try:
            net = conn.networkLookupByName(network)
        except libvirt.libvirtError:
            return Check.problem(what, "not defined in libvirt", f"virsh net-define "
                                 f"/usr/share/libvirt/networks/{network}.xml && virsh net-start {network}")
        if not net.isActive():
            return Check.problem(what, "defined but not active", f"virsh net-start {network} && "
                                 f"virsh net-autostart {network}")
        return Check.ok(what, f"active (bridge {net.bridgeName()})")


class KvmMachine(Machine):
    """A libvirt domain plus its files (scratch disk, seed, console log, shared folders)."""

    def __init__(self, provider: KvmProvider, name: str) -> None:
        super().__init__(provider, name)
        self.options: KvmOptions = provider.options
        self.domain = None
        self.ssh_port: int | None = None
        self.directory = provider.run.machine_dir(name)
        self.console_file = self.directory / "console.log"
        self.traits.update(kind="vm", nic_model=self.options.nic_model, network=self.options.network)

    def set_domain_type(self, domain_type: str) -> None:
        """Software emulation (``qemu``) is several times slower: stretch the deadlines."""
        self.traits["domain_type"] = domain_type
        self.slowdown = 1.0 if domain_type == "kvm" else self.options.slowdown

    def wait_running(self, deadline: float) -> None:
        libvirt = _libvirt()
        while True:
            state, reason = self.domain.state()
            if state == libvirt.VIR_DOMAIN_RUNNING:
                return
            if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
                raise PermanentError(f"domain stopped (state {state}, reason {reason})")
            if time.monotonic() > deadline:
                raise ProviderError(f"domain still in state {state} (reason {reason})")
            time.sleep(0.2)

    def address(self) -> tuple[str, int]:
        """Where SSH listens: the 127.0.0.1 forward, or the NAT address from the DHCP leases."""
        if self.options.network == "user":
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
        return SSHTransport(host, port, self.options.user, self.provider.run.key_file, self.host_keys)

    def console_log(self) -> str:
        try:
            raw = self.console_file.read_bytes()
        except OSError:
            return ""
        return console_text(raw.decode("utf-8", "replace"))

    def login_command(self) -> str:
        host, port = ("127.0.0.1", self.ssh_port) if self.options.network == "user" else (f"<{self.name} address>", 22)
        known = self.directory / "known_hosts"
        keys = self.host_keys()
        if keys:
            known.write_text("".join(f"[{host}]:{port} {' '.join(k.split()[:2])}\n" for k in keys))
            check = f"-o UserKnownHostsFile={known}"
        else:
            check = "-o StrictHostKeyChecking=accept-new"
        return f"ssh -i {self.provider.run.key_file} -p {port} {check} -o IdentitiesOnly=yes {self.options.user}@{host}"
