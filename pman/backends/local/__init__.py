"""Jobs as host processes in a bubblewrap sandbox, no engine needed: pman's embedded default.

The job's command runs as an unprivileged user (PMAN_LOCAL_USER, default
nobody) in a sandbox that shows it only the host's system folders, its input
folder read-only and its output folder read-write (:mod:`.sandbox`, the job's
binds planned by :mod:`.plan`), in a cgroup of its own that holds it to its
cpu_limit and memory_limit where the kernel lets pman make one
(:mod:`.cgroup`). The image is recorded but not used; GPUs and several
workers are refused. Each job is a folder under ``PMAN_DATA_DIR/local/jobs``
(:mod:`.jobdir`) kept by a detached supervisor (:mod:`.runner`, started as
``python -m pman.backends.local.runner JOBDIR``); its state is read from the
folder's records (:mod:`.state`). :mod:`.settings` declares its variables,
:mod:`.config` holds what it reads of them, :mod:`.adapter` the backend.

The backend class is imported when first asked for: the supervisor, started
on every submit, imports this package too and needs none of pman's service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pman.backends.lazy import exports

if TYPE_CHECKING:
    from pman.backends.local.adapter import LocalBackend

__all__ = ["LocalBackend"]

__getattr__ = exports(__name__, {"LocalBackend": "adapter"})
