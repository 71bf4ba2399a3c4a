"""Microsoft Azure through the Azure SDK: the CernVM "How to run on Azure" recipe done with ARM, leak-proof.

What a launch creates, each recorded in the ledger (with its full, deterministic ARM id) *before* its
create call and tagged at creation with its ledger entry's fields (run, machine, kind, owner, creation
time, expiry, kept; see :mod:`.tags`):

* unless ``resource_group`` names an existing group: a resource group for the machine, deleted at the end;
* if ``image`` is a local ``.vhd`` (a fixed-size VHD, checked first): a managed image made from a page blob
  in ``storage_account``/``container``, both found by the VHD's SHA-256 (the image's tag, the blob's name),
  so a launch reuses what any run made of the same content; the run deletes at the end only what it made.
  Empty 512-byte pages are not sent; an upload continues after errors, and one whose uploader is gone
  (killed) is taken over and continued where it stopped (see :mod:`.vhd`, :mod:`.image`);
* unless ``subnet_id`` is given: a virtual network with one subnet;
* a network security group whose only inbound rule admits tcp/22 from ``ssh_cidr``;
* a public IP address (``address = "public"``) and a network interface (see :mod:`.network`);
* the VM: custom data = the context (base64), the admin user with the run's SSH public key, password
  authentication disabled (the old CLI's throw-away password is not needed with ARM), boot diagnostics on
  (managed storage) so the serial log is readable, OS disk deleted with the VM.

Teardown goes in the reverse of ``creation_order`` (VM, OS disk, NIC, public IP, NSG, VNet, image, blob,
group), waits for each long-running operation, treats "not found" as done and retries while Azure still
reports a resource in use. ``leftovers`` finds our resources by their tags alone (uploaded VHDs by the same
fields in their blob metadata), for ``sweep`` (see :mod:`.destroy`).

Credentials come only from azure-identity's DefaultAzureCredential chain (environment, workload
identity, managed identity, Azure CLI, ...); nothing secret is logged, recorded or written.

Modules, leaf first: :mod:`.tags` (the ledger entry as tags, kinds and ids), :mod:`.clients` (SDK, clients,
errors), :mod:`.options`, :mod:`.vhd`, :mod:`.image`, :mod:`.network`, :mod:`.destroy`, :mod:`.provider`.
"""

from __future__ import annotations

from .clients import ERRORS, client, credential, reset_clients
from .image import IMAGE_ID, VHD
from .options import AzureOptions, certificate_public_key
from .provider import AzureMachine, AzureProvider
from .tags import CREATION_ORDER, DIGEST_TAG, RUN_TAG, resource_from_tags, split_id, tag_dict
from .vhd import CHUNK, blob_metadata, check_vhd, pages

__all__ = [
    "CHUNK",
    "CREATION_ORDER",
    "DIGEST_TAG",
    "ERRORS",
    "IMAGE_ID",
    "RUN_TAG",
    "VHD",
    "AzureMachine",
    "AzureOptions",
    "AzureProvider",
    "blob_metadata",
    "certificate_public_key",
    "check_vhd",
    "client",
    "credential",
    "pages",
    "reset_clients",
    "resource_from_tags",
    "split_id",
    "tag_dict",
]
