"""Peer sites: one Protocol, three backends (DICOMweb, DIMSE, Orthanc REST), one error contract.

* `send(instance)` delivers one Part 10 instance (bytes or a path). Sending the same SOP Instance twice is
  harmless at every backend (our archive and Orthanc keep the first copy; a DICOMweb "already stored"
  answer counts as success).
* `verify(study_uid, sop_uids)` asks the peer which of those instances it holds (QIDO-RS, C-FIND, Orthanc
  /tools/find): delivery is confirmed by looking, not by trusting the send's answer.
* `echo()` tests the connection: reachable, and accepting our credentials — QIDO-RS for DICOMweb, C-ECHO
  for DIMSE, GET /system for Orthanc — and returns what the peer said (`echo_peer` times it).
* `delete(study_uid, instances)` asks the peer to delete instances it received ((series, SOP instance) UIDs
  as the peer holds them), for an erasure: DICOMweb DELETE (dcm4chee-style, as our own archive serves it),
  Orthanc REST DELETE, and for DIMSE — which has no delete — an IOCM rejection note sent by C-STORE, titled
  (113039, DCM, "Data Retention Policy Expired"): the other titles would state something false about the
  images (quality, patient safety, a wrong worklist entry) to the peer's clinical users, whereas a withdrawn
  consent is exactly the end of the lawful basis for keeping them; IOCM archives delete on it. Erasure is
  confirmed, as delivery is, by `verify` finding nothing.
* Errors: `PeerUnavailable` (cannot reach it: connection refused, timeout, 502/503/504, association
  refused) and `PeerRejected` (it answered and refused the instance). Both are retried by the outbox.

Peers are rows of `sharing_peer` (added through the admin API or `imaging share peer add`); a peer's secret
(basic-auth password or bearer token) lives in `<keys_path>/peers/<name>.secret`, mode 0600, never in the
index nor in an API answer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import ssl
import time
from collections.abc import Collection
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import httpx
import requests.adapters
from orthanc_api_client import OrthancApiClient
from orthanc_api_client import exceptions as oe
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification
from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.errors import ArchiveError, InvalidRequest, NotFound
from imaging.index.rejection import KEY_OBJECT_SELECTION, Reference, RejectionTitle, make_rejection_note
from imaging.sharing.models import Peer, PeerAuth, PeerKind

log = logging.getLogger(__name__)

PEER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PeerError(ArchiveError):
    """A delivery to a peer did not succeed (retried by the outbox). Messages carry no PHI."""

    http_status = 502


class PeerUnavailable(PeerError):
    """The peer could not be reached; the rest of a batch is not tried this round."""

    http_status = 503


class PeerRejected(PeerError):
    """The peer answered and refused the instance."""


class PeerClient(Protocol):
    name: str

    def send(self, instance: bytes | Path) -> None: ...

    def verify(self, study_uid: str, sop_uids: Collection[str]) -> set[str]: ...

    def delete(self, study_uid: str, instances: Collection[tuple[str, str]]) -> None: ...

    def echo(self) -> str: ...

    def close(self) -> None: ...


def _read(instance: bytes | Path) -> bytes:
    return instance if isinstance(instance, bytes) else Path(instance).read_bytes()


def _ssl_context(peer: Peer) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=peer.ca_file or None)
    if peer.client_cert:
        ctx.load_cert_chain(peer.client_cert, peer.client_key or None)
    if not peer.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ------------------------------------------------------------------------------------------ DICOMweb
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
SOP_INSTANCE_UID = "00080018"
# Failure reasons that mean the instance is already there (PS3.18 / PS3.4 C-STORE statuses).
ALREADY_STORED = {0x0111}


class DicomwebPeer:
    """STOW-RS to `<url>/studies` (multipart/related; type="application/dicom"), QIDO-RS to verify."""

    def __init__(self, peer: Peer, secret: str = "") -> None:
        self.name = peer.name
        headers = {"User-Agent": "imaging-archive-sharing"}
        auth: Any = None
        if peer.auth == PeerAuth.BASIC:
            auth = httpx.BasicAuth(peer.username, secret)
        elif peer.auth == PeerAuth.BEARER:
            headers["Authorization"] = f"Bearer {secret}"
        verify: Any = _ssl_context(peer) if peer.url.startswith("https") else True
        self._httpx = httpx
        self.client = httpx.Client(
            base_url=peer.url.rstrip("/"), auth=auth, headers=headers, verify=verify, timeout=peer.timeout
        )

    def _request(self, method: str, url: str, **kw: Any) -> Any:
        try:
            response = self.client.request(method, url, **kw)
        except self._httpx.TransportError as exc:
            raise PeerUnavailable(f"{self.name}: {type(exc).__name__}") from exc
        if response.status_code in (502, 503, 504):
            raise PeerUnavailable(f"{self.name}: HTTP {response.status_code}")
        if response.status_code in (401, 403):
            raise PeerRejected(f"{self.name}: HTTP {response.status_code} (check the peer's credentials)")
        return response

    def send(self, instance: bytes | Path) -> None:
        data = _read(instance)
        boundary = secrets.token_hex(16)
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        response = self._request(
            "POST",
            "/studies",
            content=body,
            headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
        )
        failures = _stow_failures(response)
        if response.status_code in (200, 202) and not failures:
            return
        if failures and all(reason in ALREADY_STORED for reason in failures):
            return
        detail = ", ".join(f"0x{r:04X}" for r in failures)  # not the body: it is the peer's free text
        raise PeerRejected(f"{self.name}: STOW-RS HTTP {response.status_code} {detail}")

    def verify(self, study_uid: str, sop_uids: Collection[str]) -> set[str]:
        present: set[str] = set()
        offset, page = 0, 1000
        while True:
            response = self._request(
                "GET",
                f"/studies/{study_uid}/instances",
                params={"includefield": SOP_INSTANCE_UID, "limit": page, "offset": offset},
                headers={"Accept": "application/dicom+json"},
            )
            if response.status_code in (204, 404):
                break
            if response.status_code != 200:
                raise PeerRejected(f"{self.name}: QIDO-RS HTTP {response.status_code}")
            items = response.json() if response.content else []
            for item in items:
                values = item.get(SOP_INSTANCE_UID, {}).get("Value") or []
                if values:
                    present.add(str(values[0]))
            if len(items) < page:
                break
            offset += len(items)
        return present & set(sop_uids)

    def echo(self) -> str:
        response = self._request(
            "GET", "/studies", params={"limit": 1}, headers={"Accept": "application/dicom+json"}
        )
        if response.status_code not in (200, 204):
            raise PeerRejected(f"{self.name}: QIDO-RS HTTP {response.status_code}")
        return f"QIDO-RS HTTP {response.status_code}"

    def delete(self, study_uid: str, instances: Collection[tuple[str, str]]) -> None:
        for series_uid, sop_uid in sorted(instances):
            url = f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
            response = self._request("DELETE", url)
            if response.status_code in (405, 501):
                raise PeerRejected(f"{self.name}: the peer does not delete over DICOMweb")
            if response.status_code not in (200, 202, 204, 404):  # 404: gone already
                raise PeerRejected(f"{self.name}: DELETE HTTP {response.status_code}")

    def close(self) -> None:
        self.client.close()


def _stow_failures(response: Any) -> list[int]:
    """FailureReason of each FailedSOPSequence item of a STOW-RS answer."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return []
    if not isinstance(body, dict):
        return []
    reasons = []
    for item in (body.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []:
        values = (item.get(FAILURE_REASON) or {}).get("Value") or [0xC000]
        reasons.append(int(values[0]))
    return reasons


# ------------------------------------------------------------------------------------------ DIMSE
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
STORE_WARNINGS = {0xB000, 0xB006, 0xB007}


class DimsePeer:
    """C-STORE SCU (one association per instance) and C-FIND SCU (Study Root, SERIES then IMAGE level)."""

    def __init__(self, peer: Peer, calling_ae_title: str) -> None:
        self.name = peer.name
        self.called = peer.ae_title
        self.calling = peer.calling_ae_title or calling_ae_title
        self.address = (peer.host, peer.port)
        self.timeout = peer.timeout
        self.tls_args = (_ssl_context(peer), peer.host) if peer.tls else None

    def _associate(self, contexts: list[tuple[str, list[str]]]) -> Any:
        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = self.timeout
        for abstract, syntaxes in contexts:
            ae.add_requested_context(abstract, syntaxes)
        assoc = ae.associate(*self.address, ae_title=self.called, tls_args=self.tls_args)
        if not assoc.is_established:
            what = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
            raise PeerUnavailable(f"{self.name}: association {what}")
        return assoc

    def send(self, instance: bytes | Path) -> None:
        ds = dcmread(BytesIO(instance) if isinstance(instance, bytes) else instance)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        syntaxes = [syntax] + ([s for s in UNCOMPRESSED if s != syntax] if syntax in UNCOMPRESSED else [])
        assoc = self._associate([(str(ds.SOPClassUID), syntaxes)])
        try:
            status = assoc.send_c_store(ds)
        except (RuntimeError, ValueError) as exc:  # no accepted context for this SOP class / syntax
            raise PeerRejected(f"{self.name}: {exc}") from exc
        finally:
            if assoc.is_established:
                assoc.release()
        if not status or "Status" not in status:
            raise PeerUnavailable(f"{self.name}: no C-STORE response")
        code = int(status.Status)
        if code != 0x0000 and code not in STORE_WARNINGS:
            raise PeerRejected(f"{self.name}: C-STORE status 0x{code:04X}")

    def _find(self, assoc: Any, identifier: Any) -> list[Any]:
        found = []
        for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            if not status:
                raise PeerUnavailable(f"{self.name}: C-FIND without response")
            if status.Status in (0xFF00, 0xFF01) and ds is not None:
                found.append(ds)
            elif status.Status != 0x0000:
                raise PeerRejected(f"{self.name}: C-FIND status 0x{int(status.Status):04X}")
        return found

    def verify(self, study_uid: str, sop_uids: Collection[str]) -> set[str]:
        return {str(ds.SOPInstanceUID) for ds in self._instances(study_uid)} & set(sop_uids)

    def echo(self) -> str:
        assoc = self._associate([(Verification, list(UNCOMPRESSED))])
        try:
            status = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(status.Status) if status and "Status" in status else -1
        if code != 0x0000:
            raise PeerRejected(f"{self.name}: C-ECHO status 0x{code & 0xFFFF:04X}")
        return f"C-ECHO status 0x0000 from {self.called}"

    def delete(self, study_uid: str, instances: Collection[tuple[str, str]]) -> None:
        wanted = {sop for _, sop in instances}
        held = [ds for ds in self._instances(study_uid) if str(ds.SOPInstanceUID) in wanted]
        if not held:
            return  # nothing of ours is there (any more)
        references = [
            Reference(study_uid, str(ds.SeriesInstanceUID), str(ds.SOPClassUID), str(ds.SOPInstanceUID))
            for ds in held
        ]
        note = make_rejection_note(
            RejectionTitle.RETENTION_EXPIRED,
            references,
            patient_id=str(held[0].get("PatientID", "")),
            patient_name=str(held[0].get("PatientName", "")),
        )
        assoc = self._associate([(KEY_OBJECT_SELECTION, list(UNCOMPRESSED))])
        try:
            status = assoc.send_c_store(note)
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(status.Status) if status and "Status" in status else -1
        if code != 0x0000 and code not in STORE_WARNINGS:
            raise PeerRejected(f"{self.name}: rejection note refused, C-STORE status 0x{code & 0xFFFF:04X}")

    def _instances(self, study_uid: str) -> list[Any]:
        """C-FIND of the study's instances (SERIES then IMAGE level): their UIDs, SOP class and patient."""
        assoc = self._associate([(StudyRootQueryRetrieveInformationModelFind, list(UNCOMPRESSED))])
        found: list[Any] = []
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "SERIES"
            query.StudyInstanceUID = study_uid
            query.SeriesInstanceUID = ""
            series_uids = {
                str(ds.SeriesInstanceUID) for ds in self._find(assoc, query) if "SeriesInstanceUID" in ds
            }
            for series_uid in sorted(series_uids):
                query = Dataset()
                query.QueryRetrieveLevel = "IMAGE"
                query.StudyInstanceUID = study_uid
                query.SeriesInstanceUID = series_uid
                query.SOPInstanceUID = query.SOPClassUID = query.PatientID = query.PatientName = ""
                for ds in self._find(assoc, query):
                    if "SOPInstanceUID" in ds:
                        ds.SeriesInstanceUID = ds.get("SeriesInstanceUID") or series_uid
                        found.append(ds)
        finally:
            if assoc.is_established:
                assoc.release()
        return found

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------ Orthanc
class OrthancPeer:
    """Orthanc's REST API through orthanc-api-client: POST /instances, POST /tools/find."""

    def __init__(self, peer: Peer, secret: str = "") -> None:
        self.name = peer.name
        self.timeout = peer.timeout
        basic = peer.auth == PeerAuth.BASIC
        self.client = OrthancApiClient(
            peer.url.rstrip("/") + "/",
            user=peer.username if basic else None,
            pwd=secret if basic else None,
            api_token=secret if peer.auth == PeerAuth.BEARER else None,
        )
        session = self.client._http_session  # a requests.Session
        if peer.url.startswith("https"):
            session.verify = (peer.ca_file or True) if peer.tls_verify else False
            if peer.client_cert:
                session.cert = (peer.client_cert, peer.client_key) if peer.client_key else peer.client_cert
        # The outbox retries with backoff; the library's own connect retries would only slow a down peer.
        session.mount(peer.url.split("://")[0] + "://", requests.adapters.HTTPAdapter(max_retries=0))

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, timeout=self.timeout, **kw)
        except (oe.ConnectionError, oe.TimeoutError) as exc:
            raise PeerUnavailable(f"{self.name}: {type(exc).__name__}") from exc
        except oe.HttpError as exc:
            if exc.http_status_code in (502, 503, 504):
                raise PeerUnavailable(f"{self.name}: HTTP {exc.http_status_code}") from exc
            raise PeerRejected(f"{self.name}: HTTP {exc.http_status_code}") from exc
        except oe.OrthancApiException as exc:
            raise PeerUnavailable(f"{self.name}: {type(exc).__name__}") from exc

    def send(self, instance: bytes | Path) -> None:
        response = self._call(self.client.post, "instances", data=_read(instance))
        status = response.json().get("Status", "") if response.content else ""
        if status not in ("Success", "AlreadyStored"):
            raise PeerRejected(f"{self.name}: Orthanc status {status or 'missing'}")

    def verify(self, study_uid: str, sop_uids: Collection[str]) -> set[str]:
        response = self._call(
            self.client.post,
            "tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
        )
        present = {str(item.get("MainDicomTags", {}).get("SOPInstanceUID", "")) for item in response.json()}
        return present & set(sop_uids)

    def echo(self) -> str:
        response = self._call(self.client.get, "system")
        version = response.json().get("Version", "") if response.content else ""
        return f"Orthanc {version}".strip()

    def delete(self, study_uid: str, instances: Collection[tuple[str, str]]) -> None:
        wanted = {sop for _, sop in instances}
        response = self._call(
            self.client.post,
            "tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
        )
        for item in response.json():
            if str(item.get("MainDicomTags", {}).get("SOPInstanceUID", "")) in wanted:
                try:
                    self._call(self.client.delete, f"instances/{item['ID']}")
                except PeerRejected as exc:
                    if "HTTP 404" not in str(exc):  # gone meanwhile
                        raise

    def close(self) -> None:
        self.client._http_session.close()


# ------------------------------------------------------------------------------------------ registry
def _secret_path(archive: Archive, name: str) -> Path:
    return archive.settings.keys_path / "peers" / f"{name}.secret"


def peer_secret(archive: Archive, name: str) -> str:
    path = _secret_path(archive, name)
    return path.read_text().strip() if path.exists() else ""


def _write_secret(archive: Archive, name: str, secret: str) -> None:
    folder = _secret_path(archive, name).parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _secret_path(archive, name)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    os.replace(tmp, path)


PEER_DEFAULTS: dict[str, Any] = {
    "description": "", "url": "", "ae_title": "", "host": "", "port": 0, "calling_ae_title": "",
    "auth": PeerAuth.NONE.value, "username": "", "tls_verify": True, "ca_file": "", "client_cert": "",
    "client_key": "", "tls": False, "timeout": 30.0, "enabled": True,
}  # fmt: skip
PEER_FIELDS = tuple(PEER_DEFAULTS)


def _validate(peer: Peer) -> None:
    kind = PeerKind(peer.kind)
    PeerAuth(peer.auth)
    if kind in (PeerKind.DICOMWEB, PeerKind.ORTHANC):
        if not re.match(r"^https?://", peer.url or ""):
            raise InvalidRequest("a DICOMweb or Orthanc peer needs an http(s) url")
    elif not (peer.ae_title and peer.host and 0 < peer.port < 65536):
        raise InvalidRequest("a DIMSE peer needs ae_title, host and port")
    if peer.auth == PeerAuth.BASIC and not peer.username:
        raise InvalidRequest("basic auth needs a username")


def add_peer(
    archive: Archive,
    name: str,
    kind: str,
    *,
    secret: str | None = None,
    user: str = "system",
    **fields: Any,
) -> Peer:
    """Create or update a peer (audited). `secret` (password / bearer token) goes to the key folder, not
    the index."""
    if not PEER_NAME.match(name):
        raise InvalidRequest("peer names are 1-64 letters, digits, '.', '-' or '_'")
    unknown = set(fields) - set(PEER_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown peer settings: {', '.join(sorted(unknown))}")
    try:
        PeerKind(kind)
        PeerAuth(fields.get("auth") or PeerAuth.NONE)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    with archive.db.write() as session:
        peer = session.scalar(select(Peer).where(Peer.name == name))
        if peer is None:
            peer = Peer(name=name, kind=kind, **PEER_DEFAULTS)
            session.add(peer)
        peer.kind = PeerKind(kind).value
        for key, value in fields.items():
            if value is not None:
                setattr(peer, key, value.value if isinstance(value, PeerAuth) else value)
        _validate(peer)
        _audit_change(session, name, user, "set")
    if secret is not None:
        _write_secret(archive, name, secret)
    return peer


def remove_peer(archive: Archive, name: str, *, user: str = "system") -> None:
    with archive.db.write() as session:
        peer = get_peer(session, name)
        session.delete(peer)
        _audit_change(session, name, user, "removed")
    _secret_path(archive, name).unlink(missing_ok=True)


def _audit_change(session: Session, name: str, user: str, what: str) -> None:
    """PS3.15 A.5.3.11 Security Alert, type 110128 Network Configuration."""
    audit.record(
        session,
        audit.AuditEvent.SECURITY_ALERT,
        user=user,
        action="U",
        source=f"peer:{name}",
        detail=f"110128 Network Configuration: peer {name} {what}",
    )


def get_peer(session: Session, name: str) -> Peer:
    peer = session.scalar(select(Peer).where(Peer.name == name))
    if peer is None:
        raise NotFound("no such peer")
    return peer


def list_peers(session: Session) -> list[Peer]:
    return list(session.scalars(select(Peer).order_by(Peer.name)))


def peer_info(peer: Peer) -> dict[str, Any]:
    """The peer's settings for the API (never its secret)."""
    info: dict[str, Any] = {"name": peer.name, "kind": peer.kind}
    info.update({key: getattr(peer, key) for key in PEER_FIELDS})
    return info


def echo_peer(archive: Archive, name: str) -> dict[str, Any]:
    """Test a peer's connection (`echo`): {"ok", "detail", "seconds"}; a refusal or an unreachable peer is
    an answer here, not an error (its message names no patient and no secret)."""
    with archive.db.read() as session:
        peer = get_peer(session, name)
    started = time.monotonic()
    client = client_for(archive, peer)
    try:
        detail, ok = client.echo(), True
    except PeerError as exc:
        detail, ok = str(exc), False
    finally:
        client.close()
    return {"peer": name, "ok": ok, "detail": detail, "seconds": round(time.monotonic() - started, 3)}


def client_for(archive: Archive, peer: Peer) -> PeerClient:
    kind = PeerKind(peer.kind)
    if kind == PeerKind.DICOMWEB:
        return DicomwebPeer(peer, peer_secret(archive, peer.name))
    if kind == PeerKind.ORTHANC:
        return OrthancPeer(peer, peer_secret(archive, peer.name))
    return DimsePeer(peer, archive.settings.ae_title)
