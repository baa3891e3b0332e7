"""What a request may ask for on this pman: sizes, resource caps, images.

The static bounds (jid, auid, image and path lengths, integer ranges) are in
the request schema (``pman.api.schemas``) and so in the OpenAPI document; the
ones a site configures (``PMAN_MAX_*``, ``PMAN_IMAGE_ALLOWLIST``) are checked
here, after the schema, and reported the same way: an InvalidJobSpec naming
every offending field and the setting that bounds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pman.errors import InvalidJobSpec
from pman.models import JobRequest

if TYPE_CHECKING:
    # the bounds are settings of a resource, declared with them
    from pman.settings.limits import Limits

# ---- image references ---------------------------------------------------------
# The grammar of github.com/distribution/reference (what Docker, Podman and
# containerd parse), without IPv6 registry addresses.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_DOMAIN_ONLY = re.compile(_DOMAIN)
#: the longest repository name the reference grammar allows
NAME_MAX = 255
DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")


def _split_domain(name: str) -> tuple[str, str]:
    """(registry, path) as Docker splits a name: the first component is a
    registry when it has a '.' or a ':', is 'localhost', or has capitals."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        domain, path = first.lower(), rest
    else:
        domain, path = DOCKER_HUB, name
    if domain in _DOCKER_HUB_ALIASES:
        domain = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"  # Docker Hub's official images
    return domain, path


@dataclass(frozen=True)
class ImageReference:
    """A parsed, fully qualified image reference."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        """The reference with registry and tag spelled out: what the engine is given
        when an allowlist is set, so it runs exactly the image that was checked."""
        text = self.repository
        if self.tag is not None or self.digest is None:
            text += f":{self.tag or 'latest'}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_image(text: str) -> ImageReference:
    """``text`` normalised as Docker does (``fnndsc/pl-x`` is
    ``docker.io/fnndsc/pl-x:latest``); ValueError when it is no valid reference."""
    m = _REFERENCE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a valid image reference")
    name = m.group("name")
    if len(name) > NAME_MAX:
        raise ValueError(f"the repository name of {text!r} is over {NAME_MAX} characters")
    domain, path = _split_domain(name)
    if not _DOMAIN_ONLY.fullmatch(domain):
        raise ValueError(f"{text!r} is not a valid image reference")
    return ImageReference(domain, path, m.group("tag"), m.group("digest"))


_PATTERN_CHARS = re.compile(r"[A-Za-z0-9._/:@*+-]+")


@dataclass(frozen=True)
class ImagePattern:
    """One entry of PMAN_IMAGE_ALLOWLIST: a repository with ``*`` wildcards,
    optionally pinned to a tag (``:2.*``) or a digest (``@sha256:...``)."""

    text: str
    repository: re.Pattern[str]
    tag: re.Pattern[str] | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImagePattern:
        if not _PATTERN_CHARS.fullmatch(text):
            raise ValueError(f"{text!r}: only the characters of image references and '*'")
        name, at, digest = text.partition("@")
        tag = None
        last = name.rsplit("/", 1)[-1]
        if ":" in last:  # a ':' after the last '/' starts a tag, before it a port
            name, _, tag = name.rpartition(":")
        if not name or (at and not digest) or (tag is not None and not tag):
            raise ValueError(f"{text!r} is not an image pattern")
        domain, path = _split_domain(name)
        if not path or "//" in path or path.endswith("/") or ".." in path:
            raise ValueError(f"{text!r} is not an image pattern")
        # a '*' never crosses from the registry into the path; in the path it
        # matches any characters a path has (the image itself is checked against
        # the reference grammar first, so no '..' or '//' can hide in it)
        repository = re.compile(
            re.escape(domain).replace(r"\*", "[^/]*") + "/" + re.escape(path).replace(r"\*", ".*")
        )
        tag_re = re.compile(re.escape(tag).replace(r"\*", ".*")) if tag is not None else None
        return cls(text, repository, tag_re, digest or None)

    def matches(self, image: ImageReference) -> bool:
        if not self.repository.fullmatch(image.repository):
            return False
        if self.digest is not None and image.digest != self.digest:
            return False
        return self.tag is None or self.tag.fullmatch(image.tag or "latest") is not None


def parse_image_allowlist(text: str) -> tuple[ImagePattern, ...]:
    """PMAN_IMAGE_ALLOWLIST: comma-separated image patterns."""
    return tuple(ImagePattern.parse(p.strip()) for p in text.split(",") if p.strip())


def allowed_image(image: str, allowlist: tuple[ImagePattern, ...]) -> str:
    """The fully qualified reference of ``image`` if the allowlist admits it
    (``image`` unchanged when there is no allowlist); InvalidJobSpec otherwise."""
    if not allowlist:
        return image
    try:
        ref = parse_image(image)
    except ValueError as e:
        raise InvalidJobSpec(
            f"image {e}", fields={"image": "not a valid image reference"}
        ) from None
    if any(p.matches(ref) for p in allowlist):
        return str(ref)
    patterns = ", ".join(p.text for p in allowlist)
    raise InvalidJobSpec(
        f"image {image!r} ({ref}) is not allowed on this pman: it matches none of "
        f"PMAN_IMAGE_ALLOWLIST ({patterns})",
        fields={"image": f"not in PMAN_IMAGE_ALLOWLIST ({patterns})"},
    )


# ---- Linux capabilities ---------------------------------------------------------
#: every capability of Linux 6.x (capabilities(7)), without the CAP_ prefix
LINUX_CAPABILITIES = frozenset(
    {
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
        "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
        "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
        "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
        "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
        "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
    }
)  # fmt: skip


def parse_capabilities(text: str) -> tuple[str, ...]:
    """PMAN_CAP_ADD: comma-separated capability names (``NET_BIND_SERVICE`` or
    ``CAP_NET_BIND_SERVICE``, any case), as ``CAP_...``."""
    caps: list[str] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name = item.upper().removeprefix("CAP_")
        if name not in LINUX_CAPABILITIES:
            raise ValueError(f"{item!r} is not a Linux capability (see capabilities(7))")
        if f"CAP_{name}" not in caps:
            caps.append(f"CAP_{name}")
    return tuple(caps)


# ---- per-request limits and caps ----------------------------------------------------
def _check_words(
    problems: dict[str, str], field: str, words: list[str], count: int, length: int, what: str
) -> None:
    count_var, length_var = (
        ("PMAN_MAX_ENV", "PMAN_MAX_ENV_LENGTH")
        if what == "env"
        else ("PMAN_MAX_ARGS", "PMAN_MAX_ARG_LENGTH")
    )
    if len(words) > count:
        problems[field] = (
            f"{field} has {len(words)} items, over this pman's limit of {count} ({count_var})"
        )
        return
    for i, word in enumerate(words):
        if len(word) > length:
            problems[field] = (
                f"{field} item {i} has {len(word)} characters, over this pman's limit of "
                f"{length} ({length_var})"
            )
            return


def check_request(request: JobRequest, limits: Limits) -> str:
    """Raise InvalidJobSpec naming every field over a limit or a cap; return the
    image to run (fully qualified when an allowlist is set)."""
    problems: dict[str, str] = {}
    for field in ("args", "args_path_flags", "entrypoint"):
        words = getattr(request, field)
        _check_words(problems, field, words, limits.max_args, limits.max_arg_length, "args")
    _check_words(problems, "env", request.env, limits.max_env, limits.max_env_length, "env")
    caps = (
        ("cpu_limit", limits.max_cpu_limit, "millicores", "PMAN_MAX_CPU_LIMIT"),
        ("memory_limit", limits.max_memory_limit, "MiB", "PMAN_MAX_MEMORY_LIMIT"),
        ("gpu_limit", limits.max_gpu_limit, "GPUs", "PMAN_MAX_GPU_LIMIT"),
        ("number_of_workers", limits.max_workers, "workers", "PMAN_MAX_WORKERS"),
    )
    for field, cap, unit, var in caps:
        value = getattr(request, field)
        if cap and value > cap:
            problems[field] = (
                f"{field} {value} {unit} is over this pman's cap of {cap} {unit} ({var})"
            )
    if not limits.gpus and request.gpu_limit > 0:
        problems["gpu_limit"] = "gpu_limit: this resource has no GPUs (PMAN_GPUS=no)"
    image = request.image
    try:
        image = allowed_image(request.image, limits.image_allowlist)
    except InvalidJobSpec as e:
        problems["image"] = e.message
    if problems:
        # every problem names its field and the limit: the message is their list
        raise InvalidJobSpec("; ".join(problems.values()), fields=problems)
    return image
