"""An object of any IOD with every attribute of its modules present, for before/after conformance checks.

Origin: built here from the IOD, module and attribute tables that highdicom ships (derived from the
DICOM standard, offline). Every attribute at every sequence path of every module of the IOD gets a
value of its VR (text values are greppable 'ZQX...' tokens, sequences one item), so conditions between
attributes (Type 1C/2C) are exercised as the de-identification changes them. The input is not valid
(enumerated values are not met): only errors the output adds to the input's are of interest.
"""

from __future__ import annotations

import json
import pkgutil
from functools import lru_cache

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from tests.deid.corpus import ROOT

# Representative IODs: SOP Class UID -> short name.
REPRESENTATIVE = {
    "1.2.840.10008.5.1.4.1.1.2": "ct",
    "1.2.840.10008.5.1.4.1.1.4": "mr",
    "1.2.840.10008.5.1.4.1.1.6.1": "us",
    "1.2.840.10008.5.1.4.1.1.3.1": "us-multiframe",
    "1.2.840.10008.5.1.4.1.1.7": "sc",
    "1.2.840.10008.5.1.4.1.1.88.33": "comprehensive-sr",
    "1.2.840.10008.5.1.4.1.1.88.59": "key-object-selection",
    "1.2.840.10008.5.1.4.1.1.66.4": "seg",
    "1.2.840.10008.5.1.4.1.1.2.1": "enhanced-ct",
    "1.2.840.10008.5.1.4.1.1.4.1": "enhanced-mr",
    "1.2.840.10008.5.1.4.1.1.128": "pet",
    "1.2.840.10008.5.1.4.1.1.130": "enhanced-pet",
    "1.2.840.10008.5.1.4.1.1.11.1": "grayscale-presentation-state",
    "1.2.840.10008.5.1.4.1.1.481.5": "rt-plan",
    "1.2.840.10008.5.1.4.1.1.481.3": "rt-structure-set",
    "1.2.840.10008.5.1.4.1.1.9.1.1": "ecg",
}
_TEXT = {
    "DA": "20240305",
    "DT": "20240305101010",
    "TM": "101010",
    "AS": "050Y",
    "DS": "1",
    "IS": "1",
    "AE": "ZQXAE",
    "CS": "ZQXCS",
    "PN": "ZQX^NAME",
    "UR": "http://zqx.invalid/x",
}
_NOT_FILLED = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})


@lru_cache(maxsize=1)
def _tables() -> tuple[dict[str, str], dict[str, list[dict[str, str]]], dict[str, list[dict[str, object]]]]:
    def load(name: str) -> object:
        data = pkgutil.get_data("highdicom", f"_standard/{name}")
        assert data is not None, name
        return json.loads(data)

    return load("sop_class_iod_map.json"), load("iod_module_map.json"), load("module_attribute_map.json")  # type: ignore[return-value]


def sop_classes() -> list[str]:
    """Every SOP class whose IOD the tables describe."""
    sop_iod, iod_modules, _ = _tables()
    return sorted(sop for sop, iod in sop_iod.items() if iod in iod_modules)


def _value(vr: str, index: int) -> object:
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 1
    if vr in ("FL", "FD"):
        return 1.0
    if vr == "AT":
        return 0x00100010
    if vr.startswith("O") or vr == "UN":
        return b"\x00\x00"
    if vr == "UI":
        return f"{ROOT}.80.{index}"
    return _TEXT.get(vr, f"ZQX{index}")


def build(sop_class: str) -> Dataset:
    """An instance of the IOD of `sop_class` with every module attribute present (one item each)."""
    sop_iod, iod_modules, module_attributes = _tables()
    ds = Dataset()
    index = 0
    for module in iod_modules[sop_iod[sop_class]]:
        for attribute in module_attributes.get(module["key"], []):
            keyword, path = str(attribute["keyword"]), list(attribute["path"])  # type: ignore[call-overload]
            tag = tag_for_keyword(keyword)
            if tag is None or keyword in _NOT_FILLED or keyword.startswith("Overlay"):
                continue
            holder = ds
            for step in path:
                step_tag = tag_for_keyword(step)
                if step_tag is None:
                    break
                if step_tag not in holder or not holder[step_tag].value:
                    holder[step_tag] = DataElement(step_tag, "SQ", Sequence([Dataset()]))
                holder = holder[step_tag].value[0]
            else:
                if tag in holder:
                    continue
                vr = dictionary_VR(tag).split(" or ")[0]
                index += 1
                value: object = Sequence([Dataset()]) if vr == "SQ" else _value(vr, index)
                holder[tag] = DataElement(tag, vr, value)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = f"{ROOT}.80.0"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "Rows" in ds:  # a small, consistent image
        ds.Rows = ds.Columns = 4
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        if "NumberOfFrames" in ds:
            ds.NumberOfFrames = 1
        ds.PixelData = b"\x00" * 32
    return ds
