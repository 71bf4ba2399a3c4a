"""Users created by the context (CernVM's release checklist: "login as repomgr"): amiconfig's ``[cernvm]
users=name:group:password`` and cloud-init's ``users:`` each create a user, who logs in over SSH with the run's key
only where the context gave it the key, and with its password only where the profile says the image allows it.

``users.created`` lists the context's users the image must create: name, group, and whether the key and the password
log in. Logins are tried from the host on connections of their own (the password is never shown).
"""

import shlex

import pytest

from cernvm_fixtures import expect, expect_ahead
from cernvm_fixtures.context import RUN_KEYS
from cernvm_fixtures.errors import Unsupported

# a test account's password, in the user data like the release checklist's own (not a secret of anyone's)
PASSWORD = "cvmfx-Repomgr-7d1e"
CONTEXT = {
    "amiconfig": f"[cernvm]\nusers=repomgr:repomgr:{PASSWORD}\n",
    "cloud_config": {"users": [{"name": "cvmfx", "ssh_authorized_keys": [RUN_KEYS]}]},
}
CREATED = {"repomgr": "amiconfig [cernvm] users=", "cvmfx": "the cloud-config's users:"}


def created_users(instance):
    """The profile's users.created, each checked to be one this scenario's context creates."""
    users = expect(instance, "users.created")
    unknown = [user.name for user in users if user.name not in CREATED]
    if unknown:
        pytest.fail(
            f"profile {instance.profile.name!r}: users.created names {', '.join(map(repr, unknown))}, which the "
            f"users scenario's context does not create (it creates {', '.join(CREATED)})"
        )
    return users


def instance_for(request, cernvm_target):
    """The instance booted with this scenario's context, only where the profile lists users (skipped before
    booting elsewhere; so not booted ahead)."""
    expect_ahead(cernvm_target, "users.created")
    return request.getfixturevalue("cernvm")


@pytest.mark.cernvm_context(**CONTEXT)
def test_context_users_exist_with_their_group(request, cernvm_target):
    cernvm = instance_for(request, cernvm_target)
    problems = []
    for user in created_users(cernvm):
        name, group = user.name, user.group
        found = cernvm.run(f"id -gn {shlex.quote(name)}")
        if not found.succeeded:
            problems.append(
                f"user {name!r} (from {CREATED[name]}) does not exist on the instance: "
                f"{found.stderr.strip() or 'id failed'}"
            )
        elif found.stdout.strip() != group:
            problems.append(f"user {name!r} is in group {found.stdout.strip()!r}, the context asked for {group!r}")
    assert not problems, "; ".join(problems) + f" (profile {cernvm.profile.name!r}, users.created)"


@pytest.mark.cernvm_context(**CONTEXT)
def test_context_users_log_in_as_the_profile_says(request, cernvm_target):
    cernvm = instance_for(request, cernvm_target)
    users = created_users(cernvm)
    problems = []
    try:
        for user in users:
            name = user.name
            who = cernvm.key_login(name)
            if user.key and who != name:
                problems.append(
                    f"user {name!r} (from {CREATED[name]}) cannot log in with the run's key"
                    + (f" (logged in as {who!r})" if who else "")
                )
            elif not user.key and who is not None:
                problems.append(f"user {name!r} logged in with the run's key, which the context did not give it")
            accepted = cernvm.password_login(name, PASSWORD)
            if accepted != user.password:
                problems.append(
                    f"user {name!r}'s password login was {'accepted' if accepted else 'refused'}, profile expects it "
                    f"{'accepted' if user.password else 'refused'}"
                )
    except Unsupported as e:
        pytest.skip(f"{cernvm.target.name}: {e.reason}")
    assert not problems, "; ".join(problems) + f" (profile {cernvm.profile.name!r}, users.created)"
