"""Amazon EC2 through boto3: the CernVM "How to run on EC2" recipe, least privilege, leak-proof.

What a launch creates (each recorded in the ledger *before* its create call and
tagged at creation with the ledger entry's fields: run, machine, kind, owner,
creation time, expiry, kept):

* if ``image`` is a raw ``.hvm`` file: an S3 object (deleted again once
  imported), an imported snapshot and an HVM image registered from it with
  ``SriovNetSupport=simple``, ``EnaSupport=True`` and a scratch volume mapping
  (see :mod:`.image`);
* unless ``key_name`` names an existing key pair: a key pair imported from the
  run's public key;
* unless ``subnet_id`` is given, the minimal VPC of the CernVM documentation:
  VPC, internet gateway (attached), subnet, route table (default route to the
  gateway, associated with the subnet) (see :mod:`.network`);
* unless ``security_group_id`` is given: a security group whose only ingress
  rule is tcp/22 from ``ssh_cidr`` (never 0.0.0.0/0, never all protocols);
* the instance, with the context as user data and the scratch disk as an extra
  EBS volume (unless the image maps one already), deleted with the instance.

Teardown (``destroy_resource``, in the reverse of ``creation_order``) terminates
the instance and waits, then deletes the rest; everything already gone is fine,
and a resource whose id never reached the ledger is found by its tags.
``leftovers`` finds tagged resources with no ledger entry, for ``sweep``.

Credentials come only from boto3's own chain (environment, shared files,
profiles, SSO, instance roles); nothing secret is logged, recorded or written.

Modules, leaf first: :mod:`.aws` (clients, the error translation, paging), :mod:`.tags`
(the codec, finding by tag, the :class:`~.tags.Recorder` protocol), :mod:`.options`,
:mod:`.network` and :mod:`.image` (each takes a client and a recorder, never the
provider), :mod:`.provider`.
"""

from __future__ import annotations

from ..kit import parse_jump
from .aws import AWS, client, error_code, gone, known_regions, pages, reset_clients, resolve_region
from .options import Ec2Options, tag_problems
from .provider import Ec2Machine, Ec2Provider, decode_console, scratch_mapping
from .tags import CREATION_ORDER, RUN_TAG, resource_from_tags, tag_dict, tag_list

__all__ = [
    "AWS",
    "CREATION_ORDER",
    "RUN_TAG",
    "Ec2Machine",
    "Ec2Options",
    "Ec2Provider",
    "client",
    "decode_console",
    "error_code",
    "gone",
    "known_regions",
    "pages",
    "parse_jump",
    "reset_clients",
    "resolve_region",
    "resource_from_tags",
    "scratch_mapping",
    "tag_dict",
    "tag_list",
    "tag_problems",
]
