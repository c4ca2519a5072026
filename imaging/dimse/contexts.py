"""Presentation contexts: every storage SOP class in every transfer syntax pydicom knows, stored as sent."""

from __future__ import annotations

from typing import Any

from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
)
from pynetdicom import StoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

# pynetdicom, as acceptor, picks the first syntax of *this* list that a context proposes. A modality proposing
# [JPEG, Explicit LE, Implicit LE] in one context must be answered JPEG, or it converts before sending: so
# encapsulated syntaxes first, then Explicit LE, Deflated, Implicit LE, and retired Big Endian last.
_NATIVE = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
ALL_TRANSFER_SYNTAXES: list[str] = [str(ts) for ts in AllTransferSyntaxes if str(ts) not in _NATIVE] + _NATIVE
STORAGE_SOP_CLASSES: set[str] = {str(cx.abstract_syntax) for cx in StoragePresentationContexts}
FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)


def is_storage_sop_class(uid: str) -> bool:
    return uid in STORAGE_SOP_CLASSES


def scp_contexts(extra_sop_classes: list[str] | None = None) -> list[PresentationContext]:
    contexts = [build_context(Verification)]
    for sop_class in sorted(STORAGE_SOP_CLASSES | set(extra_sop_classes or [])):
        cx = build_context(sop_class, ALL_TRANSFER_SYNTAXES)
        # Accept SCP/SCU role selection: a C-GET requestor proposes storage contexts in which it is the
        # SCP, and the archive sends its C-STORE sub-operations over them.
        cx.scu_role = True
        cx.scp_role = True
        contexts.append(cx)
    for model in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
        contexts.append(build_context(model))
    return contexts


def scu_contexts(pairs: set[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts for sending stored instances: each stored syntax, plus Explicit VR LE as a fallback."""
    by_class: dict[str, set[str]] = {}
    for sop_class, syntax in pairs:
        by_class.setdefault(sop_class, set()).add(syntax)
    contexts = []
    for sop_class, syntaxes in sorted(by_class.items()):
        for syntax in sorted(syntaxes):
            contexts.append(build_context(sop_class, [syntax]))
        contexts.append(build_context(sop_class, [UID("1.2.840.10008.1.2.1"), UID("1.2.840.10008.1.2")]))
    return contexts[:128]


def calling_ae_title(assoc: Any) -> str:
    """The peer's own AE title, from its A-ASSOCIATE-RQ (`requestor.ae_title` is set only during
    negotiation, after EVT_REQUESTED)."""
    primitive = getattr(assoc.requestor, "primitive", None)
    calling = getattr(primitive, "calling_ae_title", None) or assoc.requestor.ae_title
    return str(calling).strip()


def called_ae_title(assoc: Any) -> str:
    """The AE title the peer called (A-ASSOCIATE-RQ), which may be a project-bound one; pynetdicom's
    `acceptor.ae_title` is always our own."""
    primitive = getattr(assoc.requestor, "primitive", None)
    called = getattr(primitive, "called_ae_title", None) or assoc.acceptor.ae_title
    return str(called).strip()
