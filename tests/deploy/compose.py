"""Reading docker/compose.yaml and the Dockerfiles as Docker would, for tests/deploy: interpolation of
`${VAR:-default}` / `${VAR:?message}` (with sample values for the required ones), merge keys (PyYAML),
ENV lines of the Dockerfiles, and the .dockerignore rules (last match wins, `!` re-includes)."""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def interpolate(value: str, sample: dict[str, str]) -> str:
    """A compose value with its variables replaced as `sample` were the environment (an .env file): its
    value where it has one, else the default given, else (a required variable) a placeholder."""

    def replace(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if name in sample:
            return sample[name]
        if kind == "-":
            return rest
        return f"sample-{name.lower()}"

    return _VARIABLE.sub(replace, value).replace("$$", "$")


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services built from this repository's Dockerfiles, with the Dockerfile each uses."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service and str(service["build"]["dockerfile"]).startswith("docker/Dockerfile")
    }


def dockerfile(service: dict[str, Any]) -> Path:
    return REPO / service["build"]["dockerfile"]


def dockerfile_env(path: Path) -> dict[str, str]:
    """ENV of the final stage (`ENV A=1 B=2`, continued lines joined)."""
    text = path.read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[-1]
    env: dict[str, str] = {}
    for line in final.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def dockerfile_cmd(path: Path) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith("CMD ")]
    return list(yaml.safe_load(lines[-1][4:]))


def dockerignore_includes(relative: str) -> bool:
    """Whether the build context keeps `relative` (a path from the repository root), by .dockerignore."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        negated = rule.startswith("!")
        pattern = rule[1:] if negated else rule
        pattern = pattern.rstrip("/")
        candidates = [relative, *("/".join(relative.split("/")[: i + 1]) for i in range(relative.count("/")))]
        for candidate in candidates:
            if fnmatch.fnmatchcase(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], pattern[3:])
            ):
                included = negated
                break
    return included
