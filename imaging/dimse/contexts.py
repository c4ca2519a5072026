"""Presentation contexts: every storage SOP class in every transfer syntax pydicom knows, stored as sent; the
query/retrieve models, Verification and Storage Commitment; and the contexts a C-MOVE proposes to its
destination."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydicom.uid import UID, AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
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
# Every storage SOP class pynetdicom knows (its 170, not the 120 of StoragePresentationContexts, which is cut
# to fit one association's 128 contexts when *requesting*: an acceptor has no such limit).
STORAGE_SOP_CLASSES: set[str] = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
# A C-MOVE offers every SOP class these as well as its stored syntaxes, so that any destination can take
# every object (transcoded when it refuses the stored syntax).
UNCOMPRESSED_FALLBACK: list[str | UID] = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
MAX_CONTEXTS = 128  # presentation context IDs are odd numbers 1-255 (PS3.8 9.3.2.2)
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
    # Storage Commitment: a requester that takes the SCP role (role selection) gets its N-EVENT-REPORT on
    # the same association (imaging.dimse.commitment_scp).
    commitment = build_context(StorageCommitmentPushModel)
    commitment.scu_role = True
    commitment.scp_role = True
    contexts.append(commitment)
    return contexts


def scu_contexts(objects: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """What a C-MOVE proposes to its destination for `objects` ((SOP class, stored syntax) per instance):
    one context per SOP class with the uncompressed syntaxes, so that the destination can take every object
    (transcoded if need be), then one per (class, stored syntax), most frequent first, so that it can take
    them as stored; at most 128 (the classes first: each extra context only spares a transcoding)."""
    counts = Counter(objects)
    per_class = Counter[str]()
    for (sop_class, _), n in counts.items():
        per_class[sop_class] += n
    classes = [sop_class for sop_class, _ in per_class.most_common(MAX_CONTEXTS)]
    contexts = [build_context(sop_class, UNCOMPRESSED_FALLBACK) for sop_class in classes]
    for (sop_class, syntax), _ in counts.most_common():
        if len(contexts) >= MAX_CONTEXTS:
            break
        if sop_class in per_class and sop_class in classes:
            contexts.append(build_context(sop_class, [syntax]))
    return contexts


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
