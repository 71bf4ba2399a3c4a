"""The azure provider and its machine: checks before anything exists, the launch (resource group, image, network,
VM, each recorded first), the VM's state, address, serial log and screenshot, and the kept mark on its tags."""

from __future__ import annotations

import base64
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ... import images
from ...errors import ConfigError, ProviderError, ScreenUnavailable
from ...ledger import Resource
from ...screen import write_png
from ..base import Machine, PlatformState, Provider, RemoteMachine, console_text
from ..kit import FIELD_PREFIX, encode_fields
from .clients import (
    ERRORS,
    MANAGEMENT_SCOPE,
    azure_module,
    begin_create,
    client,
    credential,
    entry_data,
    error_code,
    subscription_id,
)
from .destroy import destroy_resource, leftovers
from .image import IMAGE_ID, VHD, image_from_file, image_id_problem
from .network import create_network, create_nic
from .options import AzureOptions, certificate_public_key, run_admin_key
from .tags import ARM, CREATION_ORDER, Recorder, arm_id, resource_name, split_id, tag_dict
from .vhd import check_vhd, tag_blob

if TYPE_CHECKING:
    from ...config import Target
    from ...context import Context
    from ...doctor import Check

log = logging.getLogger(__name__)

CUSTOM_DATA_LIMIT = 65535
"""Bytes of custom data Azure accepts (before base64): the SDK's OSProfile.custom_data says "The maximum length of the
binary array is 65535 bytes"."""
PROVISIONING_TIMED_OUT = (
    " (the guest never reported ready to Azure: CernVM 4 reports it through cloud-init's Azure datasource, which "
    "cernvm-config enables only when µCernVM found its context on Azure's provisioning ISO, and disables "
    "walinuxagent; the VM may still be running: its serial log, from boot diagnostics, shows how far it got)"
)
"""What OSProvisioningTimedOut means for a CernVM image (Azure gives it 20-40 minutes after the create, Azure/azure-cli
#6254): what reports ready. µCernVM takes a UDF device holding Azure's tag file as the provisioning ISO, reads
CustomData.bin and records the source ``Azure`` (cernvm-micro scripts.d/06context ``fetch_azure``, branches master,
devel, cvm5); cernvm-config then adds Azure to cloud-init's datasource list (.ucernvm_bootstrap) and its default
``disable_services`` disables walinuxagent (etc/cernvm/postinstall, branch cernvm-4); cloud-init's Azure datasource
reports ready to the WireServer (GET ``/machine/?comp=goalstate``, POST ``/machine?comp=health``). An image whose
context came any other way reports nothing, so Azure times out."""
WAITING_FOR_READY = (
    " (Azure ends a VM's creation when its guest reports ready; CernVM 4 does only when its context came from Azure's "
    "provisioning ISO)"
)
"""Said of a create still in progress: what it waits for (see :data:`PROVISIONING_TIMED_OUT`)."""
KEPT_FIELDS = (FIELD_PREFIX + "kept", FIELD_PREFIX + "expires")
"""The fields :meth:`AzureMachine.publish_lifetime` rewrites."""


class AzureProvider(Provider[AzureOptions, "AzureMachine"]):
    """Launches CernVM on Microsoft Azure (or any endpoint speaking ARM)."""

    name = "azure"
    no_power_button = (
        "not implemented for Azure yet (a power-off without skip_shutdown could: Azure asks the guest to shut down "
        "before it stops the VM)"
    )
    Options = AzureOptions
    creation_order: ClassVar[tuple[str, ...]] = CREATION_ORDER

    @functools.cached_property
    def subscription(self) -> str:
        """The subscription id: the ``subscription`` key, else AZURE_SUBSCRIPTION_ID."""
        return subscription_id(self.target)

    @property
    def data(self) -> dict[str, Any]:
        """What every ledger entry carries to reach Azure again without the config."""
        return entry_data(self.subscription, self.options)

    def client(self, name: str) -> Any:
        """The ``compute``, ``network`` or ``resource`` management client of the target's subscription."""
        return client(name, self.data)

    def group_name(self, machine: Machine) -> str:
        """The machine's resource group: the target's ``resource_group``, else its own."""
        return self.options.resource_group or f"{machine.name}-rg"

    def machine(self, name: str) -> AzureMachine:
        """An Azure machine named ``name`` (its VM's name), nothing created yet."""
        return AzureMachine(self, name)

    @functools.cached_property
    def public_key(self) -> str:
        """The admin user's SSH key: the certificate's (``ssh_certificate``), else the run's RSA admin key (Azure
        refuses the run's own Ed25519 key: the SDK's keyData wants "at least 2048-bit and in ssh-rsa format")."""
        options = self.options
        if options.ssh_certificate is None:
            return run_admin_key(self.run.directory, f"cernvm-fixtures-{self.run.id}")[1]
        try:
            return certificate_public_key(options.ssh_certificate, options.ssh_key)
        except ValueError as e:  # the files changed since the config was loaded
            raise ConfigError(f"{self.target.where('ssh_certificate')}: expected {e}") from None

    # -- checks, all before anything is created

    def check_credentials(self) -> None:
        """DefaultAzureCredential gets a token (else a ProviderError saying how to log in)."""
        refused = azure_module("azure.core.exceptions").ClientAuthenticationError
        try:
            credential(self.options.instance_discovery).get_token(MANAGEMENT_SCOPE)
        except refused as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ProviderError(
                f"{self.target.where()}: azure-identity's DefaultAzureCredential found no usable credentials "
                f"({first}); log in with 'az login' or set AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET; "
                "cernvm-fixtures never reads them from its own config"
            ) from None

    def check_size(self) -> None:
        """The location offers ``vm_size`` without restrictions (else a ConfigError listing what it offers)."""
        options = self.options
        skus = ERRORS.call(
            "list VM sizes",
            lambda: list(self.client("compute").resource_skus.list(filter=f"location eq '{options.location}'")),
        )
        names = {s.name for s in skus if s.resource_type == "virtualMachines" and not s.restrictions}
        if names and options.vm_size not in names:
            raise ConfigError(
                f"{self.target.where('vm_size')}: {options.vm_size!r} is not offered in "
                f"{options.location} (available: {', '.join(sorted(names))})"
            )

    @classmethod
    def check_image_name(cls, target: Target) -> None:
        """An ARM id given as ``image`` names a managed image or a Compute Gallery image (version) by Azure's naming
        rules (at load: a malformed id would otherwise fail only at the VM's create)."""
        problem = image_id_problem(target.image)
        if problem is not None:
            raise ConfigError(f"{target.where('image')}: {problem}")

    def resolve_image(self) -> images.Resolved:
        """The target's image: a managed or gallery image id, or a fixed-size VHD to upload (checked, and with a
        storage account to upload it to); local checks only."""
        self.check_image_name(self.target)
        resolved = images.resolve(self.target, VHD)
        if resolved.file is None:
            if not IMAGE_ID.match(resolved.platform or ""):  # the appliance: Azure boots no build of it
                raise images.refused(self.target, VHD)
            return resolved
        check_vhd(resolved.file, self.target.where("image"))
        if not self.options.storage_account and not self.options.blob_endpoint:
            raise ConfigError(f"{self.target.where('storage_account')}: required to upload {resolved.file.name}")
        return resolved

    # -- creation

    def launch(self, machine: AzureMachine, context: Context) -> None:
        """Check everything that can be checked first, then create the machine's group, image (from a VHD), network
        and VM booted with ``context`` as custom data; returns once the VM's creation started (:attr:`poller`)."""
        options = self.options
        image = self.resolve_image()
        admin_key = self.public_key  # a certificate is read and checked before anything exists
        custom_data = context.render()
        if len(custom_data) > CUSTOM_DATA_LIMIT:
            raise ProviderError(
                f"{machine.name}: custom data is {len(custom_data)} bytes; Azure accepts {CUSTOM_DATA_LIMIT}"
            )
        self.check_credentials()
        self.check_size()
        self.create_group(machine)
        compute, network = self.client("compute"), self.client("network")
        if image.file is not None:
            resources = self.client("resource").resources
            where = self.target.where("share_timeout")
            image_id = image_from_file(machine, options, compute, resources, image.file, where)
        else:
            image_id = str(image.platform)
        subnet_id = options.subnet_id or create_network(machine, network, options)
        nic_id = create_nic(machine, network, options, subnet_id)
        machine.poller = create_vm(machine, compute, options, image_id, nic_id, custom_data, admin_key)
        log.info("%s: creating VM %s (%s) in %s", machine.name, machine.name, options.vm_size, options.location)

    def create_group(self, machine: AzureMachine) -> None:
        """The machine's own resource group (recorded first); or check that the target's ``resource_group`` exists."""
        groups = self.client("resource").resource_groups
        group = self.group_name(machine)
        exists = ERRORS.call("check resource group", groups.check_existence, group)
        if self.options.resource_group:
            if not exists:
                raise ConfigError(f"{self.target.where('resource_group')}: resource group {group!r} does not exist")
            return
        if exists:
            raise ProviderError(f"{machine.name}: resource group {group!r} exists already (a name collision)")
        entry = machine.record("resource-group", group=group)
        body = {"location": self.options.location, "tags": tag_dict(entry, self.options.tags)}
        ERRORS.call(f"create resource group {group}", groups.create_or_update, group, body)
        machine.created(entry, id=f"/subscriptions/{self.subscription}/resourceGroups/{group}")

    # -- from the ledger alone

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        """Destroy one recorded resource from its ledger data alone (see :func:`.destroy.destroy_resource`)."""
        destroy_resource(resource)

    @classmethod
    def screenshot_resource(cls, resource: Resource, path: Path) -> Path:
        """Boot diagnostics' screenshot of the recorded VM (subscription and id from the ledger)."""
        if resource.kind != "vm" or not resource.data.get("subscription") or not resource.data.get("id"):
            raise ScreenUnavailable(f"{resource.name}: an azure {resource.kind} has no screen (its VM has)")
        return boot_screenshot(client("compute", resource.data), *split_id(resource.data["id"]), path)

    @classmethod
    def checks(cls, target: Target) -> list[Check]:
        """SDK, credentials and where they point, as the SDK's own chain resolves them (:mod:`.checks`)."""
        from .checks import azure_checks

        return azure_checks(target)

    @classmethod
    def leftovers(cls, target: Target, recorded: set[str]) -> list[Resource]:
        """Resources and groups tagged by cernvm-fixtures, and VHDs it uploaded (by their metadata), whose
        machine no ledger entry names."""
        return leftovers(target, recorded)


def create_vm(
    machine: Recorder,
    compute: Any,
    options: AzureOptions,
    image_id: str,
    nic_id: str,
    custom_data: bytes,
    admin_key: str,
) -> Any:
    """Start creating the VM (its OS disk recorded too: it goes with the VM) and return the create operation's
    poller, without waiting for it: custom data = the context, the admin user with ``admin_key`` and no password,
    boot diagnostics on (so the serial log is readable)."""
    models = azure_module("azure.mgmt.compute.models")
    disk = machine.record("disk")
    key = models.SshPublicKey(path=f"/home/{options.admin_user}/.ssh/authorized_keys", key_data=admin_key)
    properties = models.VirtualMachineProperties(
        hardware_profile=models.HardwareProfile(vm_size=options.vm_size),
        storage_profile=models.StorageProfile(
            image_reference=models.ImageReference(id=image_id),
            os_disk=models.OSDisk(
                name=split_id(disk.data["id"])[1],
                create_option="FromImage",
                delete_option="Delete",
                caching="ReadWrite",
                managed_disk=models.ManagedDiskParameters(storage_account_type="Standard_LRS"),
            ),
        ),
        os_profile=models.OSProfile(
            computer_name=resource_name(machine.name, "vm")[:64],
            admin_username=options.admin_user,
            custom_data=base64.b64encode(custom_data).decode(),
            linux_configuration=models.LinuxConfiguration(
                disable_password_authentication=True, ssh=models.SshConfiguration(public_keys=[key])
            ),
        ),
        network_profile=models.NetworkProfile(
            network_interfaces=[
                models.NetworkInterfaceReference(
                    id=nic_id, properties=models.NetworkInterfaceReferenceProperties(primary=True)
                )
            ]
        ),
        diagnostics_profile=models.DiagnosticsProfile(boot_diagnostics=models.BootDiagnostics(enabled=True)),
    )
    return begin_create(machine, compute, options, "vm", properties=properties)[1]


def boot_screenshot(compute: Any, group: str, name: str, path: Path) -> Path:
    """Boot diagnostics' screenshot of the VM (a blob behind a short-lived SAS URI), written as PNG. Errors name
    the HTTP status, never the URI (its signature is a secret)."""
    import requests

    try:
        found = ERRORS.call(
            f"boot diagnostics of {name}", compute.virtual_machines.retrieve_boot_diagnostics_data, group, name
        )
    except ProviderError as e:
        raise ScreenUnavailable(f"{name}: Azure gave no screenshot: {e}") from None
    uri = found.console_screenshot_blob_uri
    if not uri:
        raise ScreenUnavailable(f"{name}: boot diagnostics hold no screenshot of the VM")
    try:
        response = requests.get(uri, timeout=60)
    except requests.RequestException as e:
        raise ScreenUnavailable(
            f"{name}: the boot diagnostics screenshot could not be read: {type(e).__name__}"
        ) from None
    if response.status_code != 200:
        raise ScreenUnavailable(f"{name}: the boot diagnostics screenshot: HTTP {response.status_code}")
    return write_png(response.content, path, f"{name}: Azure's boot diagnostics screenshot")


class AzureMachine(RemoteMachine):
    """One Azure VM plus what was created for it; the :class:`~.tags.Recorder` its resources are created with."""

    def __init__(self, provider: AzureProvider, name: str) -> None:
        super().__init__(provider, name)
        self.provider: AzureProvider = provider
        self.options: AzureOptions = provider.options
        self.slowdown = self.options.slowdown
        self.poller: Any = None
        """The VM's create operation (an LROPoller), once started."""
        self.traits.update(
            kind="vm", vm_size=self.options.vm_size, location=self.options.location, address=self.options.address
        )

    @property
    def group(self) -> str:
        """The resource group the machine's resources are in."""
        return self.provider.group_name(self)

    @property
    def key_file(self) -> Path:
        """The private key SSH logs in with: ``ssh_key`` (the certificate's), else the run's own, whose public key the
        custom data's cloud-config carries (CernVM's cloud-init installs it for root: ``users: []``, ``disable_root:
        false``). The run's RSA admin key (``id_rsa`` in the run directory) is the one Azure gives ``admin_user``."""
        return Path(self.options.ssh_key).expanduser() if self.options.ssh_key else self.provider.run.key_file

    def record(self, kind: str, **data: Any) -> Resource:
        """Record one of this machine's resources before it is created, with what reaches Azure again and, for an
        ARM resource, its deterministic id."""
        if kind in ARM:
            data.setdefault("id", arm_id(self.provider.subscription, self.group, kind, self.name))
        return self.provider.record(self, kind, self.name, **self.provider.data, **data)

    def created(self, resource: Resource, **data: Any) -> None:
        """Add what Azure returned to one of this machine's entries, durably."""
        self.provider.created(resource, **data)

    def forget(self, resource: Resource) -> None:
        """Drop one of this machine's entries without destroying anything."""
        self.provider.forget(self, resource)

    def platform_state(self) -> PlatformState | None:
        """The VM create operation's status as its poller last read it (without waiting): ``Succeeded`` runs,
        ``Failed`` never will (with Azure's code and message)."""
        poller = self.poller
        if poller is None:
            raise ProviderError(f"{self.name}: no VM was created")
        if not poller.done():
            return PlatformState(f"{poller.status()}{WAITING_FOR_READY}")
        try:
            poller.result(timeout=0)
        except ERRORS.errors() as e:
            why = PROVISIONING_TIMED_OUT if error_code(e) == "OSProvisioningTimedOut" else ""
            return PlatformState("Failed", failure=f"provisioning failed: {ERRORS.message(e)}{why}")
        return PlatformState(str(poller.status()), running=True)

    def platform_address(self) -> str:
        """The public IP address's address (``address = "public"``), else the network interface's private one."""
        network = self.provider.client("network")
        if self.options.address == "public":
            ip = ERRORS.call(
                "get public IP", network.public_ip_addresses.get, self.group, resource_name(self.name, "public-ip")
            )
            address = ip.properties.ip_address if ip.properties else None
        else:
            name = resource_name(self.name, "network-interface")
            nic = ERRORS.call("get network interface", network.network_interfaces.get, self.group, name)
            configs = nic.properties.ip_configurations or []
            address = configs[0].properties.private_ip_address if configs and configs[0].properties else None
        if not address:
            raise ProviderError(f"{self.name}: the VM has no {self.options.address} address")
        return str(address)

    @property
    def exists(self) -> bool:
        """Whether the VM's creation started (then its serial log counts for the host keys)."""
        return self.poller is not None

    def screenshot(self, path: Path) -> Path:
        """Boot diagnostics' screenshot of the VM, as a PNG at ``path``."""
        if self.poller is None:
            raise ScreenUnavailable(f"{self.name}: no VM was created")
        return boot_screenshot(self.provider.client("compute"), self.group, self.name, path)

    def console_log(self) -> str:
        """The serial log from boot diagnostics (kept after the VM is gone)."""
        try:
            import requests

            compute = self.provider.client("compute")
            found = compute.virtual_machines.retrieve_boot_diagnostics_data(self.group, self.name)
            uri = found.serial_console_log_blob_uri
            if uri:
                response = requests.get(uri, timeout=30)
                response.raise_for_status()
                self._console = console_text(response.text) or self._console
        except Exception as e:  # noqa: BLE001 - the console is diagnostics; never fail because of it
            log.debug("%s: no serial log: %s", self.name, type(e).__name__)
        return self._console

    def publish_lifetime(self) -> None:
        """Merge the kept mark and new expiry into the tags of each resource Azure holds our tags on (the OS disk,
        made by Azure from the VM, has none), and into an uploaded VHD's metadata."""
        tags = self.provider.client("resource").tags
        models = azure_module("azure.mgmt.resource.resources.models")
        refused = []
        for resource in self.resources:
            fields = encode_fields(resource)
            kept = {name: fields[name] for name in KEPT_FIELDS}
            patch = models.TagsPatchResource(operation="Merge", properties=models.Tags(tags=kept))
            scope = resource.data.get("id")
            try:
                if resource.kind == "blob":
                    tag_blob(resource, kept)
                elif scope and resource.kind != "disk":
                    poller = ERRORS.call(f"tag {resource.kind} kept", tags.begin_update_at_scope, scope, patch)
                    ERRORS.call(f"tag {resource.kind} kept", poller.result)
            except ProviderError as e:
                refused.append(str(e))
        if refused:
            raise ProviderError("; ".join(refused))
