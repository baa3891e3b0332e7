"""The Kubernetes backend: one batch/v1 Job per pman job.

``settings`` (its variables), ``config`` (what it reads of the settings),
``manifest`` (the Job it writes), ``state`` (the job's state from the Job and
its pods), ``errors`` (the client's errors as pman's), ``client`` (the API
calls), ``logs`` (pod logs), ``watch`` (the Job watch) and ``adapter`` (the
Backend).

The absolute imports of this package get the ``kubernetes`` client library,
not this package (ruff's isort knows ``kubernetes`` as third-party).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pman.backends.lazy import exports

if TYPE_CHECKING:
    from pman.backends.kubernetes.adapter import KubernetesBackend

__all__ = ["KubernetesBackend"]

# imported when first asked for: pman's settings import this package (the
# engine's own section, .settings) without its adapter and client library
__getattr__ = exports(
    __name__,
    {
        "KubernetesBackend": "adapter",
    },
)
