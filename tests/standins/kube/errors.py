"""apimachinery ``Status`` errors with the real codes, reasons and message formats."""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    """An error answered as a ``Status`` object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            out["details"] = self.details
        return out


def qualified(kind_plural: str, group: str) -> str:
    return f"{kind_plural}.{group}" if group else kind_plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(plural, group)} "{name}" not found',
        {"name": name, "group": group, "kind": plural} if group else {"name": name, "kind": plural},
    )


def already_exists(plural: str, group: str, name: str) -> ApiError:
    details = (
        {"name": name, "group": group, "kind": plural} if group else {"name": name, "kind": plural}
    )
    return ApiError(
        409, "AlreadyExists", f'{qualified(plural, group)} "{name}" already exists', details
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(method: str) -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def fmt_value(value: Any) -> str:
    """A value as field.Error prints it: strings quoted, numbers and bools bare."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


class FieldErrors:
    """Collects field.Error values and turns them into a 422 Invalid Status."""

    def __init__(self) -> None:
        self.causes: list[dict[str, str]] = []

    def __bool__(self) -> bool:
        return bool(self.causes)

    def _add(self, reason: str, field: str, body: str) -> None:
        self.causes.append({"reason": reason, "message": body, "field": field})

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self._add("FieldValueInvalid", field, f"Invalid value: {fmt_value(value)}: {detail}")

    def required(self, field: str, detail: str = "") -> None:
        self._add("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))

    def not_supported(self, field: str, value: Any, supported: list[str]) -> None:
        sv = ", ".join(json.dumps(s) for s in supported)
        self._add(
            "FieldValueNotSupported",
            field,
            f"Unsupported value: {fmt_value(value)}: supported values: {sv}",
        )

    def duplicate(self, field: str, value: Any) -> None:
        self._add("FieldValueDuplicate", field, f"Duplicate value: {fmt_value(value)}")

    def not_found(self, field: str, value: Any) -> None:
        self._add("FieldValueNotFound", field, f"Not found: {fmt_value(value)}")

    def forbidden(self, field: str, detail: str) -> None:
        self._add("FieldValueForbidden", field, f"Forbidden: {detail}")

    def too_long(self, field: str, limit: int) -> None:
        self._add("FieldValueTooLong", field, f"Too long: must have at most {limit} bytes")

    def error(self, kind: str, group: str, name: str) -> ApiError:
        msgs = [f"{c['field']}: {c['message']}" for c in self.causes]
        joined = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
        gk = f"{kind}.{group}" if group else kind
        details: dict[str, Any] = {"name": name, "kind": kind, "causes": self.causes}
        if group:
            details = {"name": name, "group": group, "kind": kind, "causes": self.causes}
        return ApiError(422, "Invalid", f'{gk} "{name}" is invalid: {joined}', details)
