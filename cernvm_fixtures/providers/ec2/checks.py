"""The EC2 provider's doctor checks: credentials, region, image and the VPC quota, through boto3's own chain.

Standalone (it reads only the target's options), so the ec2 provider's ``checks``
classmethod is one line: ``return ec2_checks(target)``. Credentials are never printed:
only the kind of source boto3 found them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...doctor import Check
from ...download import redact

if TYPE_CHECKING:
    from ...config import Target

VPC_QUOTA = ("vpc", "L-F678F1CE")
"""Service Quotas code of "VPCs per Region"."""
DEFAULT_VPC_QUOTA = 5
"""AWS's default for that quota, assumed when Service Quotas cannot be read."""
CHAIN = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE with ~/.aws/credentials, SSO, or an instance role"


def ec2_checks(target: Target) -> list[Check]:
    """Each EC2 prerequisite of ``target``; API calls only once credentials and region are there."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError:
        return [Check.problem("boto3", "not installed", "pip install 'cernvm-fixtures[ec2]'")]
    options = target.options
    session = boto3.session.Session(region_name=options.region)
    found = []
    credentials = session.get_credentials()
    if credentials is None:
        found.append(Check.problem("credentials", "boto3's chain found none", f"configure one of: {CHAIN}"))
    else:
        found.append(Check.ok("credentials", f"found by boto3 ({credentials.method})"))
    region = session.region_name
    if region is None:
        found.append(
            Check.problem(
                "region",
                "not set",
                f'region = "eu-west-1" in targets.{target.name}, or AWS_DEFAULT_REGION / the profile\'s region',
            )
        )
    else:
        found.append(Check.ok("region", region + (f" at {options.endpoint_url}" if options.endpoint_url else "")))
    if credentials is None or region is None:
        return found
    ec2 = session.client("ec2", endpoint_url=options.endpoint_url)
    try:
        found.append(_image_check(target, ec2, session))
        if options.subnet_id is None:
            quotas = session.client("service-quotas", endpoint_url=options.endpoint_url)
            found.append(_vpc_check(target, ec2, quotas, region))
    except botocore.exceptions.ClientError as e:
        error = e.response.get("Error", {})
        found.append(
            Check.problem(
                "EC2 API",
                f"{error.get('Code')}: {error.get('Message')}",
                f"credentials allowed to describe images and VPCs in {region} ({CHAIN})",
            )
        )
    except botocore.exceptions.BotoCoreError as e:
        found.append(Check.problem("EC2 API", str(e), "check the network path to the EC2 endpoint"))
    return found


def _image_check(target: Target, ec2: Any, session: Any) -> Check:
    """An AMI must be visible in the region; a raw image file needs its import bucket."""
    import botocore.exceptions

    image, options = target.image, target.options
    if image.startswith("ami-"):
        try:
            images = ec2.describe_images(ImageIds=[image])["Images"]
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if not code.startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            return Check.problem(
                "image",
                f"{image} is not visible in {session.region_name}",
                "AMIs are per region: copy it here (aws ec2 copy-image) or use this region's id",
            )
        return Check.ok("image", f"{image} ({images[0].get('Name', '?')}, {images[0].get('State', '?')})")
    path = Path(image).expanduser()
    if not path.is_file():
        return Check.problem(
            "image",
            f"{redact(image)!r} is neither an AMI id nor a file",
            "an AMI id (ami-...) or a raw ucernvm-*.hvm file",
        )
    if not options.import_bucket:
        return Check.problem(
            "image",
            f"{path} must be imported, but no import_bucket is set",
            f'import_bucket = "<bucket>" in targets.{target.name}',
        )
    s3 = session.client("s3", endpoint_url=options.endpoint_url)
    try:
        s3.head_bucket(Bucket=options.import_bucket)
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        return Check.problem(
            "image",
            f"import bucket {options.import_bucket!r}: {code}",
            "create the bucket in this region, or give one these credentials may write to",
        )
    return Check.ok("image", f"{path} is imported through s3://{options.import_bucket}")


def _vpc_check(target: Target, ec2: Any, quotas: Any, region: str) -> Check:
    """Without ``subnet_id`` each instance gets its own VPC, so the region must have room for one more."""
    import botocore.exceptions

    used = len(ec2.describe_vpcs()["Vpcs"])
    try:
        quota = int(quotas.get_service_quota(ServiceCode=VPC_QUOTA[0], QuotaCode=VPC_QUOTA[1])["Quota"]["Value"])
        source = "Service Quotas"
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, KeyError, ValueError):
        quota, source = DEFAULT_VPC_QUOTA, "AWS default; Service Quotas not readable"
    if used >= quota:
        return Check.problem(
            "VPC quota",
            f"{used} of {quota} VPCs used in {region} ({source}); without subnet_id the run creates one per instance",
            f'subnet_id = "subnet-..." in targets.{target.name}, delete unused VPCs, or raise '
            f"'VPCs per Region' ({VPC_QUOTA[1]})",
        )
    return Check.ok("VPC quota", f"{used} of {quota} VPCs used in {region} ({source})")
