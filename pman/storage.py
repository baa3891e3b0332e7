"""Where job data lives, and keeping every job inside STOREBASE.

A job's ``input_dir`` and ``output_dir`` are relative to STOREBASE. They must
stay inside it lexically (no ``..``) and, where pman can see STOREBASE on its
own filesystem, physically too (no symlink pointing out of it).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
from pathlib import Path

from pman.errors import BackendError, InvalidJobSpec
from pman.models import Mounts
from pman.settings import Settings

#: the longest name of one folder, and of a whole path, that Linux accepts (bytes)
NAME_MAX = 255
PATH_MAX = 4096


def normalise_relative(field: str, value: str, *, allow_empty: bool) -> str:
    """``value`` as a clean path relative to STOREBASE, or InvalidJobSpec naming ``field``.

    A leading ``/`` is accepted and means the STOREBASE root, as upstream
    clients send absolute-looking paths.
    """
    if "\x00" in value:
        raise InvalidJobSpec(f"{field} contains a NUL byte", fields={field: "NUL byte"})
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidJobSpec(
            f"{field} {value!r} must not contain '..': it has to stay inside STOREBASE",
            fields={field: "'..' is not allowed"},
        )
    if any(len(os.fsencode(p)) > NAME_MAX for p in parts):
        raise InvalidJobSpec(
            f"{field} has a folder name longer than {NAME_MAX} bytes",
            fields={field: "name too long"},
        )
    rel = posixpath.join(*parts) if parts else ""
    if len(os.fsencode(rel)) > PATH_MAX // 2:
        # STOREBASE and the engine's own prefixes need room below PATH_MAX
        raise InvalidJobSpec(
            f"{field} is longer than {PATH_MAX // 2} bytes", fields={field: "path too long"}
        )
    if not rel and not allow_empty:
        raise InvalidJobSpec(
            f"{field} must name a folder inside STOREBASE, not STOREBASE itself",
            fields={field: "must not be empty"},
        )
    return rel


def _confined(storebase: Path, rel: str, field: str) -> Path:
    """The real path of STOREBASE/rel, refusing one that a symlink takes outside."""
    base = Path(os.path.realpath(storebase))
    real = Path(os.path.realpath(base / rel))
    if real != base and base not in real.parents:
        raise InvalidJobSpec(
            f"{field} resolves outside STOREBASE (through a symbolic link)",
            fields={field: "escapes STOREBASE"},
        )
    return real


class Storage:
    """Resolves a request's folders for the configured STORAGE_TYPE."""

    def __init__(self, settings: Settings) -> None:
        self.storage_type = settings.resource.storage.storage_type
        self.storebase = settings.resource.storage.storebase

    @property
    def visible(self) -> bool:
        """True when STOREBASE is a folder on pman's own filesystem."""
        return self.storage_type == "host" and self.storebase is not None

    def resolve(self, input_dir: str, output_dir: str) -> Mounts:
        in_rel = normalise_relative("input_dir", input_dir, allow_empty=True)
        out_rel = normalise_relative("output_dir", output_dir, allow_empty=False)
        if not self.visible:
            return Mounts(in_rel, out_rel)
        assert self.storebase is not None
        if not self.storebase.is_dir():
            # pman's own misconfiguration, but a job cannot be placed: say so plainly
            raise InvalidJobSpec(
                f"STOREBASE {self.storebase} is not a folder on this host",
                fields={"input_dir": "STOREBASE missing"},
            )
        try:
            return self._resolve_visible(self.storebase, input_dir, output_dir, in_rel, out_rel)
        except OSError as e:
            # e.g. a name the filesystem refuses, a loop of symbolic links
            raise InvalidJobSpec(
                f"input_dir or output_dir cannot be used on this host: {e.strerror}",
                fields={"output_dir": e.strerror or "unusable path"},
            ) from e

    @staticmethod
    def _resolve_visible(
        storebase: Path, input_dir: str, output_dir: str, in_rel: str, out_rel: str
    ) -> Mounts:
        in_host = _confined(storebase, in_rel, "input_dir")
        out_host = _confined(storebase, out_rel, "output_dir")
        if not in_host.is_dir():
            raise InvalidJobSpec(
                f"input_dir {input_dir!r} is not a folder inside STOREBASE",
                fields={"input_dir": "no such folder"},
            )
        if out_host.exists() and not out_host.is_dir():
            raise InvalidJobSpec(
                f"output_dir {output_dir!r} exists and is not a folder",
                fields={"output_dir": "not a folder"},
            )
        if out_host == in_host:
            raise InvalidJobSpec(
                "output_dir must differ from input_dir (input is mounted read-only)",
                fields={"output_dir": "same as input_dir"},
            )
        return Mounts(in_rel, out_rel, in_host, out_host)

    @staticmethod
    def prepare_output(mounts: Mounts) -> Path | None:
        """Create the output folder when pman can see it (engines refuse a missing
        bind source). Returns the topmost folder created, for ``undo_output``."""
        if mounts.output_host is None:
            return None
        top = mounts.output_host
        while not top.parent.exists():
            top = top.parent
        created = None if top.exists() else top
        try:
            mounts.output_host.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create the output folder {mounts.output_host}: {e}") from e
        return created

    @staticmethod
    def undo_output(created: Path | None) -> None:
        """Remove the folders ``prepare_output`` created, if still empty: a
        refused job leaves nothing behind."""
        if created is None:
            return
        for folder in sorted(
            (p for p in created.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            created.rmdir()

    @staticmethod
    def discard_output(created: Path | None) -> None:
        """Remove the folders ``prepare_output`` created with everything in them:
        for a job that ran after its client was told it was refused (what it
        wrote there is no output anybody asked for)."""
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
