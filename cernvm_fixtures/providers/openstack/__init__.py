"""OpenStack through openstacksdk: the CernVM "How to run on OpenStack" recipe, least privilege, leak-proof.

What a launch creates (each recorded in the ledger *before* its create call, and carrying the ledger entry's
fields, :func:`..kit.encode_fields`: provider, run, machine, target, kind, owner, creation time, expiry, kept):

* if ``image`` is a local file (``.iso``, ``.qcow2``, ``.raw``; a release's ``.hdd``;
  the appliance ISO in tests): a Glance image uploaded from it, unless an image
  with the same digest (Glance's ``os_hash_value`` in its ``os_hash_algo``) exists already; deleted at
  the end only when this run uploaded it; anything else names a Glance image;
* a key pair holding the run's public key (Nova gives key pairs no tags: ours are known by name);
* a security group whose only ingress rule is tcp/22 from ``ssh_cidr`` (never
  0.0.0.0/0; Neutron's default egress rules stay: CernVM needs HTTP out for cvmfs);
* the server, with the context as user data (cloud-init and ``[ucernvm-begin]``
  pass through untouched), ``properties`` plus the ledger fields as server
  metadata, and the fields a listing filters on as server tags;
* with ``address = "floating"``: a floating IP from ``floating_ip_pool`` on the
  server's port, as soon as Nova has allocated that port (still in the launch:
  waiting for the server to run creates nothing).

Neutron and Glance resources carry the fields as ``key=value`` tags. Teardown
goes the other way (floating IP, server, security group, key pair, uploaded
image); everything already gone is fine; a security group Neutron still sees in
use (409, ports are released asynchronously) is retried. ``leftovers`` finds
ours by tags and names alone, for ``sweep``.

Credentials come only from openstacksdk's own chain (``clouds.yaml``,
``OS_CLOUD``, ``OS_*`` variables); the target names a cloud, never a password.

Modules, leaf first: :mod:`.api` (the SDK, connections, errors), :mod:`.options`, :mod:`.fields` (the ledger
entry as tags and metadata), :mod:`.destroy` (teardown and leftovers), :mod:`.provider`.
"""

from __future__ import annotations

from .api import SDK, connection, openstacksdk, reset_connections
from .fields import MARKER, from_fields, server_tags, tag_fields, tag_list
from .options import OpenStackOptions
from .provider import CREATION_ORDER, DISK_FORMATS, GLANCE, OpenStackMachine, OpenStackProvider, disk_format

__all__ = [
    "CREATION_ORDER",
    "DISK_FORMATS",
    "GLANCE",
    "MARKER",
    "SDK",
    "OpenStackMachine",
    "OpenStackOptions",
    "OpenStackProvider",
    "connection",
    "disk_format",
    "from_fields",
    "openstacksdk",
    "reset_connections",
    "server_tags",
    "tag_fields",
    "tag_list",
]
