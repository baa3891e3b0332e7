"""The sandbox every local job runs in: bubblewrap (``bwrap``) as an unprivileged user.

A job runs as ``bwrap ... -- COMMAND`` started by its supervisor
(:mod:`pman.backends.local.runner`) as the job's user (PMAN_LOCAL_USER,
default nobody, when pman is root; pman's own user otherwise). bwrap then
makes a user namespace that maps only that user, new mount, PID, IPC, UTS
and cgroup namespaces, and shows the job:

- the host's ``/usr`` and ``/etc`` read-only, and ``/bin``, ``/sbin``,
  ``/lib*`` as the host has them (symbolic links into ``/usr`` on Debian 12);
- a fresh ``/proc`` (its own processes only), a minimal ``/dev``, a private
  ``/tmp``;
- its input folder read-only and its output folder read-write, at
  ``/share/incoming`` and ``/share/outgoing`` and at their host paths (the
  command names the host paths, as the local backend always did);
- its program, when it is not in ``/usr``, read-only at the path pman found it
  at, and the folders of PMAN_LOCAL_READ_ONLY_PATHS read-only;

and nothing else of the host: not PMAN_DATA_DIR, not the rest of STOREBASE,
not other jobs. It has no capabilities (``--cap-drop ALL``, and a user
namespace gives none outside it), ``no_new_privs`` (bwrap always sets it), a
new session (``--new-session``), cannot make further user namespaces
(``--disable-userns``), and dies with its supervisor (``--die-with-parent``).
It shares the host's network.

bwrap resolves the folders it binds as the job's user, who usually cannot
reach STOREBASE (pytest's temporary folders are private to root, and so may a
site's STOREBASE be). So a root supervisor first binds every such folder onto
a tmpfs at :data:`STAGE` in a mount namespace of the job's own, then drops to
the job's user and runs bwrap on those. The job's environment reaches bwrap
through a file descriptor (``--args``), never its command line, which every
user of the host can read.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: where a root supervisor binds a job's folders for bwrap to find them. Any
#: folder that exists will do: it is covered only in the job's own mount namespace
STAGE = Path("/mnt")
#: where bwrap is looked for after PATH (Debian's bubblewrap package puts it in /usr/bin)
BWRAP_DIRS = ("/usr/bin", "/bin", "/usr/local/bin")
#: nobody:nogroup, which every Debian system has
DEFAULT_UID = DEFAULT_GID = 65534
#: the host folders every job sees read-only, at the same path
SYSTEM_DIRS = ("/usr", "/etc")
#: shown as the host has them: a symbolic link (merged /usr) or a read-only folder
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
#: bwrap refuses more arguments than 9000 (its own bound), --setenv takes three each
MAX_ENV = 2500

NAMESPACE_FLAGS = (
    "--unshare-user",
    "--disable-userns",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--die-with-parent",
    "--new-session",
    "--cap-drop",
    "ALL",
)


def find_bwrap() -> str | None:
    """bwrap's path: on PATH, else where Debian installs it (pman's PATH may be bare)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *BWRAP_DIRS])
    return shutil.which("bwrap", path=search)


@dataclass(frozen=True)
class JobUser:
    """Who a job runs as; ``switch`` when the supervisor must become that user
    (pman is root), else it is pman's own user."""

    uid: int
    gid: int
    switch: bool

    def __str__(self) -> str:
        return f"uid {self.uid} gid {self.gid}"


def _lookup_id(text: str, kind: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        if kind == "user":
            return pwd.getpwnam(text).pw_uid
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ValueError(f"no {kind} named {text!r} on this host") from None


def resolve_user(setting: str | None) -> JobUser:
    """The job user for PMAN_LOCAL_USER (``USER[:GROUP]``, see :mod:`.settings`);
    ValueError when it cannot be used."""
    if os.geteuid() != 0:
        me = JobUser(os.getuid(), os.getgid(), switch=False)
        if setting is None:
            return me
        asked = resolve_user_as_root(setting)
        if (asked.uid, asked.gid) != (me.uid, me.gid):
            raise ValueError(
                f"pman runs as uid {me.uid} gid {me.gid}, not root, so it cannot run jobs as "
                f"{asked}: leave PMAN_LOCAL_USER unset (jobs then run as pman's own user, "
                "in a user namespace) or run pman as root"
            )
        return me
    if setting is None:
        return JobUser(DEFAULT_UID, DEFAULT_GID, switch=True)
    return resolve_user_as_root(setting)


def resolve_user_as_root(setting: str) -> JobUser:
    user, _, group = setting.partition(":")
    uid = _lookup_id(user, "user")
    if group:
        gid = _lookup_id(group, "group")
    else:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid  # a bare number no account has: its own group number
    if uid == 0 or gid == 0:
        raise ValueError("jobs must not run as root (uid 0 or gid 0)")
    return JobUser(uid, gid, switch=True)


def system_args() -> list[str]:
    """bwrap arguments that show the host's system folders read-only."""
    args: list[str] = []
    for folder in SYSTEM_DIRS:
        args += ["--ro-bind", folder, folder]
    for link in SYSTEM_LINKS:
        path = Path(link)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), link]
        elif path.is_dir():
            args += ["--ro-bind", link, link]
    return args


def inside(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or in it (absolute paths, as text)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def overlap(a: str, b: str) -> bool:
    """True when one of two absolute paths is the other or inside it."""
    return inside(a, b) or inside(b, a)


def shown_by_system(path: str) -> bool:
    """True when the sandbox shows ``path`` of the host as it is, through the
    system folders (a symbolic link among them is shown as a link)."""
    return any(path == root or path.startswith(root + "/") for root in SYSTEM_DIRS + SYSTEM_LINKS)


@dataclass(frozen=True)
class Bind:
    """A host path (``source``) the job sees at ``dest``."""

    source: str
    dest: str
    writable: bool = False


def build(
    bwrap: str,
    user: JobUser,
    binds: Sequence[Bind],
    command: Sequence[str],
    env: dict[str, str],
    cwd: str,
) -> dict[str, Any]:
    """How the supervisor runs one job: a plain dict, kept in ``spec.json``.

    ``args`` are bwrap's arguments after ``--args FD`` (binds, flags, command),
    ``options`` what goes through FD (the environment), ``stage`` the sources a
    root supervisor binds at STAGE first, ``user`` the uid and gid it becomes.
    """
    if len(env) > MAX_ENV:
        raise ValueError(f"the local backend passes at most {MAX_ENV} env entries")
    for text in (*env, *env.values(), *command):
        if "\x00" in text:
            raise ValueError("a NUL byte cannot pass into a job's command or environment")
    stage = user.switch
    args = [*NAMESPACE_FLAGS, *system_args(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    staged: list[dict[str, Any]] = []
    for i, bind in enumerate(binds):
        source = bind.source
        if stage:
            staged.append({"source": source, "name": str(i), "dir": os.path.isdir(source)})
            source = str(STAGE / str(i))
        args += ["--bind" if bind.writable else "--ro-bind", source, bind.dest]
    args += ["--chdir", cwd, "--", *command]
    options = ["--clearenv"]
    for key, value in env.items():
        options += ["--setenv", key, value]
    return {
        "bwrap": bwrap,
        "args": args,
        "options": options,
        "stage": staged,
        "user": [user.uid, user.gid] if user.switch else None,
    }


def args_fd(run: dict[str, Any]) -> int:
    """An anonymous file holding ``run["options"]`` for bwrap's ``--args``."""
    fd = os.memfd_create("pman-bwrap-args", 0)  # not close-on-exec: bwrap reads it
    data = b"".join(o.encode() + b"\0" for o in run["options"])
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ---- in the supervisor's child, between fork and exec ------------------------
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x2, 0x4, 0x8
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    libc.mount.argtypes += [ctypes.c_ulong, ctypes.c_char_p]
    libc.unshare.argtypes = [ctypes.c_int]
    return libc


def _check(rc: int, what: str) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def stage_binds(staged: Sequence[dict[str, Any]]) -> None:
    """Bind each source on a private tmpfs at STAGE, in a new mount namespace of
    this process only (nothing is mounted on the host). Needs root."""
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # nothing mounted here may reach the host's mount namespace
    _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    # opened before STAGE is covered (a source may lie under it) and in this
    # namespace (a bind from a mount of another namespace is refused)
    fds = []
    for item in staged:
        flags = os.O_PATH | os.O_CLOEXEC | (os.O_DIRECTORY if item["dir"] else 0)
        fds.append(os.open(item["source"], flags))
    options = b"mode=0755,size=64k"
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    _check(libc.mount(b"pman-stage", bytes(STAGE), b"tmpfs", flags, options), f"tmpfs on {STAGE}")
    for fd, item in zip(fds, staged, strict=True):
        target = STAGE / item["name"]
        if item["dir"]:
            target.mkdir()
        else:
            target.touch()
        source = f"/proc/self/fd/{fd}".encode()
        _check(libc.mount(source, bytes(target), None, _MS_BIND | _MS_REC, None), "bind")
        os.close(fd)


def become(uid: int, gid: int) -> None:
    """Drop to the job's user for good: no supplementary groups, no way back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def child_setup(
    run: dict[str, Any], join_cgroup: Callable[[int], None] | None
) -> Callable[[], None]:
    """The function the supervisor's child runs before it executes bwrap."""

    def setup() -> None:
        try:
            if join_cgroup is not None:
                join_cgroup(os.getpid())
            if run["user"] is not None:
                stage_binds(run["stage"])
                become(*run["user"])
        except BaseException as e:
            # Popen reports only that this function failed: the job's log (our
            # stderr by now) says how
            os.write(2, f"pman: cannot set up the job's sandbox: {e}\n".encode())
            raise

    return setup


# ---- start-up check ----------------------------------------------------------
def probe(bwrap: str, user: JobUser, timeout: float = 20.0) -> str | None:
    """Run ``true`` in the sandbox as jobs will run (same flags, same user):
    None if it works, else bwrap's complaint."""
    run = build(bwrap, user, [], ["true"], {"PATH": "/usr/bin:/bin"}, "/")
    fd = args_fd(run)
    switch: dict[str, Any] = {}
    if user.switch:
        # Popen drops the ids itself (no preexec_fn: pman has threads by now)
        switch = {"user": user.uid, "group": user.gid, "extra_groups": []}
    try:
        done = subprocess.run(
            [bwrap, "--args", str(fd), *run["args"]],
            pass_fds=(fd,),
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
            **switch,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    finally:
        os.close(fd)
    if done.returncode != 0:
        said = (done.stderr or done.stdout).decode(errors="replace").strip()
        return f"{said or 'no message'} (exit code {done.returncode})"
    return None
