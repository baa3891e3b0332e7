"""Tests of the Kubernetes API stand-in itself, through the official ``kubernetes`` client."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from .conftest import TOKEN, Kube
from .expansion import expand, mapping_for

pytestmark = pytest.mark.kubernetes

IMAGE = "localhost/pman-test-plugin:latest"
NS = "default"
T = TypeVar("T")


def job_body(
    name: str,
    script: str,
    *,
    backoff: int = 0,
    labels: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    pod_spec: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    main = {"name": "main", "image": IMAGE, "command": ["sh", "-c", script]}
    main.update(container or {})
    pod = {"restartPolicy": "Never", "containers": [main]}
    pod.update(pod_spec or {})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"backoffLimit": backoff, "template": {"spec": pod}, **spec},
    }


def wait_for(what: Callable[[], T | None], timeout: float = 60.0, step: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting; last: {got!r}")
        time.sleep(step)


def finished(kube: Kube, name: str) -> client.V1Job:
    def done() -> client.V1Job | None:
        job = kube.batch.read_namespaced_job(name, NS)
        types = {c.type for c in job.status.conditions or [] if c.status == "True"}
        return job if types & {"Complete", "Failed"} else None

    return wait_for(done)


def job_pods(kube: Kube, name: str) -> list[client.V1Pod]:
    return kube.core.list_namespaced_pod(
        NS, label_selector=f"batch.kubernetes.io/job-name={name}"
    ).items


def status_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def raw(kube: Kube, method: str, path: str, body: str) -> tuple[int, dict[str, Any]]:
    """A request without the official client (which validates bodies on its own side)."""
    req = urllib.request.Request(
        kube.standin.url + path,
        data=body.encode(),
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_job_runs_to_complete_with_logs(kube: Kube) -> None:
    created = kube.batch.create_namespaced_job(NS, job_body("hello", "echo hello; echo oops >&2"))
    # the real API server answers before the controller's first sync: no status at all
    assert created.status.to_dict() == client.V1JobStatus().to_dict()
    spec = created.spec
    assert (spec.completions, spec.parallelism, spec.backoff_limit) == (1, 1, 0)
    assert spec.completion_mode == "NonIndexed" and spec.suspend is False
    uid = created.metadata.uid
    assert spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert spec.template.metadata.labels["job-name"] == "hello"
    container = spec.template.spec.containers[0]
    assert container.image_pull_policy == "Always"
    assert container.termination_message_path == "/dev/termination-log"
    assert spec.template.spec.termination_grace_period_seconds == 30

    job = finished(kube, "hello")
    assert [c.type for c in job.status.conditions] == ["Complete"]
    assert job.status.succeeded == 1 and job.status.active is None and job.status.failed is None
    assert job.status.start_time and job.status.completion_time
    [pod] = job_pods(kube, "hello")
    assert pod.metadata.name.startswith("hello-") and len(pod.metadata.name) == len("hello-") + 5
    owner = pod.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Job", "hello", uid, True)
    assert pod.status.phase == "Succeeded" and pod.spec.node_name == "standin-node"
    cs = pod.status.container_statuses[0]
    assert cs.state.terminated.exit_code == 0 and cs.state.terminated.reason == "Completed"
    assert cs.container_id.startswith("docker://") and cs.image == IMAGE
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "PodCompleted")
    logs = kube.core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert sorted(logs.splitlines()) == ["hello", "oops"]
    tail = kube.core.read_namespaced_pod_log(pod.metadata.name, NS, tail_lines=1, timestamps=True)
    assert len(tail.splitlines()) == 1 and tail[:4].isdigit()
    followed = kube.core.read_namespaced_pod_log(pod.metadata.name, NS, follow=True)
    assert sorted(followed.splitlines()) == ["hello", "oops"]
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_pod_log(pod.metadata.name, NS, previous=True)
    assert err.value.status == 400
    kube.batch.delete_namespaced_job("hello", NS, propagation_policy="Background")
    wait_for(lambda: kube.standin.containers() == [] and not job_pods(kube, "hello"))


def test_failing_command_exceeds_backoff_limit(kube: Kube) -> None:
    kube.batch.create_namespaced_job(NS, job_body("fails", "echo bad; exit 3", backoff=1))
    job = finished(kube, "fails")
    failed = [c for c in job.status.conditions if c.type == "Failed"]
    assert failed[0].reason == "BackoffLimitExceeded"
    assert failed[0].message == "Job has reached the specified backoff limit"
    assert "FailureTarget" not in {c.type for c in job.status.conditions}  # 1.31+ only
    assert job.status.failed == 2 and job.status.succeeded is None  # one replacement pod
    pods = job_pods(kube, "fails")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        term = pod.status.container_statuses[0].state.terminated
        assert (term.exit_code, term.reason) == (3, "Error")


def test_on_failure_restarts_in_place_until_the_backoff_limit(kube: Kube) -> None:
    restarts: list[tuple[str, int]] = []

    def watch_pods() -> None:
        w = watch.Watch()
        selector = "job-name=again"
        for ev in w.stream(kube.core.list_namespaced_pod, NS, label_selector=selector,
                           timeout_seconds=120):  # fmt: skip
            for cs in ev["object"].status.container_statuses or []:
                restarts.append((ev["object"].metadata.name, cs.restart_count))
            if ev["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=watch_pods)
    thread.start()
    body = job_body("again", "exit 1", backoff=2, pod_spec={"restartPolicy": "OnFailure"})
    kube.batch.create_namespaced_job(NS, body)
    job = finished(kube, "again")
    assert job.status.conditions[0].reason == "BackoffLimitExceeded"
    thread.join(timeout=120)
    assert not thread.is_alive(), "the pod was never deleted"
    assert len({name for name, _ in restarts}) == 1  # one pod, its container restarted in place
    assert max(n for _, n in restarts) == 2


def test_memory_limit_gives_oomkilled(kube: Kube) -> None:
    body = job_body(
        # after a pause: Docker's containerd may miss an OOM kill at once (see
        # tests.helpers.late_memhog)
        "oom",
        "sleep 2; exec memhog --size 64M",
        container={"resources": {"limits": {"memory": "16Mi"}}},
    )
    kube.batch.create_namespaced_job(NS, body)
    job = finished(kube, "oom")
    assert job.status.conditions[0].type == "Failed"
    [pod] = job_pods(kube, "oom")
    assert pod.spec.containers[0].resources.requests == {"memory": "16Mi"}  # defaulted
    assert pod.status.qos_class == "Burstable"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.reason, term.exit_code) == ("OOMKilled", 137)


def test_active_deadline_kills_the_pod(kube: Kube) -> None:
    kube.batch.create_namespaced_job(NS, job_body("slow", "sleep 60", activeDeadlineSeconds=1))
    job = finished(kube, "slow")
    cond = job.status.conditions[0]
    assert (cond.type, cond.reason) == ("Failed", "DeadlineExceeded")
    assert cond.message == "Job was active longer than specified deadline"
    assert job.status.failed == 1
    # the job controller deletes the active pods: containers killed, pods gone
    wait_for(lambda: kube.standin.containers() == [] and not job_pods(kube, "slow"))


def test_indexed_job_runs_each_index(kube: Kube) -> None:
    body = job_body(
        "idx",
        "echo index=$JOB_COMPLETION_INDEX host=$(hostname)",
        completions=2,
        parallelism=2,
        completionMode="Indexed",
    )
    kube.batch.create_namespaced_job(NS, body)
    job = finished(kube, "idx")
    assert job.status.conditions[0].type == "Complete"
    assert job.status.completed_indexes == "0-1" and job.status.succeeded == 2
    pods = sorted(job_pods(kube, "idx"), key=lambda p: p.metadata.name)
    indexes = [p.metadata.labels["batch.kubernetes.io/job-completion-index"] for p in pods]
    assert indexes == ["0", "1"]
    for i, pod in enumerate(pods):
        assert pod.metadata.name.startswith(f"idx-{i}-")
        assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == str(i)
        log = kube.core.read_namespaced_pod_log(pod.metadata.name, NS)
        assert log == f"index={i} host=idx-{i}\n"


def test_missing_image_pull_backoff(kube: Kube) -> None:
    body = job_body("noimage", "true", container={"image": "localhost/no-such-image:1.0"})
    kube.batch.create_namespaced_job(NS, body)

    def waiting(reason: str) -> client.V1Pod | None:
        pods = job_pods(kube, "noimage")
        for pod in pods:
            for cs in pod.status.container_statuses or []:
                if cs.state.waiting and cs.state.waiting.reason == reason:
                    return pod
        return None

    pod = wait_for(lambda: waiting("ErrImagePull"))
    cs = pod.status.container_statuses[0]
    assert pod.status.phase == "Pending"
    assert (
        'failed to pull and unpack image "localhost/no-such-image:1.0"' in cs.state.waiting.message
    )
    assert cs.container_id is None
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert err.value.status == 400
    assert "is waiting to start" in status_body(err.value)["message"]
    pod = wait_for(lambda: waiting("ImagePullBackOff"))
    msg = pod.status.container_statuses[0].state.waiting.message
    assert msg == 'Back-off pulling image "localhost/no-such-image:1.0"'
    assert kube.standin.containers() == []
    kube.batch.delete_namespaced_job("noimage", NS, propagation_policy="Background")


def test_invalid_bodies_are_rejected(kube: Kube) -> None:
    def rejected(body: dict[str, Any], code: int = 422) -> dict[str, Any]:
        with pytest.raises(ApiException) as err:
            kube.batch.create_namespaced_job(NS, body)
        assert err.value.status == code
        return status_body(err.value)

    bad = job_body("bad", "true", pod_spec={"restartPolicy": "Always"})
    status = rejected(bad)
    assert status["reason"] == "Invalid"
    assert status["message"] == (
        'Job.batch "bad" is invalid: spec.template.spec.restartPolicy: '
        'Unsupported value: "Always": supported values: "OnFailure", "Never"'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "Always": supported values: "OnFailure", "Never"',
            "field": "spec.template.spec.restartPolicy",
        }
    ]
    assert status["details"]["kind"] == "Job" and status["details"]["group"] == "batch"

    # the official client (37) refuses unknown fields itself: send this one raw
    unknown = job_body("unknown", "true", container={"imagePullPolicyy": "Always"})
    code, status = raw(kube, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", json.dumps(unknown))
    assert (code, status["reason"]) == (422, "Invalid")
    [cause] = status["details"]["causes"]
    assert cause["field"] == "spec.template.spec.containers[0].imagePullPolicyy"

    status = rejected(job_body("Bad_Name", "true"))
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert status["details"]["causes"][0]["reason"] == "FieldValueInvalid"

    body = job_body("two", "true", container={"env": [{"name": "1X", "value": ""}]})
    body["spec"]["template"]["spec"]["containers"].append({"name": "main", "image": ""})
    fields = {(c["field"], c["reason"]) for c in rejected(body)["details"]["causes"]}
    assert fields == {
        ("spec.template.spec.containers[0].env[0].name", "FieldValueInvalid"),
        ("spec.template.spec.containers[1].image", "FieldValueRequired"),
        ("spec.template.spec.containers[1].name", "FieldValueDuplicate"),
    }

    code, status = raw(kube, "POST", f"/apis/batch/v1/namespaces/{NS}/jobs", "{not json")
    assert (code, status["reason"]) == (400, "BadRequest")
    code, status = raw(kube, "PUT", f"/apis/batch/v1/namespaces/{NS}/jobs/x", "{}")
    assert (code, status["reason"]) == (405, "MethodNotAllowed")

    wrong_kind = job_body("kind", "true")
    wrong_kind["apiVersion"] = "v1"
    assert rejected(wrong_kind, 400)["reason"] == "BadRequest"
    assert kube.batch.list_namespaced_job(NS).items == []


def test_create_twice_conflicts(kube: Kube) -> None:
    body = job_body("twice", "true", pod_spec={"nodeSelector": {"disk": "none"}})
    kube.batch.create_namespaced_job(NS, body)
    with pytest.raises(ApiException) as err:
        kube.batch.create_namespaced_job(NS, body)
    assert err.value.status == 409
    status = status_body(err.value)
    assert status["reason"] == "AlreadyExists"
    assert status["message"] == 'jobs.batch "twice" already exists'
    with pytest.raises(ApiException) as err:
        kube.batch.read_namespaced_job("nope", NS)
    assert err.value.status == 404
    assert status_body(err.value)["message"] == 'jobs.batch "nope" not found'


def test_delete_background_removes_pods_and_containers(kube: Kube) -> None:
    kube.batch.create_namespaced_job(NS, job_body("sleepy", "sleep 60"))
    wait_for(
        lambda: (
            [p for p in job_pods(kube, "sleepy") if p.status.phase == "Running"]
            and kube.standin.containers()
        )
    )
    job = kube.batch.read_namespaced_job("sleepy", NS)
    assert job.status.active == 1 and job.status.ready == 1
    kube.batch.delete_namespaced_job("sleepy", NS, propagation_policy="Background")
    with pytest.raises(ApiException):
        kube.batch.read_namespaced_job("sleepy", NS)
    # within the pods' 30 s grace period: `sleep` dies of its SIGTERM
    wait_for(lambda: kube.standin.containers() == [] and not job_pods(kube, "sleepy"), timeout=20)


def test_label_and_field_selectors(kube: Kube) -> None:
    never = {"nodeSelector": {"disk": "none"}}  # stays unscheduled: no containers needed
    for name, labels in [("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})]:
        kube.batch.create_namespaced_job(NS, job_body(name, "true", labels=labels, pod_spec=never))

    def names(**kw: Any) -> list[str]:
        return sorted(j.metadata.name for j in kube.batch.list_namespaced_job(NS, **kw).items)

    assert names() == ["a", "b", "c"]
    assert names(label_selector="app=x") == ["a"]
    assert names(label_selector="app!=x") == ["b", "c"]
    assert names(label_selector="app") == ["a", "b"]
    assert names(label_selector="!app") == ["c"]
    assert names(label_selector="app in (x,y),!tier") == ["b"]
    assert names(field_selector="metadata.name=c") == ["c"]
    page = kube.batch.list_namespaced_job(NS, limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    rest = kube.batch.list_namespaced_job(NS, limit=2, _continue=page.metadata._continue)
    assert [j.metadata.name for j in rest.items] == ["c"]
    other = client.BatchV1Api(kube.api).list_namespaced_job("elsewhere")
    assert other.items == [] and other.kind == "JobList"
    pods = kube.core.list_namespaced_pod(NS, label_selector="job-name=a")
    [_pod] = wait_for(lambda: kube.core.list_namespaced_pod(NS, label_selector="job-name=a").items)
    assert pods.kind == "PodList"


def test_watch_streams_added_modified_deleted(kube: Kube) -> None:
    events: list[tuple[str, str]] = []

    def watch_jobs() -> None:
        w = watch.Watch()
        for ev in w.stream(kube.batch.list_namespaced_job, NS, timeout_seconds=120):
            events.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    never = {"nodeSelector": {"disk": "none"}}
    kube.batch.create_namespaced_job(NS, job_body("before", "true", pod_spec=never))
    thread = threading.Thread(target=watch_jobs)
    thread.start()
    wait_for(lambda: events)
    kube.batch.create_namespaced_job(NS, job_body("during", "true", pod_spec=never))
    wait_for(lambda: ("MODIFIED", "during") in events)  # the controller's first status write
    kube.batch.delete_namespaced_job("during", NS, propagation_policy="Background")
    thread.join(timeout=120)
    assert not thread.is_alive(), "the watch never saw the deletion"
    assert events[0] == ("ADDED", "before")
    assert ("ADDED", "during") in events and events[-1] == ("DELETED", "during")
    get = [r for r in kube.standin.requests if r[0] == "GET" and "watch=true" in r[2]]
    assert get and get[0][1] == "/apis/batch/v1/namespaces/default/jobs"


def test_no_token_is_unauthorized(kube: Kube, tmp_path: Any) -> None:
    anonymous = kube.standin.write_kubeconfig(tmp_path / "anon", namespace="default")
    text = anonymous.read_text().replace(kube.standin.token or "", "wrong")
    anonymous.write_text(text)
    api = config.new_client_from_config(config_file=str(anonymous))
    with pytest.raises(ApiException) as err:
        client.BatchV1Api(api).list_namespaced_job(NS)
    assert err.value.status == 401
    assert status_body(err.value)["reason"] == "Unauthorized"
    api.close()


def test_expansion_matches_kubernetes_algorithm() -> None:
    mapping = mapping_for({"VAR_A": "A", "VAR_B": "B"})
    cases = {
        "$(VAR_A)": "A",
        "___$(VAR_B)___": "___B___",
        "$(VAR_A)-$(VAR_B)": "A-B",
        "$$(VAR_A)": "$(VAR_A)",
        "$$$(VAR_A)": "$A",
        "$$$$(VAR_A)": "$$(VAR_A)",
        "$(UNKNOWN)": "$(UNKNOWN)",
        "$(VAR_A": "$(VAR_A",
        "$VAR_A": "$VAR_A",
        "$": "$",
        "$()": "$()",
        "f000-$$VAR_A": "f000-$VAR_A",
        "(": "(",
    }
    assert {k: expand(k, mapping) for k in cases} == cases


def test_expansion_in_a_real_container(kube: Kube) -> None:
    env = [
        {"name": "A", "value": "alpha"},
        {"name": "B", "value": "$(A)-beta $$(A) $(C)"},
        {"name": "C", "value": "gamma"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {
            "name": "MEM",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
    ]
    container = {
        "command": ["sh", "-c", 'echo "$1|$2|$B|$POD|$MEM"', "--"],
        "args": ["$(A)", "$(C)$$(C)$(NOPE)"],
        "env": env,
        "resources": {"limits": {"memory": "64Mi"}},
    }
    kube.batch.create_namespaced_job(NS, job_body("expand", "", container=container))
    finished(kube, "expand")
    [pod] = job_pods(kube, "expand")
    log = kube.core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert log == f"alpha|gamma$(C)$(NOPE)|alpha-beta $(A) $(C)|{pod.metadata.name}|64\n"


def test_missing_subpath_is_created(kube: Kube) -> None:
    store = kube.standin.pvcs["storebase"]
    container = {
        "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "jobs/one"}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    pod_spec = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "storebase"}}]}
    body = job_body("sub", "echo written > /data/out", container=container, pod_spec=pod_spec)
    kube.batch.create_namespaced_job(NS, body)
    job = finished(kube, "sub")
    assert job.status.conditions[0].type == "Complete"
    assert (store / "jobs" / "one" / "out").read_text() == "written\n"
    pvc = kube.core.read_namespaced_persistent_volume_claim("storebase", NS)
    assert pvc.status.phase == "Bound"


def test_unmatched_node_selector_stays_pending(kube: Kube) -> None:
    body = job_body("nowhere", "true", pod_spec={"nodeSelector": {"gpu": "yes"}})
    kube.batch.create_namespaced_job(NS, body)

    def unschedulable() -> client.V1Pod | None:
        for pod in job_pods(kube, "nowhere"):
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.reason == "Unschedulable":
                    return pod
        return None

    pod = unschedulable() or wait_for(unschedulable)
    cond = pod.status.conditions[0]
    assert cond.status == "False" and pod.status.phase == "Pending" and not pod.spec.node_name
    assert cond.message.startswith(
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
    )
    time.sleep(0.5)
    assert kube.batch.read_namespaced_job("nowhere", NS).status.active == 1
    assert kube.standin.containers() == []


def test_node_pressure_eviction_fails_the_pod(kube: Kube) -> None:
    kube.batch.create_namespaced_job(NS, job_body("evicted", "sleep 60"))
    pod = wait_for(lambda: [p for p in job_pods(kube, "evicted") if p.status.phase == "Running"])[0]
    kube.standin.evict(NS, pod.metadata.name)
    job = finished(kube, "evicted")
    assert job.status.conditions[0].reason == "BackoffLimitExceeded" and job.status.failed == 1
    pod = kube.core.read_namespaced_pod(pod.metadata.name, NS)
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    assert pod.status.message == "The node was low on resource: memory."
    term = pod.status.container_statuses[0].state.terminated
    assert term.exit_code == 137


def test_patching_suspend_stops_the_pods_and_keeps_the_job(kube: Kube) -> None:
    kube.batch.create_namespaced_job(NS, job_body("suspend-me", "echo hi; sleep 300"))
    wait_for(lambda: [p for p in job_pods(kube, "suspend-me") if p.status.phase == "Running"])
    patched = kube.batch.patch_namespaced_job("suspend-me", NS, {"spec": {"suspend": True}})
    assert patched.spec.suspend is True
    assert patched.metadata.generation == 2

    def suspended() -> client.V1Job | None:
        job = kube.batch.read_namespaced_job("suspend-me", NS)
        types = {c.type for c in job.status.conditions or [] if c.status == "True"}
        return job if "Suspended" in types and not job_pods(kube, "suspend-me") else None

    job = wait_for(suspended, timeout=60)
    assert not job.status.active
    # what the API server refuses: an immutable field, a bad type, another patch type
    with pytest.raises(ApiException) as e:
        kube.batch.patch_namespaced_job("suspend-me", NS, {"spec": {"completions": 3}})
    assert e.value.status == 422
    assert "spec.completions" in status_body(e.value)["message"]
    with pytest.raises(ApiException) as e:
        kube.batch.patch_namespaced_job("suspend-me", NS, {"spec": {"suspend": "yes"}})
    assert e.value.status == 422
    with pytest.raises(ApiException) as e:
        kube.batch.patch_namespaced_job("missing", NS, {"spec": {"suspend": True}})
    assert e.value.status == 404
    kube.batch.delete_namespaced_job("suspend-me", NS, propagation_policy="Background")
