"""Attribute Type (1/2/3) of an attribute at a sequence path in the IOD of a SOP class.

Source: the IOD/module/attribute tables that highdicom ships (`highdicom/_standard/*.json`, derived
from the DICOM standard, available offline); 1C counts as 1 and 2C as 2 (an attribute that is present
usually meets its condition). Resolution: exact sequence path; inside a sequence, then the strongest
type under the same parent sequence, then anywhere in the IOD (nested macros such as SR content items
are not listed under every path); a top-level attribute the IOD does not list is Type 3.
An unknown SOP class resolves to Type 1, so a combined action falls to a dummy (conformant, no PHI).
"""

from __future__ import annotations

import json
import pkgutil
from functools import lru_cache

# Types in order of strength (1 < 1C < 2 < 2C < 3), and the plain Type (1/2/3) of each.
_STRENGTH = {"1": 1, "1C": 2, "2": 3, "2C": 4, "3": 5}
_PLAIN = {1: 1, 2: 1, 3: 2, 4: 2, 5: 3}
_WEAKEST = 5


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, tuple[str, ...]], dict[str, dict[tuple[str, ...], int]]]:
    """(SOP class -> IOD, IOD -> modules, module -> {(path..., keyword): strongest type, as _STRENGTH})."""

    def load(name: str) -> object:
        data = pkgutil.get_data("highdicom", f"_standard/{name}")
        if data is None:
            raise FileNotFoundError(name)
        return json.loads(data)

    sop_iod = load("sop_class_iod_map.json")
    iod_modules = load("iod_module_map.json")
    module_attributes = load("module_attribute_map.json")
    assert isinstance(sop_iod, dict) and isinstance(iod_modules, dict) and isinstance(module_attributes, dict)
    modules: dict[str, dict[tuple[str, ...], int]] = {}
    for module, attributes in module_attributes.items():
        index: dict[tuple[str, ...], int] = {}
        for attribute in attributes:
            key = (*attribute["path"], attribute["keyword"])
            index[key] = min(_STRENGTH.get(attribute["type"], _WEAKEST), index.get(key, _WEAKEST))
        modules[module] = index
    iods = {iod: tuple(m["key"] for m in entries) for iod, entries in iod_modules.items()}
    return sop_iod, iods, modules


@lru_cache(maxsize=256)
def _iod_index(sop_class_uid: str) -> dict[tuple[str, ...], int] | None:
    sop_iod, iods, modules = _tables()
    iod = sop_iod.get(sop_class_uid)
    if iod is None:
        return None
    merged: dict[tuple[str, ...], int] = {}
    for module in iods.get(iod, ()):
        for key, strength in modules.get(module, {}).items():
            merged[key] = min(strength, merged.get(key, _WEAKEST))
    # Fallbacks: ("<parent>", "*", keyword) and ("*", keyword) hold the strongest type seen there.
    fallback: dict[tuple[str, ...], int] = {}
    for key, strength in merged.items():
        *path, keyword = key
        if path:
            parent = (path[-1], "*", keyword)
            fallback[parent] = min(strength, fallback.get(parent, _WEAKEST))
        anywhere = ("*", keyword)
        fallback[anywhere] = min(strength, fallback.get(anywhere, _WEAKEST))
    merged.update(fallback)
    return merged


@lru_cache(maxsize=65536)
def attribute_type(sop_class_uid: str, path: tuple[str, ...], keyword: str) -> int:
    """1, 2 or 3: the Type of `keyword` at sequence `path` (keywords of the enclosing sequences)."""
    index = _iod_index(sop_class_uid)
    if index is None or not keyword:
        return 1
    exact = index.get((*path, keyword))
    if exact is not None:
        return _PLAIN[exact]
    if not path:
        return 3
    parent = index.get((path[-1], "*", keyword))
    if parent is not None:
        return _PLAIN[parent]
    return _PLAIN[index.get(("*", keyword), _WEAKEST)]


@lru_cache(maxsize=65536)
def declared_type(sop_class_uid: str, path: tuple[str, ...], keyword: str) -> int | None:
    """1 or 2 where the IOD requires `keyword` at exactly this `path` without condition, else None.

    Unlike attribute_type(), no fallback and no conditional types: a removal is turned into a dummy or
    an empty value only where the IOD itself always requires the attribute there (conditions that
    de-identification can break are handled by conditions.py).
    """
    index = _iod_index(sop_class_uid)
    if index is None or not keyword:
        return None
    kind = index.get((*path, keyword))
    return {1: 1, 3: 2}.get(kind) if kind is not None else None
