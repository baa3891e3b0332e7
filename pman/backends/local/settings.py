"""The local engine's settings: the user jobs run as, what else they see."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pman.settings.declare import EngineSettings, Env, Environ, Problems

if TYPE_CHECKING:
    from pman.settings.jobs import JobSettings
    from pman.settings.storage import StorageSettings

_LOCAL_ID = re.compile(r"\d+|[A-Za-z_][A-Za-z0-9_.-]*")


def parse_local_user(text: str) -> str:
    """PMAN_LOCAL_USER: ``USER[:GROUP]``, each a number or a name."""
    user, sep, group = text.strip().partition(":")
    if not _LOCAL_ID.fullmatch(user) or (sep and not _LOCAL_ID.fullmatch(group)):
        raise ValueError(f"{text!r} is not USER or USER:GROUP (numbers or names, e.g. 65534:65534)")
    return f"{user}:{group}" if sep else user


def parse_local_read_only_paths(text: str) -> tuple[Path, ...]:
    """PMAN_LOCAL_READ_ONLY_PATHS: comma-separated absolute host paths."""
    paths = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        if not item.startswith("/"):
            raise ValueError(f"{item!r} is not an absolute path")
        path = Path(os.path.normpath(item))
        if path == Path("/"):
            raise ValueError("'/' would show jobs the whole host")
        paths.append(path)
    return tuple(paths)


class LocalSettings(EngineSettings):
    """Jobs as sandboxed processes of pman's own host (bubblewrap), the embedded default."""

    title = "local"

    user: Annotated[
        str | None,
        Env(
            "PMAN_LOCAL_USER",
            "the user jobs run as, `USER[:GROUP]`, numbers or names (a user alone: its primary "
            "group; a number no account has: the same number as group). Root (0) is refused; "
            "a pman that is not root refuses any user but its own. Checked at start-up",
            parse=parse_local_user,
            form="`USER[:GROUP]`",
            default_doc="`65534:65534` (nobody) when pman is root; pman's own user otherwise",
        ),
    ] = None
    read_only_paths: Annotated[
        tuple[Path, ...],
        Env(
            "PMAN_LOCAL_READ_ONLY_PATHS",
            "comma-separated absolute host paths every job also sees, read-only, at the same "
            "path (e.g. the virtualenv a plugin's program runs from); refused at start-up when "
            "missing or overlapping `STOREBASE` or `PMAN_DATA_DIR`",
            parse=parse_local_read_only_paths,
            form="comma-separated paths",
        ),
    ] = ()

    def check(
        self, storage: StorageSettings, jobs: JobSettings, environ: Environ, problems: Problems
    ) -> None:
        if storage.storage_type != "host":
            problems.add(
                environ.name_of("STORAGE_TYPE"),
                "the local backend only supports STORAGE_TYPE=host",
            )
