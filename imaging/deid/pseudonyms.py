"""Keyed pseudonyms: UIDs, patient pseudonyms and per-patient date offsets from HMAC-SHA-256.

Everything is a pure function of (project key, original value), so every batch, process and site holding
the same key derives the same values, and nobody without the key can link or reverse them. Each kind of
value has its own domain label so that, say, a UID and a PatientID with the same text never collide.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from pydicom._uid_dict import UID_dictionary  # registered UIDs (re-exported by pydicom.uid)

MIN_DATE_OFFSET_DAYS = -3650
MAX_DATE_OFFSET_DAYS = -365
_UID_ROOT = "2.25."  # UUID-derived root (PS3.5 B.2): a 128-bit integer needs no registration


class Pseudonymizer:
    """HMAC-SHA-256 derivations under one project key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the project key must hold at least 16 bytes")
        self._key = key
        # Bound per instance so each key has its own cache (lru_cache on methods would share one).
        self.uid_for = lru_cache(maxsize=65536)(self._uid_for)

    def _digest(self, domain: bytes, value: str) -> bytes:
        return hmac.new(self._key, domain + b"\x00" + value.encode("utf-8"), hashlib.sha256).digest()

    def _uid_for(self, uid: str) -> str:
        """Replacement for a UID; registered (well-known) UIDs such as SOP classes are kept."""
        uid = uid.strip("\x00 ")
        if not uid or uid in UID_dictionary:
            return uid
        return _UID_ROOT + str(int.from_bytes(self._digest(b"uid", uid)[:16], "big"))

    @staticmethod
    def _patient_key(patient_id: str, issuer: str) -> str:
        return f"{issuer.strip()}\x1f{patient_id.strip()}"

    def pseudonym_for(self, patient_id: str, issuer: str = "") -> str:
        """Patient pseudonym (used as PatientID and PatientName): 'ANON' + 16 base32 characters."""
        digest = self._digest(b"patient", self._patient_key(patient_id, issuer))
        return "ANON" + base64.b32encode(digest[:10]).decode("ascii")

    def date_offset_days(self, patient_id: str, issuer: str = "") -> int:
        """One date shift per patient, within MIN..MAX_DATE_OFFSET_DAYS (always into the past)."""
        digest = self._digest(b"date-offset", self._patient_key(patient_id, issuer))
        span = MAX_DATE_OFFSET_DAYS - MIN_DATE_OFFSET_DAYS + 1
        return MIN_DATE_OFFSET_DAYS + int.from_bytes(digest[:8], "big") % span

    def short_code(self, domain: str, value: str, length: int = 12) -> str:
        """A short keyed code for `value` (AE titles, seals): upper-case base32."""
        return base64.b32encode(self._digest(domain.encode("ascii"), value)).decode("ascii")[:length]
