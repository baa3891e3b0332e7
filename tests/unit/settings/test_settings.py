"""Settings: defaults, parsing, every error at once, no network."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pman.backends import load_backend
from pman.errors import ConfigError
from pman.settings import load_settings
from pman.settings.declare import Section
from pman.settings.jobs import ContainerUser, IdRange, parse_labels, parse_mebibytes


def test_defaults_run_the_local_backend() -> None:
    s = load_settings({"STOREBASE": "/tmp/sb"})
    assert s.resource.container_env == "local"
    assert s.resource.storage.storage_type == "host"
    assert s.resource.jobs.logs_tail == 1000
    assert s.resource.jobs.remove_jobs is True
    assert s.resource.jobs.ignore_limits is False


def test_all_errors_reported_together() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            {
                "CONTAINER_ENV": "mainframe",
                "JOB_LOGS_TAIL": "-3",
                "CONTAINER_USER": "1000",
                "SHM_SIZE": "lots",
                "REMOVE_JOBS": "perhaps",
                "JOB_LABELS": "novalue",
            }
        )
    assert set(e.value.fields) == {
        "CONTAINER_ENV",
        "JOB_LOGS_TAIL",
        "CONTAINER_USER",
        "SHM_SIZE",
        "REMOVE_JOBS",
        "JOB_LABELS",
        "STOREBASE",
    }
    for name in e.value.fields:
        assert name in e.value.message


def test_storage_requirements() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({"STORAGE_TYPE": "nfs", "CONTAINER_ENV": "docker"})
    assert set(e.value.fields) == {"STOREBASE", "NFS_SERVER"}
    with pytest.raises(ConfigError) as e:
        load_settings({"STORAGE_TYPE": "docker_local_volume"})
    assert "STORAGE_TYPE" in e.value.fields


def test_upstream_style_values() -> None:
    s = load_settings(
        {
            "STOREBASE": "/tmp/sb",
            "IGNORE_LIMITS": "yes",
            "REMOVE_JOBS": "no",
            "ENABLE_HOME_WORKAROUND": "yes",
            "SHM_SIZE": "2Gi",
            "CONTAINER_USER": "1000-1010:100",
            "JOB_LABELS": "a=1,b=two",
        }
    )
    jobs = s.resource.jobs
    assert jobs.ignore_limits and not jobs.remove_jobs and jobs.enable_home_workaround
    assert jobs.shm_size == 2048
    assert jobs.container_user == ContainerUser(IdRange(1000, 1010), IdRange(100, 100))
    assert jobs.labels == {"a": "1", "b": "two"}


@pytest.mark.parametrize(("text", "mib"), [("512", 512), ("64m", 64), ("1Gi", 1024), ("2G", 2048)])
def test_mebibytes(text: str, mib: int) -> None:
    assert parse_mebibytes(text) == mib


def test_labels_parse() -> None:
    assert parse_labels("") == {}
    assert parse_labels("x=1, y = a=b") == {"x": "1", "y": "a=b"}
    with pytest.raises(ValueError):
        parse_labels("=1")


def test_loading_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("network used while loading settings")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    s = load_settings(
        {
            "CONTAINER_ENV": "docker",
            "STORAGE_TYPE": "docker_local_volume",
            "DOCKER_HOST": "tcp://127.0.0.1:1",
        }
    )
    backend = load_backend(s.resource.container_env, s)  # building the backend is offline too
    assert backend.name == "docker"


def test_unknown_backend_name_is_a_config_error() -> None:
    # a name load_settings accepts for some build but no registry entry has
    s = load_settings({"STOREBASE": "/tmp"})
    with pytest.raises(ConfigError) as e:
        load_backend("no-such-backend", s)
    assert "CONTAINER_ENV" in e.value.fields


def test_cli_refuses_to_start_with_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pman.__main__ import main

    monkeypatch.setenv("CONTAINER_ENV", "nope")
    monkeypatch.setenv("JOB_LOGS_TAIL", "x")
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "CONTAINER_ENV" in err and "JOB_LOGS_TAIL" in err


def test_instance_names_one_registry() -> None:
    base = {"STOREBASE": "/tmp/sb"}
    a = load_settings({**base, "PMAN_DATA_DIR": "/srv/pman-a"})
    again = load_settings({**base, "PMAN_DATA_DIR": "/srv/pman-a"})
    b = load_settings({**base, "PMAN_DATA_DIR": "/srv/pman-b"})
    assert a.registry.instance == again.registry.instance != b.registry.instance
    assert load_settings({**base, "PMAN_INSTANCE": "site-1"}).registry.instance == "site-1"


# ---- a resource's own variables (issue 15 names several resources) ----------------------
def test_a_resource_reads_its_prefixed_variables_and_inherits_the_others() -> None:
    environ = {
        "STOREBASE": "/tmp/sb",
        "CONTAINER_ENV": "docker",
        "HPC_CONTAINER_ENV": "slurm",
        "SLURM_PARTITION": "default-part",
        "HPC_SLURM_PARTITION": "hpc-part",
        "SLURM_QOS": "normal",
        "PMAN_MAX_RUNNING": "8",
        "HPC_PMAN_MAX_RUNNING": "2",
        "JOB_LABELS": "site=a",
        "HPC_PMAN_THREADS": "99",  # a global section is never prefixed
    }
    hpc = load_settings(environ, resource="hpc")
    assert (hpc.resource.name, hpc.resource.container_env) == ("hpc", "slurm")
    assert hpc.resource.engine.partition == "hpc-part"  # its own
    assert hpc.resource.engine.qos == "normal"  # inherited
    assert hpc.resource.jobs.max_running == 2
    assert hpc.resource.jobs.labels == {"site": "a"}
    assert hpc.server.quick_threads == 4
    plain = load_settings(environ)
    assert (plain.resource.name, plain.resource.container_env) == ("default", "docker")
    assert plain.resource.jobs.max_running == 8


def test_a_resource_error_names_the_variable_that_holds_the_value() -> None:
    environ = {
        "STOREBASE": "/tmp/sb",
        "GPU_CONTAINER_ENV": "docker",
        "GPU_PMAN_MAX_RUNNING": "-1",  # its own, bad
        "JOB_LOGS_TAIL": "x",  # inherited, bad
        "GPU_STORAGE_TYPE": "nfs",  # needs a server that nobody sets
    }
    with pytest.raises(ConfigError) as e:
        load_settings(environ, resource="gpu")
    assert set(e.value.fields) == {"GPU_PMAN_MAX_RUNNING", "JOB_LOGS_TAIL", "GPU_NFS_SERVER"}
    assert "GPU_STORAGE_TYPE=nfs" in e.value.fields["GPU_NFS_SERVER"]
    assert "GPU_PMAN_MAX_RUNNING" in e.value.message


# ---- the declarations ---------------------------------------------------------------------
def test_every_engine_has_its_section_and_container_env_offers_each() -> None:
    from pman.backends import REGISTRY, engine_sections
    from pman.settings.resource import EngineChoice

    assert set(engine_sections()) == set(REGISTRY)
    env = next(env for _, _, env in EngineChoice.variables())
    assert env.choices == tuple(REGISTRY)
    # each declared in its engine's package, next to the backend that reads it
    for name, section in engine_sections().items():
        package = REGISTRY[name].partition(":")[0]
        assert section.__module__ == f"{package}.settings", name


def _all_sections() -> list[type[Section]]:
    from pman.backends import engine_sections
    from pman.settings import GLOBAL_SECTIONS
    from pman.settings.resource import RESOURCE_SECTIONS
    from pman.settings.server import ServeSettings

    return [*GLOBAL_SECTIONS, *RESOURCE_SECTIONS, *engine_sections().values(), ServeSettings]


def test_each_variable_is_declared_once_and_documented() -> None:
    declared: dict[str, list[str]] = {}
    for section in _all_sections():
        for _, _, env in section.own_variables():
            declared.setdefault(env.name, []).append(section.__name__)
            assert env.doc.strip(), f"{env.name} has no description"
    twice = {name: where for name, where in declared.items() if len(set(where)) > 1}
    # podman's API is Docker's: the same variable with Podman's socket as default
    assert twice == {"DOCKER_HOST": ["DockerSettings", "PodmanSettings"]}


def test_the_configuration_reference_is_written_from_the_declarations() -> None:
    from pman.settings.reference import REFERENCE_PATH, reference

    committed = (Path(__file__).parents[3] / REFERENCE_PATH).read_text()
    assert committed == reference(), (
        f"{REFERENCE_PATH} differs from the declarations in pman/settings: run "
        f"`python -m pman.settings reference --output {REFERENCE_PATH}`"
    )
    for section in _all_sections():
        for _, _, env in section.variables():
            assert f"`{env.name}`" in committed


_LOAD_EVERY_ENGINE = """
import sys
from pman.backends import REGISTRY
from pman.settings import load_settings
for name in REGISTRY:
    env = {"CONTAINER_ENV": name, "STOREBASE": "/tmp/sb", "PMAN_DATA_DIR": "/tmp/data",
           "CROMWELL_URL": "http://cromwell.example:8000"}
    settings = load_settings(env)
    assert settings.resource.container_env == name
print(" ".join(sorted(m for m in sys.modules if m.startswith(("docker", "kubernetes", "pman.")))))
"""


def test_settings_load_without_delivery_code() -> None:
    """Every engine's section is read (pman.backends.SETTINGS), and not one
    engine's adapter nor its library (docker SDK, kubernetes client) is imported:
    a backend's library matters only to the sites that use it."""
    root = Path(__file__).parents[3]
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_EVERY_ENGINE],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = done.stdout.split()
    assert "pman.backends.slurm.settings" in modules
    backends = {m for m in modules if m.startswith("pman.backends.")}
    # an engine's package, its settings, and the pure rules they check values
    # with (Kubernetes' label syntax, in its manifest builder); no adapter
    allowed = (".settings", ".manifest")
    assert all(m.count(".") == 2 or m.endswith(allowed) for m in backends), backends
    assert not [m for m in modules if m.startswith(("docker", "kubernetes"))]


def test_settings_have_no_flat_names(tmp_path: Path) -> None:
    """settings.storebase and the like (a bridge while the backends moved) are gone."""
    settings = load_settings({"STOREBASE": str(tmp_path), "PMAN_DATA_DIR": str(tmp_path)})
    for name in ("storebase", "slurm_partition", "engine_timeout", "docker_environment"):
        assert not hasattr(settings, name), name


def test_logging_and_serve_options_read_the_same_declarations() -> None:
    from pman.settings import load_serve_settings
    from pman.settings.core import early_logging

    # logging starts before the settings are checked: a bad format falls back
    assert early_logging({}) == ("INFO", "json")
    assert early_logging({"APPLICATION_MODE": "development"}) == ("INFO", "text")
    assert early_logging({"PMAN_LOG_FORMAT": "xml", "PMAN_LOG_LEVEL": "debug"}) == (
        "DEBUG",
        "json",
    )
    options = load_serve_settings({"PMAN_PORT": "6000"})
    assert (options.host, options.port, options.workers) == ("127.0.0.1", 6000, 2)
    with pytest.raises(ConfigError) as e:
        load_serve_settings({"PMAN_PORT": "http", "PMAN_WORKERS": "two"})
    assert set(e.value.fields) == {"PMAN_PORT", "PMAN_WORKERS"}


# ---- PMAN_RESOURCES: several resources in one pman ---------------------------------------
BASE = {"STOREBASE": "/tmp/sb", "PMAN_DATA_DIR": "/tmp/pman-data"}


def test_without_pman_resources_the_unprefixed_variables_are_one_resource_named_default() -> None:
    settings = load_settings({**BASE, "CONTAINER_ENV": "docker"})
    assert [(r.name, r.prefix, r.container_env) for r in settings.resources] == [
        ("default", "", "docker")
    ]
    # `default` alone is the same as unset: its variables are the unprefixed ones
    alone = load_settings({**BASE, "PMAN_RESOURCES": "default", "CONTAINER_ENV": "docker"})
    assert [(r.name, r.prefix, r.container_env) for r in alone.resources] == [
        ("default", "", "docker")
    ]


def test_resources_come_in_order_each_with_its_own_and_inherited_variables() -> None:
    settings = load_settings(
        {
            **BASE,
            "PMAN_RESOURCES": "hpc, gpu-a,local",
            "CONTAINER_ENV": "docker",
            "HPC_CONTAINER_ENV": "slurm",
            "HPC_SLURM_PARTITION": "short",
            "GPU_A_PMAN_MAX_RUNNING": "4",
            "LOCAL_CONTAINER_ENV": "local",
            "PMAN_MAX_RUNNING": "9",
        }
    )
    got = [(r.name, r.prefix, r.container_env, r.jobs.max_running) for r in settings.resources]
    assert got == [
        ("hpc", "HPC_", "slurm", 9),
        ("gpu-a", "GPU_A_", "docker", 4),
        ("local", "LOCAL_", "local", 9),
    ]
    assert settings.resources[0].engine.partition == "short"
    assert settings.resource_named("gpu-a") is settings.resources[1]
    assert settings.resource_named("nope") is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Hpc", "not a lowercase DNS label"),
        ("hpc,", "empty name"),
        ("-x", "not a lowercase DNS label"),
        ("a" * 64, "not a lowercase DNS label"),
        ("hpc,api", "'api' is reserved"),
        ("health", "'health' is reserved"),
        ("ga4gh", "'ga4gh' is reserved"),
        ("hpc,hpc", "'hpc' is named twice"),
        ("default,gpu", "ambiguous"),
    ],
)
def test_a_bad_resource_list_is_refused_naming_pman_resources(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings({**BASE, "PMAN_RESOURCES": value})
    assert list(e.value.fields) == ["PMAN_RESOURCES"]
    assert says in e.value.fields["PMAN_RESOURCES"]


def test_names_whose_variables_would_be_the_same_text_are_refused() -> None:
    # no variable of today's is another's with a resource's prefix; the check is
    # for those to come: shown with made-up ones
    from pman.settings.resources import prefix_clashes

    resource_vars = ("GPU_COUNT", "COUNT", "MAX_RUNNING")
    clashes = prefix_clashes(["hpc", "hpc-gpu"], resource_vars, ["PMAN_THREADS"])
    assert set(clashes) == {"hpc-gpu"}
    assert "HPC_GPU_COUNT" in clashes["hpc-gpu"] and "'hpc'" in clashes["hpc-gpu"]
    # a resource variable of its own: GPU_ + COUNT is GPU_COUNT
    assert "GPU_COUNT" in prefix_clashes(["gpu"], resource_vars, [])["gpu"]
    # a global one: PMAN_ + THREADS
    assert "PMAN_THREADS" in prefix_clashes(["pman"], ("THREADS",), ["PMAN_THREADS"])["pman"]
    assert prefix_clashes(["hpc", "local"], resource_vars, ["PMAN_THREADS"]) == {}


def test_every_problem_names_its_resource_and_the_variable() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(
            {
                **BASE,
                "PMAN_RESOURCES": "hpc,gpu",
                "HPC_PMAN_MAX_RUNNING": "-1",
                "JOB_LOGS_TAIL": "x",
                "GPU_CONTAINER_ENV": "nope",
            }
        )
    fields = e.value.fields
    assert set(fields) == {"HPC_PMAN_MAX_RUNNING", "JOB_LOGS_TAIL", "GPU_CONTAINER_ENV"}
    assert fields["HPC_PMAN_MAX_RUNNING"].startswith("resource 'hpc': ")
    assert fields["GPU_CONTAINER_ENV"].startswith("resource 'gpu': ")
    # a variable both inherit is one problem naming both
    assert fields["JOB_LOGS_TAIL"].startswith("resources 'hpc', 'gpu': ")
