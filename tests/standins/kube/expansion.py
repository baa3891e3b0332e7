"""Kubernetes ``$(VAR)`` expansion, as the kubelet applies it to env values, command and args.

A port of kubernetes ``third_party/forked/golang/expansion`` (itself forked from Go's
``os.Expand``): ``$(NAME)`` is replaced by the mapping's value, an unknown name stays literally
``$(NAME)``, ``$$`` is an escaped ``$``, and any other ``$`` is copied as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

_OPERATOR = "$"
_OPENER = "("
_CLOSER = ")"


def mapping_for(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """The kubelet's MappingFuncFor: the first context holding the name wins."""

    def mapping(name: str) -> str:
        for ctx in contexts:
            if name in ctx:
                return ctx[name]
        return f"{_OPERATOR}{_OPENER}{name}{_CLOSER}"

    return mapping


def _try_read_variable_name(text: str) -> tuple[str, bool, int]:
    first = text[0]
    if first == _OPERATOR:  # escaped operator
        return text[0:1], False, 1
    if first == _OPENER:
        for i in range(1, len(text)):
            if text[i] == _CLOSER:
                return text[1:i], True, i + 1
        return _OPERATOR + _OPENER, False, 1  # incomplete reference
    return _OPERATOR + first, False, 1


def expand(text: str, mapping: Callable[[str], str]) -> str:
    """Expand ``text`` exactly as kubernetes' expansion.Expand does."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _try_read_variable_name(text[cursor + 1 :])
            out.append(mapping(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]
