"""How settings are declared, read and checked: the small framework of pman.settings.

A *section* is a :class:`Section` (a pydantic-settings class) whose fields
each carry, in an :class:`Env` annotation, the environment variable they come
from and what it means; the field's default is the variable's default::

    class JobSettings(Section):
        logs_tail: Annotated[int, Env("JOB_LOGS_TAIL", "log lines ...", ge=0)] = 1000

That one declaration is the name, the default, the type and bounds, and the
documentation (pman.settings.reference writes docs/configuration.md from it).

A section is read from a given mapping (``os.environ`` in production, a dict
in tests) seen through an :class:`Environ`, which can give a compute
resource values of its own: with the prefix ``HPC_``, ``HPC_NAME`` wins over
``NAME``, and ``NAME`` is what every resource inherits (issue 15).

Text becomes values by the rules pman always had (those of environs): a
number is what Python's ``int``/``float`` read (no NaN or infinity), a
boolean one of yes/no, true/false, on/off, y/n, t/f, 1/0 (lower, Capitalised
or UPPER case), a list is split at commas, and an empty string is a value
(an error for a number or a boolean). A variable with a ``parse`` function of
its own is unset when empty, and its ValueError's text is the message.

Nothing is raised variable by variable: every problem goes to a
:class:`Problems`, which raises one ConfigError naming them all. Checks that
involve several variables (several sections, often) are plain methods the
loader calls after every section is read, not pydantic model validators: a
model validator does not run once a field has failed, and pman reports
everything wrong at once.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pman.errors import ConfigError

if TYPE_CHECKING:
    from pman.settings.jobs import JobSettings
    from pman.settings.storage import StorageSettings

# the words environs (marshmallow) has always taken for a boolean, in lower,
# Capitalised or UPPER case
_TRUE = ("t", "true", "on", "y", "yes", "1")
_FALSE = ("f", "false", "off", "n", "no", "0")
_TRUE_WORDS = frozenset(f for w in _TRUE for f in (w, w.capitalize(), w.upper()))
_FALSE_WORDS = frozenset(f for w in _FALSE for f in (w, w.capitalize(), w.upper()))


@dataclass(frozen=True)
class Env:
    """What a field of a section is read from, and what it means.

    ``ge``/``le`` bound a number, ``choices`` are the words a text may be;
    ``parse`` reads the text instead of the field's type (empty = unset);
    ``default_from`` computes the default from the environment when the
    variable is unset (such a field has no static default); ``default_doc``
    says the default in words when it is not a constant; ``form`` says what
    the text looks like when the type does not; ``secret`` keeps the value out
    of repr; ``blank_is_unset``: an empty value is the default rather than an
    empty text.
    """

    name: str
    doc: str
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    default_from: Callable[[Environ], str | None] | None = None
    default_doc: str | None = None
    form: str | None = None
    secret: bool = False
    blank_is_unset: bool = False

    @property
    def empty_is_unset(self) -> bool:
        return self.parse is not None or self.blank_is_unset


@dataclass(frozen=True)
class Environ:
    """The environment seen by one section: ``prefix + NAME`` when that is set,
    else ``NAME`` (what every resource inherits)."""

    variables: Mapping[str, str]
    prefix: str = ""

    def name_of(self, name: str) -> str:
        """The variable that gives ``name``'s value: the prefixed one when set or
        when neither is (the one to set), else the unprefixed one."""
        if not self.prefix:
            return name
        prefixed = self.prefix + name
        if prefixed in self.variables or name not in self.variables:
            return prefixed
        return name

    def get(self, name: str) -> str | None:
        return self.variables.get(self.name_of(name))

    def unprefixed(self) -> Environ:
        return Environ(self.variables)


class Problems:
    """Every bad variable and what is wrong with it: raised together, once."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self._invalid: set[str] = set()

    def invalid(self, variable: str, message: str) -> None:
        """``variable``'s value could not be read."""
        self.fields[variable] = message
        self._invalid.add(variable)

    def add(self, variable: str, message: str) -> None:
        """A check failed for ``variable`` (a later check's message wins; a
        value that could not be read keeps that message)."""
        if variable not in self._invalid:
            self.fields[variable] = message

    def of_resource(self, name: str) -> ResourceProblems:
        """The problems of one resource: each message says which resource it is
        (all of them, when a variable they inherit is at fault)."""
        return ResourceProblems(self, name)

    def raise_if_any(self) -> None:
        if self.fields:
            lines = "\n".join(f"  {k}: {v}" for k, v in sorted(self.fields.items()))
            raise ConfigError(f"invalid configuration:\n{lines}", fields=dict(self.fields))


class ResourceProblems(Problems):
    """One resource's view of :class:`Problems`: its messages start with
    ``resource 'hpc':``; one variable that several resources inherit is one
    problem naming them all."""

    def __init__(self, problems: Problems, resource: str) -> None:
        self.problems = problems
        self.resource = resource

    def _said(self, variable: str, message: str) -> str:
        earlier = self.problems.fields.get(variable, "")
        match = _RESOURCES_SAID.match(earlier)
        if match is not None and earlier[match.end() :] == message:
            names = [*match.group(2).split(", "), repr(self.resource)]
            return f"resources {', '.join(names)}: {message}"
        return f"resource {self.resource!r}: {message}"

    def invalid(self, variable: str, message: str) -> None:
        self.problems.invalid(variable, self._said(variable, message))

    def add(self, variable: str, message: str) -> None:
        self.problems.add(variable, self._said(variable, message))

    def raise_if_any(self) -> None:
        self.problems.raise_if_any()

    @property  # type: ignore[override]
    def fields(self) -> dict[str, str]:
        return self.problems.fields


_RESOURCES_SAID = re.compile(r"(resources?) ('[^:]*'(?:, '[^:]*')*): ")


def env_of(field: FieldInfo) -> Env | None:
    return next((m for m in field.metadata if isinstance(m, Env)), None)


def value_type(field: FieldInfo) -> Any:
    """The field's type without ``| None``."""
    annotation = field.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _number(text: str, kind: type, env: Env) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError("Not a valid integer." if kind is int else "Not a valid number.") from None
    if kind is float and (math.isnan(value) or math.isinf(value)):
        raise ValueError("Special numeric values (nan or infinity) are not permitted.")
    low = env.ge is not None and value < env.ge
    high = env.le is not None and value > env.le
    if low or high:
        message = f"Must be greater than or equal to {env.ge}" if env.ge is not None else "Must be"
        if env.le is not None:
            message += f"{' and' if env.ge is not None else ''} less than or equal to {env.le}"
        raise ValueError(message + ".")
    return value


def from_text(text: str, field: FieldInfo, env: Env) -> Any:
    """The value of ``field`` for the variable's text; ValueError with the message."""
    if env.parse is not None:
        return env.parse(text)
    kind = value_type(field)
    if kind is bool:
        if text in _TRUE_WORDS:
            return True
        if text in _FALSE_WORDS:
            return False
        raise ValueError("Not a valid boolean.")
    if kind in (int, float):
        return _number(text, kind, env)
    if kind is Path:
        return Path(text)
    if typing.get_origin(kind) is tuple:
        return tuple(text.split(",")) if text else ()
    if env.choices is not None and text not in env.choices:
        raise ValueError(f"Must be one of: {', '.join(env.choices)}.")
    return text


class EnvironSource(PydanticBaseSettingsSource):
    """A section's raw values from an :class:`Environ` (the only source a
    section has: no dotenv file, no secrets folder, never ``os.environ`` by
    itself); remembers which variable each value came from."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Environ) -> None:
        super().__init__(settings_cls)
        self.environ = environ
        #: field name -> the variable its value comes from (or would)
        self.names: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        env = env_of(field)
        if env is None:
            return None, field_name, False
        name = self.environ.name_of(env.name)
        text = self.environ.variables.get(name)
        if text is None or (text == "" and env.empty_is_unset):
            text = env.default_from(self.environ) if env.default_from is not None else None
        return text, name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            text, name, _ = self.get_field_value(field, field_name)
            self.names[field_name] = name
            if text is not None:
                values[field_name] = text
        return values


class Section(BaseSettings):
    """A group of settings read together: what one part of pman is configured with."""

    model_config = SettingsConfigDict(frozen=True, validate_default=False, extra="forbid")

    #: the section's heading in the configuration reference
    title: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, **_: Any
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # a section gets its values from load() (or from whoever builds it):
        # never from os.environ, a .env file or a secrets folder behind pman's back
        return (init_settings,)

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields[info.field_name or ""]
        env = env_of(field)
        if env is None or not isinstance(value, str):
            return value
        return from_text(value, field, env)

    @classmethod
    def load(cls, environ: Environ, problems: Problems) -> Self:
        """The section as ``environ`` sets it. A variable that cannot be read
        goes to ``problems`` and is None in the section returned (so that the
        checks after loading can tell it from a value)."""
        source = EnvironSource(cls, environ)
        values = source()
        try:
            return cls(**values)
        except ValidationError as e:
            failed: dict[str, str] = {}
            for error in e.errors():
                cause = (error.get("ctx") or {}).get("error")
                failed[str(error["loc"][0])] = str(cause) if cause else error["msg"]
        rest = {k: v for k, v in values.items() if k not in failed}
        for field_name, message in failed.items():
            problems.invalid(source.names[field_name], message)
            env = env_of(cls.model_fields[field_name])
            if env is not None and env.default_from is not None:
                # a field without a static default: its computed one stands in
                rest[field_name] = env.default_from(environ)
        return cls(**rest).model_copy(update=dict.fromkeys(failed))

    @classmethod
    def variables(cls) -> Iterator[tuple[str, FieldInfo, Env]]:
        """(field name, field, Env) of every variable the section declares."""
        for name, field in cls.model_fields.items():
            env = env_of(field)
            if env is not None:
                yield name, field, env

    @classmethod
    def own_variables(cls) -> Iterator[tuple[str, FieldInfo, Env]]:
        """Those declared by this class itself, not by the section it extends."""
        inherited = {
            name for base in cls.__mro__[1:] for name in getattr(base, "__annotations__", {})
        }
        for name, field, env in cls.variables():
            if name not in inherited or name in cls.__annotations__:
                yield name, field, env

    @classmethod
    def default_of(cls, field_name: str) -> Any:
        """The declared default of one field."""
        return cls.model_fields[field_name].default

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        secret = {name for name, _, env in self.variables() if env.secret}
        for name, value in super().__repr_args__():
            if name not in secret:
                yield name, value


class EngineSettings(Section):
    """The section of one engine (CONTAINER_ENV): what only that engine reads.

    An engine with nothing to configure has this empty one."""

    title = "engine"
    #: the storage types (STORAGE_TYPE) that are this engine's own volumes
    volumes: ClassVar[tuple[str, ...]] = ()

    def check(
        self, storage: StorageSettings, jobs: JobSettings, environ: Environ, problems: Problems
    ) -> None:
        """What this engine refuses of the resource's other settings; nothing by default."""

    def with_defaults(self, data_dir: Path) -> Self:
        """The section with the defaults that depend on PMAN_DATA_DIR filled in."""
        return self
