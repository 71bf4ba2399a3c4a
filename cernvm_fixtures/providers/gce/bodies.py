"""What the firewall and instance insert calls send, built without calling anything (so they read as the recipe).

The SSH key goes into the instance's *own* metadata (``ssh-keys``, with ``block-project-ssh-keys``), never into
project-wide metadata; the context is the ``user-data`` metadata value.
"""

from __future__ import annotations

from typing import Any

from .api import compute_v1
from .options import GceOptions


def firewall_body(name: str, options: GceOptions, project: str, tag: str, description: str) -> Any:
    """One ingress rule: tcp/22 from ``ssh_cidr`` alone, to the instances with network tag ``tag``."""
    compute = compute_v1()
    return compute.Firewall(
        name=name,
        network=options.network_link(project),
        direction="INGRESS",
        priority=1000,
        allowed=[compute.Allowed(I_p_protocol="tcp", ports=["22"])],
        source_ranges=[options.ssh_cidr],
        target_tags=[tag],
        description=description,
    )


def instance_body(
    name: str,
    options: GceOptions,
    project: str,
    *,
    source: str,
    labels: dict[str, str],
    public_key: str,
    user_data: str,
) -> Any:
    """The instance: boot disk from ``source`` (deleted with it), one NIC (with an external NAT address if the
    target reaches it so), its own SSH key and user data, network tag ``name``, no automatic restart."""
    compute = compute_v1()
    interface = compute.NetworkInterface(network=options.network_link(project))
    subnetwork = options.subnetwork_link()
    if subnetwork:
        interface.subnetwork = subnetwork
    if options.address == "external":
        interface.access_configs = [compute.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    disk = compute.AttachedDiskInitializeParams(source_image=source, disk_size_gb=options.disk_size_gb, labels=labels)
    return compute.Instance(
        name=name,
        machine_type=f"zones/{options.zone}/machineTypes/{options.machine_type.rsplit('/', 1)[-1]}",
        disks=[compute.AttachedDisk(boot=True, auto_delete=True, type_="PERSISTENT", initialize_params=disk)],
        network_interfaces=[interface],
        metadata=compute.Metadata(
            items=[
                compute.Items(key="ssh-keys", value=f"{options.user}:{public_key}"),
                compute.Items(key="block-project-ssh-keys", value="true"),
                compute.Items(key="user-data", value=user_data),
            ]
        ),
        tags=compute.Tags(items=[name]),
        labels=labels,
        scheduling=compute.Scheduling(automatic_restart=False, on_host_maintenance="TERMINATE"),
        display_device=compute.DisplayDevice(enable_display=options.display),
    )
