"""imaging.dimse.provider decodes C-STORE requests and encodes C-STORE responses exactly as pynetdicom does,
and leaves everything else to pynetdicom."""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

import pytest
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

from imaging.dimse.provider import GatewayDIMSEProvider, encode_c_store_rsp

CT = "1.2.840.10008.5.1.4.1.1.2"
FIELDS = (
    "MessageID",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Priority",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
    "_context_id",
)


@pytest.fixture(autouse=True)
def _no_standard_log_handlers(monkeypatch):
    """As the gateway runs (imaging.dimse.server): pynetdicom's debug-log handlers bound to
    EVT_DIMSE_RECV/SENT would want its message objects and switch the fast path off."""
    monkeypatch.setattr(_config, "LOG_HANDLER_LEVEL", "none")


class _Counting(GatewayDIMSEProvider):
    hand_overs = 0

    def _hand_over(self, rest: Any) -> None:
        type(self).hand_overs += 1
        super()._hand_over(rest)


def _association() -> Association:
    return Association(AE(), "acceptor")


def _store_rq(instance: str = "1.2.3.4", **fields: Any) -> C_STORE:
    rq = C_STORE()
    rq.MessageID = fields.pop("MessageID", 7)
    rq.AffectedSOPClassUID = fields.pop("AffectedSOPClassUID", CT)
    rq.AffectedSOPInstanceUID = instance
    rq.Priority = fields.pop("Priority", 2)
    for name, value in fields.items():
        setattr(rq, name, value)
    rq.DataSet = BytesIO(bytes(range(256)) * 40)
    return rq


def _p_datas(primitive: Any, message: Any, max_pdu: int, context_id: int = 3) -> list[P_DATA]:
    msg = message()
    msg.primitive_to_message(primitive)
    return list(msg.encode_msg(context_id, max_pdu))


def _received(provider_class: type[DIMSEServiceProvider], p_datas: list[P_DATA]) -> list[Any]:
    provider = provider_class(_association())
    for p_data in p_datas:
        provider.receive_primitive(p_data)
    out = []
    while not provider.msg_queue.empty():
        out.append(provider.msg_queue.get()[1])
    return out


def _summary(primitive: Any) -> dict[str, Any]:
    out = {name: getattr(primitive, name, None) for name in FIELDS}
    for name in ("DataSet", "Identifier"):
        value = getattr(primitive, name, None)
        out[name] = value.getvalue() if isinstance(value, BytesIO) else value
    out["type"] = type(primitive).__name__
    return out


def _same_as_pynetdicom(p_datas: list[P_DATA], hand_overs: int) -> list[dict[str, Any]]:
    """What GatewayDIMSEProvider makes of `p_datas`, checked against pynetdicom's provider; `hand_overs`:
    how many messages it must have left to pynetdicom."""
    _Counting.hand_overs = 0
    ours = [_summary(p) for p in _received(_Counting, p_datas)]
    theirs = [_summary(p) for p in _received(DIMSEServiceProvider, p_datas)]
    assert ours == theirs
    assert _Counting.hand_overs == hand_overs
    return ours


@pytest.mark.parametrize("max_pdu", [0, 16382, 1000, 64])
@pytest.mark.parametrize(
    ("instance", "fields"),
    [
        ("1.2.3.4", {}),  # even length
        ("1.2.826.0.1.3680043.8.498.1234567890123", {"Priority": 1}),  # odd: NUL-padded
        ("2.25.1", {"MoveOriginatorApplicationEntityTitle": "MOVER", "MoveOriginatorMessageID": 9}),
        ("2.25.2", {"MessageID": 65535, "Priority": 0}),
    ],
)
def test_c_store_rq_decoded_as_pynetdicom(instance, fields, max_pdu):
    (request,) = _same_as_pynetdicom(_p_datas(_store_rq(instance, **fields), C_STORE_RQ, max_pdu), 0)
    assert request["type"] == "C_STORE" and request["AffectedSOPInstanceUID"] == instance
    assert request["DataSet"] == bytes(range(256)) * 40 and request["_context_id"] == 3


def test_other_messages_and_unusual_command_sets_go_to_pynetdicom():
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    find = C_FIND()
    find.MessageID = 2
    find.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    find.Priority = 2
    find.Identifier = BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")
    messages = [
        *_p_datas(_store_rq("2.25.10"), C_STORE_RQ, 0),
        *_p_datas(echo, C_ECHO_RQ, 0),
        *_p_datas(_store_rq("2.25.11"), C_STORE_RQ, 200),
        *_p_datas(find, C_FIND_RQ, 0),
        *_p_datas(_store_rq("2.25.12"), C_STORE_RQ, 0),
    ]
    got = _same_as_pynetdicom(messages, hand_overs=2)
    assert [g["type"] for g in got] == ["C_STORE", "C_ECHO", "C_STORE", "C_FIND", "C_STORE"]
    assert got[3]["Identifier"].endswith(b"STUDY ")


def _with_command(p_data: P_DATA, command: bytes) -> P_DATA:
    out = P_DATA()
    out.presentation_data_value_list.append((p_data.presentation_data_value_list[0][0], b"\x03" + command))
    return out


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, tag, len(value)) + value


@pytest.mark.parametrize(
    "extra",
    [
        _element(0x0001, struct.pack("<I", 0)),  # an element the fast path does not know
        _element(0x1000, b"1.2.3\\4.5\x00"),  # two UIDs: pynetdicom warns and takes the first
        _element(0x0700, struct.pack("<H", 7)),  # a priority pynetdicom refuses
    ],
)
def test_unusual_c_store_rq_decoded_by_pynetdicom(extra):
    command_pdv, *data_pdvs = _p_datas(_store_rq("2.25.20"), C_STORE_RQ, 0)
    command = command_pdv.presentation_data_value_list[0][1][1:]
    body = command[12:]  # without the group length element
    # Replace or add the extra element, keeping the elements in tag order.
    tags = {}
    offset = 0
    while offset < len(body):
        _, tag, length = struct.unpack_from("<HHI", body, offset)
        tags[tag] = body[offset : offset + 8 + length]
        offset += 8 + length
    extra_tag = struct.unpack_from("<HHI", extra)[1]
    tags[extra_tag] = extra
    body = b"".join(tags[t] for t in sorted(tags))
    unusual = _element(0x0000, struct.pack("<I", len(body))) + body
    _same_as_pynetdicom([_with_command(command_pdv, unusual), *data_pdvs], hand_overs=1)


def test_command_where_data_set_should_continue_aborts():
    p_datas = _p_datas(_store_rq("2.25.30"), C_STORE_RQ, 1000)
    provider = GatewayDIMSEProvider(_association())
    provider.receive_primitive(p_datas[0])
    provider.receive_primitive(p_datas[1])
    provider.receive_primitive(p_datas[0])  # a new command set in the middle of the data set
    assert provider.msg_queue.empty()
    assert provider.dul.event_queue.get_nowait() == "Evt19"  # A-ABORT, as pynetdicom on an invalid message


def test_bound_dimse_recv_handler_gets_pynetdicom_messages():
    assoc = _association()
    seen = []
    assoc.bind(evt.EVT_DIMSE_RECV, lambda event: seen.append(type(event.message).__name__))
    provider = GatewayDIMSEProvider(assoc)
    for p_data in _p_datas(_store_rq("2.25.40"), C_STORE_RQ, 0):
        provider.receive_primitive(p_data)
    assert seen == ["C_STORE_RQ"]
    assert provider.msg_queue.get()[1].AffectedSOPInstanceUID == "2.25.40"


def _pynetdicom_rsp(primitive: C_STORE) -> bytes:
    msg = C_STORE_RSP()
    msg.primitive_to_message(primitive)
    return bytes(encode(msg.command_set, True, True))


def _store_rsp(**fields: Any) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = fields.pop("MessageIDBeingRespondedTo", 7)
    rsp.Status = fields.pop("Status", 0x0000)
    for name, value in fields.items():
        setattr(rsp, name, value)
    return rsp


@pytest.mark.parametrize(
    "fields",
    [
        {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": "1.2.3.4"},
        {"AffectedSOPClassUID": CT, "AffectedSOPInstanceUID": "1.2.3", "Status": 0xB000},
        {
            "AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.4",
            "AffectedSOPInstanceUID": "2.25.9",
            "Status": 0xA700,
        },
        {"AffectedSOPInstanceUID": "2.25.9", "Status": 0xC001, "MessageIDBeingRespondedTo": 65535},
        {"Status": 0x0122},
    ],
)
def test_c_store_rsp_encoded_as_pynetdicom(fields):
    primitive = _store_rsp(**fields)
    assert encode_c_store_rsp(primitive) == _pynetdicom_rsp(primitive)


def test_c_store_rsp_with_error_comment_left_to_pynetdicom():
    assert encode_c_store_rsp(_store_rsp(Status=0xC000, ErrorComment="cannot understand")) is None


@pytest.mark.parametrize("max_pdu", [0, 16382, 100])
def test_sent_response_is_what_pynetdicom_sends(max_pdu):
    primitive = _store_rsp(AffectedSOPClassUID=CT, AffectedSOPInstanceUID="1.2.826.0.1.3680043.8.498.12345")

    def sent(provider_class: type[DIMSEServiceProvider]) -> list[list[tuple[int, bytes]]]:
        assoc = _association()
        assoc.requestor.maximum_length = max_pdu
        provider_class(assoc).send_msg(primitive, 5)
        out = []
        while not assoc.dul.to_provider_queue.empty():
            out.append(list(assoc.dul.to_provider_queue.get().presentation_data_value_list))
        return out

    assert sent(GatewayDIMSEProvider) == sent(DIMSEServiceProvider)
