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

from pydicom._dicom_dict import DicomDictionary  # the public dictionary (re-exported by datadict)

from imaging.deid.table import ATTRIBUTES

_STRENGTH = {"1": 1, "1C": 1, "2": 2, "2C": 2, "3": 3}
_RISKY_VRS = frozenset({"PN", "DA", "DT", "LT", "ST", "UT"})  # resolved by type when unlisted


def _wanted_keywords() -> frozenset[str]:
    """Keywords whose type can ever be asked: combined-code rows and the VRs of the fail-closed rules.

    Indexing only these keeps the index small (the full tables hold ~100k entries).
    """
    wanted = set()
    for tag, (_vr, _vm, _name, _retired, keyword) in DicomDictionary.items():
        if keyword and (tag in ATTRIBUTES or _vr in _RISKY_VRS):
            wanted.add(keyword)
    return frozenset(wanted)


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, tuple[str, ...]], dict[str, dict[tuple[str, ...], int]]]:
    """(SOP class -> IOD, IOD -> modules, module -> {(path..., keyword): strongest type 1|2})."""

    def load(name: str) -> object:
        data = pkgutil.get_data("highdicom", f"_standard/{name}")
        if data is None:
            raise FileNotFoundError(name)
        return json.loads(data)

    sop_iod = load("sop_class_iod_map.json")
    iod_modules = load("iod_module_map.json")
    module_attributes = load("module_attribute_map.json")
    assert isinstance(sop_iod, dict) and isinstance(iod_modules, dict) and isinstance(module_attributes, dict)
    wanted = _wanted_keywords()
    modules: dict[str, dict[tuple[str, ...], int]] = {}
    for module, attributes in module_attributes.items():
        index: dict[tuple[str, ...], int] = {}
        for attribute in attributes:
            if attribute["keyword"] not in wanted:
                continue
            key = (*attribute["path"], attribute["keyword"])
            index[key] = min(_STRENGTH.get(attribute["type"], 3), index.get(key, 3))
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
            merged[key] = min(strength, merged.get(key, 3))
    # Fallbacks: ("<parent>", "*", keyword) and ("*", keyword) hold the strongest type seen there.
    fallback: dict[tuple[str, ...], int] = {}
    for key, strength in merged.items():
        *path, keyword = key
        if path:
            parent = (path[-1], "*", keyword)
            fallback[parent] = min(strength, fallback.get(parent, 3))
        anywhere = ("*", keyword)
        fallback[anywhere] = min(strength, fallback.get(anywhere, 3))
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
        return exact
    if not path:
        return 3
    parent = index.get((path[-1], "*", keyword))
    if parent is not None:
        return parent
    return index.get(("*", keyword), 3)
