"""The job folders pman and the compute nodes share: ``SLURM_JOB_DIR/<jid>``
holds the batch script ``job.sh``, ``meta.json`` (what pman submitted, and
the SLURM job id), ``log`` (every worker's output) and the status files the
script writes (``exit.<worker>``, ``oom.<worker>``, ``error.<worker>``).

Every read and write of those files is here, so the adapter never builds a
path itself and a name can never lead out of SLURM_JOB_DIR.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pman.backends.slurm.state import WorkerFiles, status_file, worker_files
from pman.errors import BackendError, JobNotFound

SCRIPT = "job.sh"
META = "meta.json"
LOG = "log"


class JobFolders:
    """The folders of the jobs under ``root`` (SLURM_JOB_DIR); ``where`` names
    the cluster in messages; ``names`` are the job names a folder may have."""

    def __init__(self, root: Path, where: str, names: re.Pattern[str]) -> None:
        self.root = root
        self.where = where
        self.names = names

    def path(self, name: str) -> Path:
        """The job's folder; JobNotFound for a name that is no job's."""
        if not self.names.fullmatch(name):  # never a path out of root
            raise JobNotFound(f"no SLURM job named {name!r}")
        return self.root / name

    def log(self, name: str) -> Path:
        return self.path(name) / LOG

    def script(self, name: str) -> Path:
        return self.path(name) / SCRIPT

    def meta(self, name: str) -> dict[str, Any]:
        """What pman submitted; JobNotFound when the job has no record."""
        path = self.path(name) / META
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise JobNotFound(f"no job named {name!r} on the {self.where}") from None
        except (OSError, ValueError) as e:
            raise BackendError(f"the job record {path} is unreadable: {e}") from e

    def write_meta(self, name: str, data: dict[str, Any]) -> None:
        """Replace the job's record at once (a reader sees the old or the new one)."""
        path = self.path(name) / META
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, sort_keys=True))
        os.replace(tmp, path)

    def make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BackendError(f"cannot create SLURM_JOB_DIR {self.root}: {e}") from e

    def create(self, name: str) -> bool:
        """Make the job's folder; False when it exists already."""
        path = self.path(name)
        try:
            path.mkdir()
        except FileExistsError:
            return False
        except OSError as e:
            raise BackendError(f"cannot create the job folder {path}: {e}") from e
        return True

    def write_job(self, name: str, script: str, meta: dict[str, Any]) -> Path:
        """Write the batch script (executable), an empty log and the record;
        the script's path."""
        path = self.script(name)
        path.write_text(script)
        path.chmod(0o755)
        self.log(name).touch()
        self.write_meta(name, meta)
        return path

    def discard(self, name: str) -> None:
        """Remove the job's folder, whatever is in it, ignoring errors."""
        shutil.rmtree(self.path(name), ignore_errors=True)

    def remove(self, name: str) -> None:
        """Remove the job's folder; gone already is fine."""
        try:
            shutil.rmtree(self.path(name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise BackendError(f"cannot remove the job folder of {name!r}: {e}") from e

    def worker_files(self, name: str) -> dict[int, WorkerFiles]:
        """What the batch script recorded about each worker."""
        path = self.path(name)
        try:
            entries = os.listdir(path)
        except FileNotFoundError:
            return {}
        texts: dict[tuple[str, int], str] = {}
        for entry in entries:
            key = status_file(entry)
            if key is None:
                continue
            try:
                texts[key] = (path / entry).read_text()
            except OSError:
                continue
        return worker_files(texts)
