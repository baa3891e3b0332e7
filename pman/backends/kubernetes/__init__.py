"""The Kubernetes backend: one batch/v1 Job per pman job.

``config`` (what it reads from the settings), ``manifest`` (the Job it
writes), ``state`` (the job's state from the Job and its pods), ``errors``
(the client's errors as pman's), ``client`` (the API calls), ``logs`` (pod
logs), ``watch`` (the Job watch) and ``adapter`` (the Backend).

The absolute imports of this package get the ``kubernetes`` client library,
not this package (ruff's isort knows ``kubernetes`` as third-party).
"""

from pman.backends.kubernetes.adapter import KubernetesBackend

__all__ = ["KubernetesBackend"]
