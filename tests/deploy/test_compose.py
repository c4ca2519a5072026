"""docker/compose.yaml checked without a container engine: valid against the Compose Specification's JSON
schema (shipped by check-jsonschema, validated with jsonschema), and consistent with the code it deploys:
every IMAGING_* variable a real setting whose value the settings accept, every command a real `imaging`
command line, every volume mounted where the settings point and owned by the images' user, the broker
wired everywhere, each job kind taken by exactly one worker, start order and restart policies, and a build
context that leaves patient data and virtualenvs out."""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer

from imaging.cli import app as cli_app
from imaging.config import Settings, load_settings
from imaging.sharing.outbox import JOB_KIND as SHARE_KIND
from tests.deploy.compose import (
    dockerfile,
    dockerfile_cmd,
    dockerfile_env,
    dockerignore_includes,
    interpolate,
    load_compose,
    our_services,
)
from triage.worker import JOB_KIND as TRIAGE_KIND

JOB_KINDS = {SHARE_KIND, TRIAGE_KIND}
UsageError = typer.BadParameter.__base__  # click's UsageError, as typer ships it
SAMPLE: dict[str, str] = {}  # the .env values the tests set (none: every default holds)


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor"
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_valid_against_the_compose_specification() -> None:
    assert errors(load_compose()) == []


def test_the_schema_check_catches_mistakes() -> None:
    compose = load_compose()
    for mistake in (
        lambda c: c["services"]["archive"].update(depends_on={"migrate": {"condition": "service_ready"}}),
        lambda c: c["services"]["archive"].update(healthcheck={"test": ["CMD", "true"], "intervall": "5s"}),
        lambda c: c["services"]["worker"].update(volumes=[{"type": "volume", "target": 7}]),
    ):
        broken = copy.deepcopy(compose)
        mistake(broken)
        assert errors(broken), mistake


def service_env(name: str, service: dict[str, Any]) -> dict[str, str]:
    """The container's environment: the image's ENV, then the service's (interpolated)."""
    env = dockerfile_env(dockerfile(service))
    env.update({k: interpolate(str(v), SAMPLE) for k, v in (service.get("environment") or {}).items()})
    return env


def service_settings(name: str, service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("IMAGING_")]:
        monkeypatch.delenv(key)
    for key, value in service_env(name, service).items():
        if key.startswith("IMAGING_"):
            monkeypatch.setenv(key, value)
    return load_settings(None)


def test_every_variable_is_a_setting_the_settings_accept(monkeypatch: pytest.MonkeyPatch) -> None:
    services = our_services(load_compose())
    assert set(services) == {"migrate", "archive", "worker", "triage-worker"}
    fields = set(Settings.model_fields)
    for name, service in services.items():
        env = service_env(name, service)
        unknown = [k for k in env if k.startswith("IMAGING_") and k[len("IMAGING_") :].lower() not in fields]
        assert unknown == [], (name, unknown)
        settings = service_settings(name, service, monkeypatch)  # values parse and validate
        assert settings.broker_url.startswith("amqp://"), name  # the broker is wired everywhere
        assert settings.storage_backend == "s3" and settings.s3_bucket, name  # no shared file system
        assert settings.database_url.startswith("postgresql+psycopg://"), name


def parse_command(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """`argv` parsed by the real command line (click under typer): the command path and its parameters.
    Raises UsageError for an unknown command or option, or a bad value."""
    assert argv[0] == "imaging"
    command: Any = typer.main.get_command(cli_app)
    path, args = ["imaging"], argv[1:]
    while hasattr(command, "list_commands"):  # a group: its sub-command
        sub = (
            command.get_command(command.context_class(command, info_name=path[-1]), args[0]) if args else None
        )
        if sub is None:
            raise UsageError(f"no such command: {' '.join([*path, *args[:1]])}")
        command, path, args = sub, [*path, args[0]], args[1:]
    context = command.make_context(path[-1], list(args))
    return " ".join(path), dict(context.params)


def test_every_command_is_a_real_command() -> None:
    compose = load_compose()
    taken: dict[str, str] = {}
    commands = {}
    for name, service in our_services(compose).items():
        for argv in (service["command"], dockerfile_cmd(dockerfile(service))):
            path, params = parse_command(argv)
            if argv is service["command"]:
                commands[name] = path
                if path == "imaging worker":
                    assert params["kind"], f"{name} takes every job kind"
                    for kind in params["kind"]:
                        assert kind in JOB_KINDS, (name, kind)
                        assert kind not in taken, f"{kind} taken by {taken.get(kind)} and {name}"
                        taken[kind] = name
    assert commands == {
        "migrate": "imaging schema upgrade",
        "archive": "imaging serve",
        "worker": "imaging worker",
        "triage-worker": "imaging worker",
    }
    assert taken == {SHARE_KIND: "worker", TRIAGE_KIND: "triage-worker"}
    with pytest.raises(UsageError):
        parse_command(["imaging", "worker", "--knd", "triage"])
    with pytest.raises(UsageError):
        parse_command(["imaging", "serv"])


def test_volumes_where_the_code_expects_them(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = load_compose()
    declared = set(compose["volumes"])
    for name, service in our_services(compose).items():
        settings = service_settings(name, service, monkeypatch)
        expected = {
            "data": Path(settings.data_dir),
            "keys": settings.keys_path,
        }
        owned = dockerfile(service).read_text()
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            assert source in declared, (name, source)
            mounts[Path(target)] = source
            assert Path(target) in expected.values(), f"{name}: {target} is not where the settings point"
            assert f"mkdir -p {target}" in owned or target in owned.split("mkdir -p", 1)[1].split("&&")[0], (
                f"{name}: {target} not created (and owned by the archive user) in the image"
            )
            assert "chown archive:archive" in owned
        path, params = parse_command(service["command"])
        delivers = path == "imaging serve" or SHARE_KIND in params.get("kind", [])
        # Project keys and peer secrets: where deliveries and de-identification on receive happen, shared.
        assert (settings.keys_path in mounts) == delivers, name
        if delivers:
            assert mounts[settings.keys_path] == "keys"
    env = dockerfile_env(dockerfile(compose["services"]["archive"]))
    assert env["IMAGING_VIEWER_DIR"] == "/opt/viewer"  # built into the image (COPY --from=build)
    assert "imaging viewer fetch --dest /opt/viewer" in dockerfile(compose["services"]["archive"]).read_text()


def test_start_order_healthchecks_and_restarts() -> None:
    compose = load_compose()
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "objectstore"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    for name, service in our_services(compose).items():
        if name == "migrate":
            continue
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
        assert service["restart"] == "unless-stopped", name
        assert "healthcheck" in service, name
    for name, service in services.items():
        assert "restart" in service, name


def test_images_run_as_one_non_root_user() -> None:
    compose = load_compose()
    users = set()
    for service in our_services(compose).values():
        text = dockerfile(service).read_text()
        final = text.rsplit("\nFROM ", 1)[-1]
        assert "USER archive" in final and "useradd --system --uid 10001 --gid archive" in final
        users.add("archive:10001")
    assert users == {"archive:10001"}
    gpu = compose["services"]["triage-worker"]
    assert "keys" not in str(gpu.get("volumes", []))


def test_build_context_leaves_data_out() -> None:
    for kept in (
        "pyproject.toml",
        "README.md",
        "imaging/cli/server.py",
        "triage/bundles/lung_nodule_reference/models/model.pt",
        "dicomweb/app.py",
    ):
        assert dockerignore_includes(kept), kept
    for left_out in (
        "data/objects/clinical/ab/abcd",
        "data/index.sqlite",
        "data-keys/lung.key",
        ".venv/bin/python",
        "tests/conftest.py",
        ".git/HEAD",
        "imaging/__pycache__/app.cpython-311.pyc",
        "docker/.env",
    ):
        assert not dockerignore_includes(left_out), left_out
