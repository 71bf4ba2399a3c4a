"""Azure's provisioning ISO: how an Azure VM's guest finds its custom data at first boot, for a guest booted elsewhere
as an Azure VM's stand-in (the KVM provider's ``context_medium = "azure"``).

Azure attaches a UDF disc holding ``ovf-env.xml`` (the LinuxProvisioningConfigurationSet: host name, user, SSH keys,
``CustomData`` in base64), which cloud-init's Azure datasource reads (it mounts UDF devices holding ``ovf-env.xml``,
DataSourceAzure.py). µCernVM's bootloader (cernvm-micro scripts.d/06context, ``fetch_azure``, branches master/devel)
takes a UDF device whose root holds ``E6DA6616-8EC4-48E0-BE93-58CE6ACE3CFB.tag`` as Azure's, reads the user data
from ``CustomData.bin`` and records the source ``Azure``; its 13context_epilog keeps a copy of the disc
(``context/azure.iso``) because Azure ejects it after provisioning. Whether Azure's Linux disc carries
``CustomData.bin`` is not documented (Azure documents custom data in ``ovf-env.xml``): this disc carries both.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from xml.etree import ElementTree

import pycdlib

from . import Context

TAG_FILE = "E6DA6616-8EC4-48E0-BE93-58CE6ACE3CFB.tag"
"""The file µCernVM looks for at the root of a UDF device to take it as Azure's provisioning disc."""
OVF = "http://schemas.dmtf.org/ovf/environment/1"
WINDOWS_AZURE = "http://schemas.microsoft.com/windowsazure"


def ovf_env(context: Context, user: str = "azureuser") -> bytes:
    """``ovf-env.xml`` as cloud-init reads it (its ``build_minimal_ovf`` shape, with the ``CustomData`` Azure adds)."""
    ElementTree.register_namespace("oe", OVF)
    ElementTree.register_namespace("wa", WINDOWS_AZURE)
    root = ElementTree.Element(f"{{{OVF}}}Environment")
    section = ElementTree.SubElement(root, f"{{{WINDOWS_AZURE}}}ProvisioningSection")
    ElementTree.SubElement(section, f"{{{WINDOWS_AZURE}}}Version").text = "1.0"
    linux = ElementTree.SubElement(section, f"{{{WINDOWS_AZURE}}}LinuxProvisioningConfigurationSet")
    values = {
        "ConfigurationSetType": "LinuxProvisioningConfiguration",
        "HostName": context.hostname,
        "UserName": user,
        "DisableSshPasswordAuthentication": "true",
        "CustomData": base64.b64encode(context.render()).decode(),
    }
    for key, value in values.items():
        ElementTree.SubElement(linux, f"{{{WINDOWS_AZURE}}}{key}").text = value
    platform = ElementTree.SubElement(root, f"{{{WINDOWS_AZURE}}}PlatformSettingsSection")
    ElementTree.SubElement(platform, f"{{{WINDOWS_AZURE}}}Version").text = "1.0"
    settings = ElementTree.SubElement(platform, f"{{{WINDOWS_AZURE}}}PlatformSettings")
    ElementTree.SubElement(settings, f"{{{WINDOWS_AZURE}}}ProvisionGuestAgent").text = "true"
    return ElementTree.tostring(root, xml_declaration=True, encoding="utf-8")


def provisioning_files(context: Context) -> dict[str, bytes]:
    """Name at the disc's root -> content."""
    return {"ovf-env.xml": ovf_env(context), "CustomData.bin": context.render(), TAG_FILE: b""}


def write_provisioning_iso(context: Context, path: Path) -> Path:
    """Write the provisioning disc for ``context`` (UDF 2.60, with the ISO 9660 bridge pycdlib always writes)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, udf="2.60", vol_ident="rd_rdfe_stable")
    for number, (name, data) in enumerate(provisioning_files(context).items()):
        iso.add_fp(io.BytesIO(data), len(data), f"/F{number}.;1", udf_path=f"/{name}")
    iso.write(str(path))
    iso.close()
    return path
