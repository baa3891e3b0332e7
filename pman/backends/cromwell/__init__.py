"""Jobs as WDL workflows on a Cromwell server (upstream pman's road to SLURM).

Every job is one workflow of the same WDL document (``job.wdl``,
:mod:`.workflow`); what varies (image, command, resources, folders) travels
in the workflow inputs, so nothing a client sends is ever parsed as WDL. The
document scatters the job's command over ``number_of_workers`` shards: shard
i is worker i (``PMAN_WORKER_INDEX`` = 0..N-1, as Cromwell numbers shards).

Cromwell names workflows by UUID: pman's jid travels as a Cromwell label
(:data:`pman.labels.LABEL_JID`) with pman's other labels, and a job is found
with ``/query`` by label. Cromwell cannot delete a workflow: DELETE aborts it
and turns its ``org.chrisproject.pman`` label to ``deleted``, so that pman's
queries (which ask for ``org.chrisproject.pman:true``) no longer see it and a
new job may take the same jid.

Mounts: the task's runtime section carries the host folders as the custom
runtime attributes ``pman_incoming`` and ``pman_outgoing``; the site's
Cromwell backend configuration binds them at /share/incoming (read-only) and
/share/outgoing, as upstream's ``sharedir`` did (README: "Cromwell").

Modules: :mod:`.settings` (its variables), :mod:`.config` (what it reads of
the settings), :mod:`.workflow` (the WDL document, inputs and form),
:mod:`.state` (statuses to job states), :mod:`.client` (the REST calls),
:mod:`.errors` (HTTP errors to pman's), :mod:`.logs` (the tasks' log files)
and :mod:`.adapter` (the backend).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pman.backends.lazy import exports

if TYPE_CHECKING:
    from pman.backends.cromwell.adapter import CromwellBackend

__all__ = ["CromwellBackend"]

# imported when first asked for: pman's settings import this package (the
# engine's own section, .settings) without its adapter and client library
__getattr__ = exports(
    __name__,
    {
        "CromwellBackend": "adapter",
    },
)
