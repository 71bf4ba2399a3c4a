"""Docker: CernVM's Docker image, imported from its tarball, every command run through ``/init``.

As documented ("How to run on Docker"): the image comes from ``docker import`` of
the CernVM Docker tarball (it cannot be pulled, nor be the base of a Dockerfile),
and commands run as ``docker run ... my_cernvm /init CMD``. ``/init`` prepares the
CernVM environment for the process it runs: in ``parrot`` mode it starts parrot,
which presents /cvmfs (and the OS tree under CERNVM_ROOT) to the processes it
traces only, and needs ptrace, hence ``--security-opt seccomp=unconfined``; in
``bindmount`` mode the host's ``/cvmfs/<repo>`` directories are bind-mounted
read-only and there is no parrot (and no seccomp relaxation).

How commands run: the container's main process is ``/init`` followed by a sleep
(so ``/init`` does its one-time preparation of the container, e.g. linking the OS
tree, before the first command, and the harness sees it fail if it refuses), and
commands run in a long-lived ``docker exec`` of ``/init sh``, or, with stdin, in
an exec of ``/init sh -c CMD`` of their own (see
:mod:`cernvm_fixtures.transport.docker`): what ``/init`` sets up per process
(parrot, environment) exists only for processes it starts, exactly as with
``docker run ... /init CMD``.

Resources, each recorded in the run's ledger before it is created and labelled
``cernvm-fixtures.run`` / ``cernvm-fixtures.resource`` (the ledger entry as JSON)
so ``sweep`` finds them even without the ledger: the container, the machine's
directory (shared folders, stand-in repositories), and the imported image. An
image is imported once per run and content digest (``cvmfx-<run>:<digest>``),
reused by every instance and target of the run, and removed when the last
process of the run that used it exits (each instance records its use of it, so a
crashed run's image is found from the ledger as well as by its labels).

Modules, leaf first: :mod:`.options` (the target keys), :mod:`.tarball` (checking and
unpacking CernVM Docker tarballs), :mod:`.spec` (the container spec and the labels,
pure); this package holds the daemon connection, the run's images, the provider and
the machine.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ... import images
from ...context import Context
from ...dirs import state_dir
from ...doctor import Check
from ...errors import ConfigError, PermanentError, ProviderError
from ...images import appliance_variant
from ...interrupts import interruptible
from ...ledger import Resource
from ...transport.base import Login
from ...transport.docker import DockerTransport
from ..base import Machine, Provider
from ..kit import ClientCache, SdkErrors, machine_directory, remove_machine_directory, sdk, wait_until
from .options import DockerOptions, os_repository, parrot_repo_env
from .spec import (
    KEEPALIVE,
    LABEL_RUN,
    UP_LINE,
    container_spec,
    image_ref,
    import_changes,
    labelled_state,
    resource_from_labels,
    resource_labels,
)
from .tarball import TARBALL_SUFFIXES, Tarball, extract_repository, inspect_tarball, keys_archive

__all__ = [
    "KEEPALIVE",
    "UP_LINE",
    "DockerMachine",
    "DockerOptions",
    "DockerProvider",
    "connect",
    "container_spec",
    "image_ref",
    "import_changes",
    "inspect_tarball",
    "labelled_state",
    "os_repository",
    "parrot_repo_env",
    "resource_from_labels",
    "resource_labels",
]

log = logging.getLogger(__name__)

TARBALL = images.Accepts(".tar", "CernVM Docker tarballs (cvm-docker.<V>-<R>.cernvm.x86_64.tar)", fmt="docker")


class ContainerExited(PermanentError):
    """The container's main process (/init) ended: waiting longer cannot help (readiness stops at once)."""


# --- the Docker SDK, imported lazily ---------------------------------------------------------------------


def _docker() -> Any:
    return sdk("docker", "docker", "docker")


def _gone(error: Any) -> bool:
    """Not there (any more), or its removal is in progress already (another teardown of the same object)."""
    if isinstance(error, _docker().errors.NotFound):
        return True
    return bool(error.status_code == 409 and "already in progress" in str(error.explanation))


def _explanation(error: Any) -> str:
    return str(error.explanation or error)


DOCKER = SdkErrors(lambda: (_docker().errors.APIError,), not_found=_gone, message=_explanation)
"""The Docker SDK's API errors read once: ``DOCKER.call(what, fn, missing_ok=True)`` takes a gone object as done."""


def daemon_address(url: str | None) -> str:
    """The daemon a client for ``url`` talks to (DOCKER_HOST, else the local socket)."""
    return url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _client(key: str) -> Any:
    docker = _docker()
    url = key or None
    try:
        client = docker.DockerClient(base_url=url) if url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        raise ProviderError(
            f"cannot reach the Docker daemon at {daemon_address(url)}: {e}. Is dockerd running? "
            "(Debian: apt-get install docker.io, then start dockerd; ./dev does both.) "
            "If it listens elsewhere, set DOCKER_HOST or the target's url."
        ) from None
    return client


_clients: ClientCache[str, Any] = ClientCache(_client)


def connect(url: str | None = None) -> Any:
    """One Docker client per daemon for the process; ProviderError naming the daemon if it does not answer."""
    return _clients.get(url or "")


# --- images -------------------------------------------------------------------------------------------------


_held: dict[tuple[str, str], str] = {}
"""Images this process imported or reused: (daemon url, ref) -> run directory; removed when the process exits."""
_held_lock = threading.Lock()


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Serialise image import/use/removal between the processes of one run (xdist workers)."""
    if not directory.is_dir():
        yield  # the run is over (its directory removed): no other process of it is left
        return
    with open(directory / "docker.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_image(client: Any, ref: str, image_id: str | None = None) -> None:
    """Remove an image unless a container still uses it (the last user removes it); gone already is fine."""
    docker = _docker()
    for name in [ref, image_id] if image_id else [ref]:
        try:
            client.images.remove(name)
            return
        except docker.errors.ImageNotFound:
            continue
        except docker.errors.APIError as e:
            if e.status_code == 409:
                log.debug("image %s is still used by a container; its last user removes it", name)
                return
            raise ProviderError(f"cannot remove image {name}: {e.explanation or e}") from None


@atexit.register
def _release_held() -> None:
    """Remove the images this process used, once it is done with everything (signals held meanwhile)."""
    if not _held:
        return
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        while _held:
            (url, ref), run_dir = _held.popitem()
            try:
                with run_lock(Path(run_dir)):
                    remove_image(connect(url or None), ref)
            except Exception as e:  # noqa: BLE001 - at exit: report, cernvm-fixtures sweep finds it by its labels
                log.warning("cernvm: could not remove image %s (cernvm-fixtures sweep will): %s", ref, e)
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


# --- containers -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSource:
    """Where the container's image comes from: a tarball to import, or a local image."""

    tarball: Tarball | None = None
    local: str | None = None
    appliance: bool = False


def _ours(labels: Mapping[str, str], resource: Resource) -> bool:
    """Whether a container or volume found by the recorded name carries that entry's run (a create refused for a
    name someone else holds must not delete theirs)."""
    if labels.get(LABEL_RUN) == resource.run:
        return True
    log.warning("%s %s belongs to another run; left alone", resource.kind, resource.name)
    return False


class DockerProvider(Provider[DockerOptions, "DockerMachine"]):
    """Runs CernVM's Docker image on a Docker daemon (local, or the one DOCKER_HOST names)."""

    name = "docker"
    Options = DockerOptions
    shares_folders = True
    no_screen = "a Docker container has no display"
    no_power_button = "a container has no ACPI power button (docker stop signals its init instead)"
    instance_kind = "container"
    no_cable = "a container has no network cable (the harness runs it with network none)"
    creation_order = ("directory", "image", "container", "volume")

    @classmethod
    def check_profile(cls, target: Any, profile: Any) -> None:
        """In parrot mode CernVM's /init fetches the OS repository over the network: ``network = "none"`` cannot
        work for an image whose profile loads its OS over the network (the appliance's image carries its repository,
        its profile says so)."""
        options: DockerOptions = target.options
        traits = {"provider": "docker", "kind": "container", "cvmfs_mode": options.mode}
        if options.mode == "parrot" and options.network == "none" and profile.boots_over_network(traits):
            raise ConfigError(
                f"{target.where('network')}: 'none' leaves the container no network, but in mode 'parrot' /init "
                f"fetches the OS repository over the network (profile {profile.name!r}: boot.network); use a Docker "
                "network that reaches your CernVM-FS servers or proxy (e.g. network = 'bridge'), or mode = "
                "'bindmount' with the host's /cvmfs"
            )

    def machine(self, name: str) -> DockerMachine:
        return DockerMachine(self, name)

    @classmethod
    def check_image_name(cls, target: Any) -> None:
        """The appliance's broken variants are properties of a booted VM: its Docker tarball has none."""
        variant = appliance_variant(target.image)
        if variant not in (None, "ok"):
            raise ConfigError(
                f"{target.where('image')}: {target.image!r}: the appliance's Docker tarball has no broken variants "
                "(they are properties of a booted VM); use 'appliance', or give a tarball's path"
            )

    def image_source(self, client: Any) -> ImageSource:
        """Check the target's image before anything is created: tarball, appliance or local image."""
        image = self.target.image
        self.check_image_name(self.target)
        variant = appliance_variant(image)
        if variant is not None:
            from ... import appliance

            built = appliance.build()
            return ImageSource(
                tarball=inspect_tarball(built.docker_tarball, self.target.where("image")), appliance=True
            )
        if image.startswith(("release:", "http://", "https://")):
            path = images.local_file(self.target, TARBALL)
            return ImageSource(tarball=inspect_tarball(path, self.target.where("image")))
        path = Path(image).expanduser()
        looks_like_path = image.startswith(("/", "./", "../", "~")) or image.endswith(TARBALL_SUFFIXES)
        if path.is_file() or looks_like_path:
            return ImageSource(tarball=inspect_tarball(path, self.target.where("image")))
        docker = _docker()
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ConfigError(
                f"{self.target.where('image')}: {image!r} is neither a file nor a local Docker image; import the "
                f"CernVM Docker tarball first (cat cvm-docker.<V>-<R>.cernvm.x86_64.tar | docker import - {image}) "
                "or give the tarball's path (images cannot be pulled)"
            ) from None
        except docker.errors.APIError as e:
            raise ConfigError(
                f"{self.target.where('image')}: {image!r} is not a valid Docker image name: {e.explanation or e}"
            ) from None
        return ImageSource(local=image)

    def launch(self, machine: DockerMachine, context: Context) -> None:
        options: DockerOptions = self.options
        # --- checks: nothing is created until all of them passed
        client = connect(options.url)
        source = self.image_source(client)
        for repo, path in options.repositories.items():
            if not path and not source.appliance:
                raise ConfigError(
                    f'{self.target.where()}.repositories.{repo}: "" (the appliance\'s own copy) '
                    "needs image = 'appliance'; "
                    f"give the host directory of /cvmfs/{repo}"
                )
        environment: dict[str, str] = {str(k): v for k, v in options.env.items()}
        keys: dict[str, Path] = {}
        if "PARROT_CVMFS_REPO" in environment:
            environment["PARROT_CVMFS_REPO"], keys = parrot_repo_env(environment["PARROT_CVMFS_REPO"])
        if options.network not in ("none", "bridge", "host"):
            try:
                client.networks.get(options.network)
            except _docker().errors.NotFound:
                raise ConfigError(
                    f"{self.target.where()}.network: no Docker network {options.network!r} (docker network ls)"
                ) from None
        try:
            info = client.info()
        except _docker().errors.DockerException as e:
            raise ProviderError(f"{machine.name}: the Docker daemon did not answer: {e}") from None
        machine.traits["host_kernel"] = str(info.get("KernelVersion", ""))
        if context.user_data:
            log.info(
                "%s: CernVM in Docker is not contextualized; the requested user data is not delivered", machine.name
            )

        # --- creation, each resource recorded first
        directory = machine.directory
        self.record_directory(machine, directory)
        mounted: dict[str, Path] = {}
        for repo, path in options.repositories.items():
            if path:
                mounted[repo] = Path(path).expanduser().resolve()
            else:
                assert source.tarball is not None
                mounted[repo] = directory / "cvmfs" / repo
                extract_repository(source.tarball.path, repo, mounted[repo])
        machine.make_shared_folders(directory)
        docker = _docker()
        with run_lock(self.run.directory):
            image = self._image(machine, client, source)
            resource = self.record(
                machine, "container", machine.name, url=options.url, directory=str(directory), image=image
            )
            spec = container_spec(
                name=machine.name,
                image=image,
                mode=options.mode,
                network=options.network,
                environment=environment,
                repositories=mounted,
                shared=machine.shared_folders,
                labels=resource_labels(resource, self.run.directory.parent.parent),
                hostname=context.hostname,
            )
            try:
                machine.container = client.containers.create(**spec)
            except docker.errors.APIError as e:
                raise ProviderError(
                    f"{machine.name}: Docker could not create the container: {e.explanation or e}"
                ) from None
        try:
            if keys:
                machine.container.put_archive("/", keys_archive(keys))
            machine.container.start()
        except docker.errors.APIError as e:
            raise ProviderError(f"{machine.name}: Docker could not start the container: {e.explanation or e}") from None

    def _image(self, machine: DockerMachine, client: Any, source: ImageSource) -> str:
        """The image to run: a local one as is, a tarball imported once per run (call with the run lock)."""
        if source.local is not None:
            return source.local
        assert source.tarball is not None
        docker = _docker()
        url = self.options.url
        ref = image_ref(self.run.id, source.tarball.digest)
        resource = self.record(
            machine,
            "image",
            machine.name,
            url=url,
            image=ref,
            digest=source.tarball.digest,
            tarball=str(source.tarball.path),
            run_dir=str(self.run.directory),
        )
        try:
            client.images.get(ref)
        except docker.errors.ImageNotFound:
            log.info("%s: importing %s as %s", machine.name, source.tarball.path, ref)
            repository, _, tag = ref.partition(":")
            try:
                changes = import_changes(resource_labels(resource, self.run.directory.parent.parent))
                # In a worker thread so Ctrl-C is taken at once; an import the interrupt left running is removed
                # when it returns (or, if the process is gone by then, by sweep: the image carries its labels).
                interruptible(
                    f"{machine.name}: docker import",
                    functools.partial(
                        client.api.import_image_from_file,
                        str(source.tarball.path),
                        repository=repository,
                        tag=tag,
                        changes=changes,
                    ),
                    undo=lambda _: remove_image(client, ref),
                )
                client.images.get(ref)
            except docker.errors.DockerException as e:
                raise ProviderError(f"{machine.name}: docker import of {source.tarball.path} failed: {e}") from None
        with _held_lock:
            _held[(url or "", ref)] = str(self.run.directory)
        return ref

    @classmethod
    def destroy_resource(cls, resource: Resource) -> None:
        if resource.kind == "directory":
            remove_machine_directory(resource)
            return
        url = resource.data.get("url")
        if resource.kind == "image":
            ref = resource.data["image"]
            if (url or "", ref) in _held:
                return  # this process may still start containers from it; removed when it exits
            remove_image(connect(url), ref, resource.data.get("id"))
            return
        if resource.kind not in ("container", "volume"):
            raise ProviderError(f"docker cannot destroy unknown resource kind {resource.kind!r}")
        client = connect(url)

        def remove() -> None:
            if resource.kind == "container":
                found = client.containers.get(resource.name)
                if _ours(found.labels, resource):
                    found.remove(force=True, v=True)
            else:
                found = client.volumes.get(resource.name)
                if _ours(found.attrs.get("Labels") or {}, resource):
                    found.remove(force=True)

        DOCKER.call(f"{resource.kind} {resource.name}", remove, missing_ok=True)

    @classmethod
    def leftovers(cls, target, recorded: set[str]) -> list[Resource]:
        """Containers, images and volumes labelled by cernvm-fixtures that no ledger entry covers.

        Only what is provably ours counts: a container whose own name is the recorded name (not one started
        from our image, which inherits its labels), an image tagged with its run's own name (not a
        ``docker commit`` of a container), and as the machine's directory only ``runs/<run>/machines/<name>``
        under this state directory, never a path taken from a label.
        """
        url = target.options.url
        client = connect(url)
        found: list[Resource] = []
        selector = {"label": LABEL_RUN}
        # a container removed between the listing and its inspection (another run's teardown) is not a leftover
        for container in client.containers.list(all=True, filters=selector, ignore_removed=True):
            resource = resource_from_labels(container.labels)
            if resource is None or resource.name in recorded or resource.kind != "container":
                continue
            if container.name != resource.name:
                continue
            found.append(replace(resource, data={"url": url}))
            directory = machine_directory(state_dir(), resource.run, resource.name)
            if directory is not None:
                found.append(replace(resource, kind="directory", data={"path": str(directory)}))
        for image in client.images.list(filters=selector):
            resource = resource_from_labels(image.labels)
            if resource is None or resource.name in recorded or resource.kind != "image":
                continue
            own = [tag for tag in image.tags if tag.startswith(f"cvmfx-{resource.run}:")]
            if not own:
                continue
            found.append(replace(resource, data={"url": url, "image": own[0], "id": image.id}))
        for volume in client.volumes.list(filters=selector):
            resource = resource_from_labels(volume.attrs.get("Labels"))
            if resource is None or resource.name in recorded or resource.kind != "volume":
                continue
            if volume.name != resource.name:
                continue
            found.append(replace(resource, data={"url": url}))
        return found

    @classmethod
    def checks(cls, target) -> list[Check]:
        """The daemon answers, supports seccomp profiles (parrot mode relaxes one), and has room for the import."""
        options: DockerOptions = target.options
        address = daemon_address(options.url)
        try:
            client = connect(options.url)
            info = client.info()
        except (ProviderError, _docker().errors.DockerException) as e:
            return [
                Check.problem(
                    "daemon",
                    str(e),
                    "start dockerd (nohup dockerd & as root; ./dev setup does it), "
                    f"or point DOCKER_HOST / targets.{target.name}.url at one",
                )
            ]
        found = [Check.ok("daemon", f"{address}: Docker {info.get('ServerVersion', '?')}")]
        security = [o for o in info.get("SecurityOptions") or [] if o.startswith("name=seccomp")]
        found.append(
            Check.ok("seccomp", security[0].removeprefix("name="))
            if security
            else Check.warning(
                "seccomp",
                "the daemon reports no seccomp support: containers run unfiltered",
                "a kernel with CONFIG_SECCOMP and a dockerd built with libseccomp",
            )
        )
        found.append(cls._space_check(target, info.get("DockerRootDir") or "/var/lib/docker", address))
        return found

    @staticmethod
    def _space_check(target, root: str, address: str) -> Check:
        """Free space under the daemon's root for the tarball the run imports (its unpacked size, estimated)."""
        image = target.image
        if appliance_variant(image) is not None:
            needed, what = 256 * 1024**2, "the appliance's root fs"
        else:
            path = Path(image).expanduser()
            if not path.is_file():
                return Check.ok("free space", f"nothing to import ({image!r} is a local image)")
            needed, what = path.stat().st_size, str(path)
            if path.name.endswith((".gz", ".tgz")):
                with open(path, "rb") as f:
                    f.seek(-4, os.SEEK_END)
                    needed = max(needed, int.from_bytes(f.read(4), "little"))  # gzip's ISIZE: unpacked size mod 4 GiB
            elif not path.name.endswith(".tar"):
                needed *= 4
        if not address.startswith("unix://") or not Path(root).is_dir():
            return Check.ok("free space", f"not checked: {root} of {address} is not on this host")
        free = shutil.disk_usage(root).free
        have = f"{free / 1024**3:.1f} GiB free under {root}"
        if free < needed * 1.2:
            return Check.problem(
                "free space",
                f"{have}, importing {what} needs about {needed * 1.2 / 1024**3:.1f} GiB",
                f"free space under {root} (docker system prune)",
            )
        return Check.ok("free space", f"{have} (import needs {needed / 1024**2:.0f} MiB)")


class DockerMachine(Machine):
    """A container whose main process is /init plus a sleep; commands are execs through /init."""

    def __init__(self, provider: DockerProvider, name: str) -> None:
        super().__init__(provider, name)
        self.options: DockerOptions = provider.options
        self.container: Any = None
        self.directory = provider.run.machine_dir(name)
        self._transport: DockerTransport | None = None
        self.traits.update(kind="container", cvmfs_mode=self.options.mode, network=self.options.network)

    def _logs(self) -> str:
        if self.container is None:
            return ""
        try:
            raw = self.container.logs(stdout=True, stderr=True)
        except Exception:  # noqa: BLE001 - a console log is best effort
            return ""
        return raw.decode("utf-8", "replace")

    def wait_running(self, deadline: float) -> None:
        """Running, and the main process's /init prepared the container (it prints UP_LINE), or why not."""
        docker = _docker()
        seen = {"status": "unknown"}

        def up() -> bool | None:
            try:
                self.container.reload()
            except docker.errors.NotFound:
                raise ContainerExited("the container disappeared") from None
            state = self.container.attrs.get("State", {})
            status = seen["status"] = state.get("Status")
            if status == "running" and UP_LINE in self._logs():
                return True
            if status in ("exited", "dead"):
                tail = "\n".join(self._logs().strip().splitlines()[-15:])
                raise ContainerExited(
                    f"the container's /init exited with status {state.get('ExitCode')} before it was up: {tail}"
                )
            return None

        wait_until(
            "container up",
            up,
            deadline,
            0.05,
            status=lambda: f"container is {seen['status']}; /init has not said {UP_LINE!r}",
        )

    def transport(self) -> DockerTransport:
        if self._transport is None:
            self._transport = DockerTransport(connect(self.options.url).api, self.name)
        return self._transport

    def login_command(self) -> Login:
        env = {"DOCKER_HOST": self.options.url} if self.options.url else {}
        return Login(["docker", "exec", "-it", self.name, "/init"], env)

    def console_log(self) -> str:
        """The main process's output (/init's own lines), then what /init printed before recent commands."""
        parts = [self._logs()]
        if self._transport is not None:
            parts += [f"[/init before a command]\n{text}" for text in self._transport.preambles]
        return "\n".join(p.rstrip("\n") for p in parts if p)
