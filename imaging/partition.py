"""Partitions of one index and one store: the clinical archive and one per research project.

A partition name is also a storage key prefix and a URL segment, so one pattern governs all three."""

from __future__ import annotations

import re

CLINICAL = "clinical"
PARTITION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PARTITION_PATTERN = PARTITION_NAME.pattern  # for pydantic Field(pattern=...) and OpenAPI


def is_partition_name(name: str) -> bool:
    return bool(PARTITION_NAME.match(name))


def is_project_name(name: str) -> bool:
    """A research project's name: a partition name other than the clinical one."""
    return is_partition_name(name) and name != CLINICAL
