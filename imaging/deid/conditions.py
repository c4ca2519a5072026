"""Conditional attributes whose condition the de-identification itself can break.

Table E.1-1 removes or empties an attribute (X, Z) without looking at the attributes whose Type 1C/2C
condition refers to it; the output then holds a dependent "present when condition unsatisfied", an error
the input did not have (seen by dciodvfy). Each entry below was found by running dciodvfy over every IOD
highdicom describes, every attribute filled, before and after de-identification (tests/deid/iod_fill.py
does the same in the test suite), and is checked there:
- a dependent whose condition no longer holds is removed (a 1C/2C attribute may be absent then);
- a Type 2C attribute that the table removes (X) while its condition still holds is kept present, empty
  (e.g. Responsible Person, required for an animal patient).
"""

from __future__ import annotations

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

# dependent tag: (tag its condition refers to, whether the condition needs a non-empty value there)
DEPENDENTS: dict[int, tuple[int, bool]] = {
    # Patient module: Responsible Person Role, "required if Responsible Person is present and has a value"
    0x00102298: (0x00102297, True),
    # Clinical Trial Subject: Ethics Committee Name, "required if ... Approval Number is present"
    0x00120081: (0x00120082, False),
}


# Type 2C attribute: tags any of which, present, makes it required (the patient is an animal)
REQUIRED_WHILE: dict[int, tuple[int, ...]] = {
    0x00102297: (0x00102201, 0x00102202),  # Responsible Person: Patient Species Description / Code Seq.
    0x00102299: (0x00102201, 0x00102202),  # Responsible Organization: the same
}


def restore_and_prune(src: Dataset, out: Dataset) -> None:
    """Fix one dataset level of `out` (made from `src`): required 2C attributes the walk removed come
    back empty, then each dependent whose condition no longer holds is removed."""
    for tag, triggers in REQUIRED_WHILE.items():
        if tag in src and tag not in out and any(t in out for t in triggers):
            out[tag] = DataElement(tag, dictionary_VR(tag), None)
    for dependent, (subject, needs_value) in DEPENDENTS.items():
        if dependent in out:
            elem = out.get(subject)
            if elem is None or (needs_value and not elem.value):
                del out[dependent]
