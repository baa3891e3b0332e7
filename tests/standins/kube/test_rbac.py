"""The stand-in's authorization: SelfSubjectAccessReview and 403 Forbidden from its rules."""

from __future__ import annotations

import json

import pytest
import requests
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .conftest import TOKEN, Kube
from .rbac import USER


def review(kube: Kube, **attributes: str) -> dict[str, object]:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    api = client.AuthorizationV1Api(kube.api)
    response = api.create_self_subject_access_review(body, _preload_content=False)
    assert response.status == 201
    answer = json.loads(response.data)
    assert answer["kind"] == "SelfSubjectAccessReview"
    assert answer["spec"]["resourceAttributes"] == attributes
    return answer["status"]


def test_everything_it_serves_is_allowed_by_default(kube: Kube) -> None:
    for verb in ("create", "get", "list", "watch", "patch", "delete"):
        status = review(kube, namespace="default", verb=verb, group="batch", resource="jobs")
        assert status["allowed"] is True, (verb, status)
        assert "RBAC: allowed by" in str(status["reason"])
    status = review(
        kube, namespace="default", verb="get", group="", resource="pods", subresource="log"
    )
    assert status["allowed"] is True
    # what it does not serve is not granted
    status = review(kube, namespace="default", verb="get", group="", resource="secrets")
    assert status == {"allowed": False}


def test_a_denied_verb_is_not_allowed_and_its_request_is_forbidden(kube: Kube) -> None:
    kube.standin.rules.deny("list", "jobs", "batch")
    status = review(kube, namespace="default", verb="list", group="batch", resource="jobs")
    assert status == {"allowed": False}
    # the rest of the rule stands
    assert review(kube, namespace="default", verb="get", group="batch", resource="jobs")["allowed"]
    with pytest.raises(ApiException) as caught:
        kube.batch.list_namespaced_job("default")
    assert caught.value.status == 403
    answer = json.loads(caught.value.body)
    assert answer["reason"] == "Forbidden"
    assert answer["message"] == (
        f'jobs.batch is forbidden: User "{USER}" cannot list resource "jobs" in API group '
        '"batch" in the namespace "default"'
    )
    assert answer["details"] == {"kind": "jobs", "group": "batch"}
    kube.standin.rules.deny("get", "pods/log")
    with pytest.raises(ApiException) as caught:
        kube.core.read_namespaced_pod_log("p", "default")
    assert json.loads(caught.value.body)["message"] == (
        f'pods "p" is forbidden: User "{USER}" cannot get resource "pods/log" in API group "" '
        'in the namespace "default"'
    )
    kube.standin.rules.reset()
    assert kube.batch.list_namespaced_job("default").items == []


def test_a_review_is_validated(kube: Kube) -> None:
    # sent raw: the official client refuses an unknown field itself
    url = f"{kube.standin.url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    for spec, field in (
        ({}, "spec.resourceAttributes"),
        (
            {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get"}},
            "spec.nonResourceAttributes",
        ),
        ({"resourceAttributes": {"verb": "get", "bogus": "x"}}, "spec.resourceAttributes.bogus"),
    ):
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": spec,
        }
        response = requests.post(
            url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        assert response.status_code == 422, response.text
        answer = response.json()
        assert answer["reason"] == "Invalid"
        assert answer["details"]["causes"][0]["field"] == field


def test_discovery_lists_the_access_reviews(kube: Kube) -> None:
    groups = client.ApisApi(kube.api).get_api_versions()
    assert "authorization.k8s.io" in [g.name for g in groups.groups]
    found = client.AuthorizationV1Api(kube.api).get_api_resources()
    assert [(r.name, r.verbs) for r in found.resources] == [
        ("selfsubjectaccessreviews", ["create"])
    ]
