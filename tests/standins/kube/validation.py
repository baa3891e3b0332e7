"""Request-body validation and defaulting, as the API server does for batch/v1 Jobs.

First the body is checked against the real OpenAPI schema (``kubernetes_validate`` in strict
mode, which rejects unknown fields), then the rules of ``pkg/apis/batch/validation`` and
``pkg/apis/core/validation`` that a schema cannot express, then the defaults of
``pkg/apis/*/v1/defaults.go`` are filled in.
"""

from __future__ import annotations

import copy
import posixpath
import random
import re
from typing import Any

import kubernetes_validate
from kubernetes.utils import parse_quantity

from .errors import ApiError, FieldErrors, bad_request

Obj = dict[str, Any]

DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = rf"{DNS1123_LABEL}(\.{DNS1123_LABEL})*"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
ENV_VAR_NAME = r"[-._a-zA-Z][-._a-zA-Z0-9]*"

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    f"for validation is '{DNS1123_SUBDOMAIN}')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    f"for validation is '{DNS1123_LABEL}')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
    f"or '12345', regex used for validation is '{LABEL_VALUE}')"
)
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    f"validation is '{QUALIFIED_NAME}')"
)
ENV_VAR_MSG = (
    "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', "
    "or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or "
    f"'MyEnvName1', regex used for validation is '{ENV_VAR_NAME}')"
)
MAX_ANNOTATIONS = 256 * 1024
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's utilrand alphabet


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(NAME_CHARS) for _ in range(n))


def _full(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def is_subdomain(text: str) -> bool:
    return len(text) <= 253 and _full(DNS1123_SUBDOMAIN, text)


def is_label(text: str) -> bool:
    return len(text) <= 63 and _full(DNS1123_LABEL, text)


def check_body_kind(body: Any, api_version: str, kind: str) -> Obj:
    """400 for a body that is not a JSON object of the kind the URL names (missing = defaulted)."""
    if not isinstance(body, dict):
        raise bad_request(f"the object provided is unrecognized (must be of type {kind})")
    got_v = body.setdefault("apiVersion", api_version)
    got_k = body.setdefault("kind", kind)
    if got_v != api_version:
        raise bad_request(
            f"the API version in the data ({got_v}) does not match the expected API version "
            f"({api_version})"
        )
    if got_k != kind:
        raise bad_request(
            f"the object provided is unrecognized (must be of type {kind}): {got_k} is not {kind}"
        )
    return body


def _json_path(parts: list[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def schema_validate(body: Obj, k8s_version: str, kind: str, group: str) -> None:
    """The real OpenAPI schema, strict (unknown fields rejected): 422 Invalid on failure."""
    try:
        kubernetes_validate.validate(body, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = list(exc.absolute_path)
        errs = FieldErrors()
        unexpected = re.findall(r"'([^']+)' (?:was|were) unexpected", exc.message)
        if exc.validator == "additionalProperties":
            extra = re.findall(r"'([^']+)'", exc.message.split("(", 1)[-1])
            for name in extra or unexpected or ["?"]:
                errs.invalid(_json_path([*path, name]), name, "field not declared in schema")
        elif exc.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", exc.message)
            errs.required(_json_path([*path, *(missing[:1])]))
        elif exc.validator == "enum":
            errs.not_supported(
                _json_path(path), exc.instance, [str(v) for v in exc.validator_value]
            )
        else:
            errs.invalid(_json_path(path), exc.instance, exc.message)
        name = (body.get("metadata") or {}).get("name") or ""
        raise errs.error(kind, group, name) from None


# ------------------------------------------------------------------ metadata


def assign_name(md: Obj, errs: FieldErrors) -> None:
    if not md.get("name"):
        if md.get("generateName"):
            md["name"] = md["generateName"] + random_suffix()
        else:
            errs.required("metadata.name", "name or generateName is required")


def validate_labels(labels: dict[str, str] | None, field: str, errs: FieldErrors) -> None:
    for key, value in (labels or {}).items():
        validate_qualified_name(key, field, errs)
        if len(value) > 63:
            errs.invalid(field, value, "must be no more than 63 characters")
        if not _full(LABEL_VALUE, value):
            errs.invalid(field, value, LABEL_VALUE_MSG)


def validate_qualified_name(key: str, field: str, errs: FieldErrors) -> None:
    prefix, sep, name = key.rpartition("/")
    if sep and not prefix:
        errs.invalid(field, key, "prefix part must be non-empty")
    elif prefix and not is_subdomain(prefix):
        errs.invalid(field, key, "prefix part " + SUBDOMAIN_MSG)
    if not name:
        errs.invalid(field, key, "name part must be non-empty")
    elif len(name) > 63:
        errs.invalid(field, key, "name part must be no more than 63 characters")
    elif not _full(QUALIFIED_NAME, name):
        errs.invalid(field, key, QUALIFIED_NAME_MSG)


def validate_object_meta(md: Obj, field: str, errs: FieldErrors, name_check: bool = True) -> None:
    name = md.get("name")
    if name_check and name and not is_subdomain(name):
        errs.invalid(f"{field}.name", name, SUBDOMAIN_MSG)
    validate_labels(md.get("labels"), f"{field}.labels", errs)
    annotations = md.get("annotations") or {}
    for key in annotations:
        validate_qualified_name(key.lower(), f"{field}.annotations", errs)
    if sum(len(k) + len(v) for k, v in annotations.items()) > MAX_ANNOTATIONS:
        errs.too_long(f"{field}.annotations", MAX_ANNOTATIONS)


# ------------------------------------------------------------------ pod spec


def _quantity(value: Any, field: str, errs: FieldErrors) -> Any:
    try:
        return parse_quantity(value)
    except ValueError:
        errs.invalid(
            field,
            value,
            "quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        )
        return None


def validate_resources(res: Obj, field: str, errs: FieldErrors) -> None:
    limits = res.get("limits") or {}
    requests = res.get("requests") or {}
    parsed: dict[str, dict[str, Any]] = {"limits": {}, "requests": {}}
    for which, values in (("limits", limits), ("requests", requests)):
        for rname, val in values.items():
            q = _quantity(val, f"{field}.{which}[{rname}]", errs)
            if q is None:
                continue
            if q < 0:
                errs.invalid(f"{field}.{which}[{rname}]", val, "must be greater than or equal to 0")
            parsed[which][rname] = q
    for rname, req in parsed["requests"].items():
        lim = parsed["limits"].get(rname)
        if lim is not None and req > lim:
            errs.invalid(
                f"{field}.requests",
                requests[rname],
                f"must be less than or equal to {rname} limit of {limits[rname]}",
            )
        extended = "/" in rname and not rname.startswith(("kubernetes.io/", "requests."))
        if extended and lim is None:
            errs.forbidden(f"{field}.limits", "Limit must be set for non overcommitable resources")


VOLUME_SOURCES = {
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
}


def validate_volumes(volumes: list[Obj], field: str, errs: FieldErrors) -> set[str]:
    names: set[str] = set()
    for i, vol in enumerate(volumes):
        f = f"{field}[{i}]"
        name = vol.get("name", "")
        if not name:
            errs.required(f"{f}.name")
        elif not is_label(name):
            errs.invalid(f"{f}.name", name, LABEL_MSG)
        elif name in names:
            errs.duplicate(f"{f}.name", name)
        names.add(name)
        sources = [k for k in vol if k in VOLUME_SOURCES]
        if not sources:
            errs.required(f, "must specify a volume type")
        elif len(sources) > 1:
            errs.forbidden(f"{f}.{sources[1]}", "may not specify more than 1 volume type")
        if "hostPath" in vol:
            path = vol["hostPath"].get("path", "")
            if not path:
                errs.required(f"{f}.hostPath.path")
            elif not path.startswith("/"):
                errs.invalid(f"{f}.hostPath.path", path, "must be an absolute path")
            types = [
                "",
                "DirectoryOrCreate",
                "Directory",
                "FileOrCreate",
                "File",
                "Socket",
                "CharDevice",
                "BlockDevice",
            ]
            if vol["hostPath"].get("type", "") not in types:
                errs.not_supported(f"{f}.hostPath.type", vol["hostPath"]["type"], types)
        if "persistentVolumeClaim" in vol and not vol["persistentVolumeClaim"].get("claimName"):
            errs.required(f"{f}.persistentVolumeClaim.claimName")
        if "nfs" in vol:
            if not vol["nfs"].get("server"):
                errs.required(f"{f}.nfs.server")
            path = vol["nfs"].get("path", "")
            if not path:
                errs.required(f"{f}.nfs.path")
            elif not path.startswith("/"):
                errs.invalid(f"{f}.nfs.path", path, "must be an absolute path")
        if "emptyDir" in vol and vol["emptyDir"].get("sizeLimit") is not None:
            _quantity(vol["emptyDir"]["sizeLimit"], f"{f}.emptyDir.sizeLimit", errs)
    return names


def _check_relative(path: str, field: str, errs: FieldErrors) -> None:
    if path.startswith("/"):
        errs.invalid(field, path, "must be a relative path")
    if ".." in path.split("/"):
        errs.invalid(field, path, "must not contain '..'")


FIELD_REFS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
    "metadata.labels",
    "metadata.annotations",
}
RESOURCE_REFS = {
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
}


def validate_container(c: Obj, f: str, volumes: set[str], errs: FieldErrors) -> None:
    name = c.get("name", "")
    if not name:
        errs.required(f"{f}.name")
    elif not is_label(name):
        errs.invalid(f"{f}.name", name, LABEL_MSG)
    if not c.get("image", "").strip():
        errs.required(f"{f}.image")
    for j, env in enumerate(c.get("env") or []):
        ef = f"{f}.env[{j}]"
        ename = env.get("name", "")
        if not ename:
            errs.required(f"{ef}.name")
        elif not _full(ENV_VAR_NAME, ename):
            errs.invalid(f"{ef}.name", ename, ENV_VAR_MSG)
        vf = env.get("valueFrom")
        if vf is not None:
            if env.get("value"):
                errs.invalid(
                    f"{ef}.valueFrom", "", "may not be specified when `value` is not empty"
                )
            if len(vf) != 1:
                errs.invalid(
                    f"{ef}.valueFrom", "", "may not have more than one field specified at a time"
                )
            ref = (vf.get("fieldRef") or {}).get("fieldPath")
            if ref is not None:
                base = ref.split("[", 1)[0]
                if base not in FIELD_REFS:
                    errs.not_supported(
                        f"{ef}.valueFrom.fieldRef.fieldPath", ref, sorted(FIELD_REFS)
                    )
            rref = (vf.get("resourceFieldRef") or {}).get("resource")
            if rref is not None and rref not in RESOURCE_REFS:
                errs.not_supported(
                    f"{ef}.valueFrom.resourceFieldRef.resource", rref, sorted(RESOURCE_REFS)
                )
    paths: set[str] = set()
    for j, vm in enumerate(c.get("volumeMounts") or []):
        mf = f"{f}.volumeMounts[{j}]"
        vname = vm.get("name", "")
        if not vname:
            errs.required(f"{mf}.name")
        elif vname not in volumes:
            errs.not_found(f"{mf}.name", vname)
        mp = vm.get("mountPath", "")
        if not mp:
            errs.required(f"{mf}.mountPath")
        elif mp in paths:
            errs.invalid(f"{mf}.mountPath", mp, "must be unique")
        paths.add(mp)
        if vm.get("subPath"):
            _check_relative(vm["subPath"], f"{mf}.subPath", errs)
        if vm.get("subPath") and vm.get("subPathExpr"):
            errs.invalid(
                f"{mf}.subPathExpr",
                vm["subPathExpr"],
                "subPathExpr and subPath are mutually exclusive",
            )
    if c.get("resources"):
        validate_resources(c["resources"], f"{f}.resources", errs)
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is False and sc.get("privileged"):
        errs.invalid(
            f"{f}.securityContext",
            sc,
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
        )
    for which in ("runAsUser", "runAsGroup"):
        if sc.get(which) is not None and not 0 <= sc[which] <= 2147483647:
            errs.invalid(
                f"{f}.securityContext.{which}",
                sc[which],
                "must be between 0 and 2147483647, inclusive",
            )
    policies = ["Always", "IfNotPresent", "Never"]
    if c.get("imagePullPolicy") not in (None, *policies):
        errs.not_supported(f"{f}.imagePullPolicy", c["imagePullPolicy"], policies)


def validate_pod_spec(spec: Obj, field: str, errs: FieldErrors, *, job: bool) -> None:
    volumes = validate_volumes(spec.get("volumes") or [], f"{field}.volumes", errs)
    rp = spec.get("restartPolicy")
    if job:
        if not rp:
            errs.required(f"{field}.restartPolicy")
        elif rp not in ("OnFailure", "Never"):
            errs.not_supported(f"{field}.restartPolicy", rp, ["OnFailure", "Never"])
    elif rp not in (None, "Always", "OnFailure", "Never"):
        errs.not_supported(f"{field}.restartPolicy", rp, ["Always", "OnFailure", "Never"])
    containers = spec.get("containers") or []
    if not containers:
        errs.required(f"{field}.containers")
    names: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            validate_container(c, f"{field}.{kind}[{i}]", volumes, errs)
            if c.get("name") in names:
                errs.duplicate(f"{field}.{kind}[{i}].name", c["name"])
            names.add(c.get("name"))
    psc = spec.get("securityContext") or {}
    for which in ("runAsUser", "runAsGroup", "fsGroup"):
        if psc.get(which) is not None and not 0 <= psc[which] <= 2147483647:
            errs.invalid(
                f"{field}.securityContext.{which}",
                psc[which],
                "must be between 0 and 2147483647, inclusive",
            )
    tgp = spec.get("terminationGracePeriodSeconds")
    if tgp is not None and tgp < 0:
        errs.invalid(
            f"{field}.terminationGracePeriodSeconds", tgp, "must be greater than or equal to 0"
        )
    ads = spec.get("activeDeadlineSeconds")
    if ads is not None and ads <= 0:
        errs.invalid(
            f"{field}.activeDeadlineSeconds", ads, "must be between 1 and 2147483647, inclusive"
        )
    validate_labels(spec.get("nodeSelector"), f"{field}.nodeSelector", errs)
    if spec.get("hostname") and not is_label(spec["hostname"]):
        errs.invalid(f"{field}.hostname", spec["hostname"], LABEL_MSG)


# ------------------------------------------------------------------ job


def validate_job(job: Obj, errs: FieldErrors) -> None:
    md = job["metadata"]
    validate_object_meta(md, "metadata", errs)
    spec = job.get("spec") or {}
    if not spec.get("template"):
        errs.required("spec.template")
        return
    for name in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        if spec.get(name) is not None and spec[name] < 0:
            errs.invalid(f"spec.{name}", spec[name], "must be greater than or equal to 0")
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        errs.invalid(
            "spec.activeDeadlineSeconds", spec["activeDeadlineSeconds"], "must be greater than 0"
        )
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        errs.not_supported("spec.completionMode", mode, ["NonIndexed", "Indexed"])
    if mode == "Indexed":
        if spec.get("completions") is None:
            errs.required("spec.completions", "when completion mode is Indexed")
        elif spec["completions"] > 10**5:
            errs.invalid(
                "spec.completions",
                spec["completions"],
                "must be less than or equal to 100000 when completion mode is Indexed",
            )
    if spec.get("manualSelector"):
        if not spec.get("selector"):
            errs.required("spec.selector")
    elif spec.get("selector") is not None:
        errs.invalid("spec.selector", spec["selector"], "`selector` will be auto-generated")
    tmpl = spec["template"]
    validate_object_meta(
        tmpl.get("metadata") or {}, "spec.template.metadata", errs, name_check=False
    )
    validate_pod_spec(tmpl.get("spec") or {}, "spec.template.spec", errs, job=True)
    name = md.get("name", "")
    if name and len(name) > 63:
        errs.invalid("spec.template.labels", name, "must be no more than 63 characters")


def default_container(c: Obj) -> None:
    image = c.get("image", "")
    if "imagePullPolicy" not in c:
        last = image.rsplit("/", 1)[-1]
        tag = (
            last.split(":", 1)[1]
            if ":" in last and "@" not in last
            else ("" if "@" not in last else "digest")
        )
        c["imagePullPolicy"] = "Always" if tag in ("", "latest") else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        vf = env.get("valueFrom") or {}
        if "fieldRef" in vf:
            vf["fieldRef"].setdefault("apiVersion", "v1")
        if "resourceFieldRef" in vf:
            vf["resourceFieldRef"].setdefault("divisor", "0")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("restartPolicy", "Always")
    for c in (spec.get("initContainers") or []) + spec.get("containers", []):
        default_container(c)
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            vol["hostPath"].setdefault("type", "")
        for src in ("secret", "configMap", "downwardAPI", "projected"):
            if src in vol:
                vol[src].setdefault("defaultMode", 420)


def default_job(job: Obj) -> None:
    """The batch/v1 defaults and the selector/labels the registry strategy generates."""
    md = job["metadata"]
    spec = job["spec"]
    uid = md["uid"]
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    tmeta = spec["template"].setdefault("metadata", {})
    if not md.get("labels") and tmeta.get("labels"):
        md["labels"] = dict(tmeta["labels"])
    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        labels = tmeta.setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": md["name"],
                "controller-uid": uid,
                "job-name": md["name"],
            }
        )
    default_pod_spec(spec["template"].setdefault("spec", {}))
    job["status"] = {}


def prepare_create(body: Obj, namespace: str, kind: str) -> Obj:
    """Common create-time metadata handling: namespace check, system fields cleared."""
    md = body.setdefault("metadata", {})
    if md.get("namespace") not in (None, "", namespace):
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    md["namespace"] = namespace
    for f in (
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
        "selfLink",
        "managedFields",
    ):
        md.pop(f, None)
    body.pop("status", None)
    return body


def validate_new_job(body: Obj, namespace: str, k8s_version: str) -> Obj:
    """Check a POSTed Job fully; returns it with name assigned (defaults come after the uid)."""
    check_body_kind(body, "batch/v1", "Job")
    schema_validate(body, k8s_version, "Job", "batch")
    prepare_create(body, namespace, "Job")
    errs = FieldErrors()
    assign_name(body["metadata"], errs)
    validate_job(body, errs)
    if errs:
        raise errs.error("Job", "batch", body["metadata"].get("name", ""))
    return body


def validate_eviction(body: Any, k8s_version: str, pod: str) -> Obj:
    check_body_kind(body, "policy/v1", "Eviction")
    schema_validate(body, k8s_version, "Eviction", "policy")
    name = (body.get("metadata") or {}).get("name")
    if name and name != pod:
        raise ApiError(400, "BadRequest", "name in URL does not match name in Eviction object")
    return body


def validate_access_review(body: Any, k8s_version: str) -> Obj:
    """A SelfSubjectAccessReview: the schema, then exactly one of its spec's
    attributes (``ValidateSelfSubjectAccessReviewSpec``)."""
    check_body_kind(body, "authorization.k8s.io/v1", "SelfSubjectAccessReview")
    schema_validate(body, k8s_version, "SelfSubjectAccessReview", "authorization.k8s.io")
    spec = body.get("spec") or {}
    errs = FieldErrors()
    if spec.get("resourceAttributes") is not None and spec.get("nonResourceAttributes"):
        errs.invalid(
            "spec.nonResourceAttributes",
            spec["nonResourceAttributes"],
            "cannot be specified in combination with resourceAttributes",
        )
    if spec.get("resourceAttributes") is None and spec.get("nonResourceAttributes") is None:
        errs.invalid(
            "spec.resourceAttributes",
            None,
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )
    if errs:
        raise errs.error("SelfSubjectAccessReview", "authorization.k8s.io", "")
    return body


def subpath_ok(path: str) -> bool:
    return not path.startswith("/") and ".." not in posixpath.normpath(path).split("/")


#: Job spec fields the API server refuses to change after creation
#: (ValidateJobSpecUpdate, pkg/apis/batch/validation; the template is mutable
#: only in narrow cases pman never uses)
JOB_IMMUTABLE = ("selector", "template", "completions", "completionMode", "podFailurePolicy")
PATCH_TYPES = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (a strategic merge patch of plain fields, as
    pman sends, is the same)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def validate_job_patch(current: Obj, patch: Any, k8s_version: str) -> Obj:
    """The Job ``patch`` makes of ``current``: status and identity untouched
    (the main resource ignores status), the schema and the immutable fields
    checked; 422 Invalid otherwise."""
    if not isinstance(patch, dict):
        raise bad_request("the object provided is unrecognized (must be a JSON object)")
    patch = {k: v for k, v in patch.items() if k != "status"}
    new = merge_patch(current, patch)
    new["status"] = copy.deepcopy(current.get("status") or {})
    errs = FieldErrors()
    md, old_md = new.get("metadata") or {}, current["metadata"]
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        if md.get(key) != old_md.get(key):
            errs.invalid(f"metadata.{key}", md.get(key), "field is immutable")
    spec, old_spec = new.get("spec") or {}, current.get("spec") or {}
    for key in JOB_IMMUTABLE:
        if spec.get(key) != old_spec.get(key):
            errs.invalid(f"spec.{key}", spec.get(key), "field is immutable")
    if errs:
        raise errs.error("Job", "batch", old_md["name"])
    check = {k: v for k, v in new.items() if k != "status"}
    schema_validate(check, k8s_version, "Job", "batch")
    if spec != old_spec:
        md["generation"] = int(old_md.get("generation") or 1) + 1
    return new
