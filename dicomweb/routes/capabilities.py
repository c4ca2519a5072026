"""`GET {root}/capabilities`: what this DICOMweb service supports (a JSON summary; PS3.18 leaves the
format of capabilities open beyond the WADL of OPTIONS)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from dicomweb.deps import ReadContext
from dicomweb.pixels import FRAME_MEDIA_TYPES, TRANSCODE_TARGETS
from dicomweb.routes.qido import DEFAULT_KEYS, MATCHABLE
from dicomweb.viewer import OHIF_VERSION

router = APIRouter(tags=["Capabilities"])


@router.get("/capabilities", summary="What this service supports")
def capabilities(request: Request, ctx: ReadContext) -> JSONResponse:
    settings = ctx.archive.settings
    return JSONResponse(
        {
            "service": ctx.root,
            "partition": ctx.partition,
            "qido": {
                "resources": [
                    "/studies",
                    "/series",
                    "/instances",
                    "/studies/{study}/series",
                    "/studies/{study}/instances",
                    "/studies/{study}/series/{series}/instances",
                ],
                "matching": [
                    "single value",
                    "UID list",
                    "wildcard * ?",
                    "date/time range",
                    "PN case-insensitive",
                ],
                "fuzzymatching": True,
                "includefield": ["keyword", "tag", "comma list", "repeated", "all"],
                "matchingKeys": {level.value: sorted(keys) for level, keys in MATCHABLE.items()},
                "defaultReturnKeys": {level.value: list(keys) for level, keys in DEFAULT_KEYS.items()},
                "maxResults": settings.qido_max_results,
                "emptyResultStatus": int(settings.empty_qido_status.value),
            },
            "wado": {
                "instances": {
                    "mediaTypes": [
                        "multipart/related; type=application/dicom",
                        "application/dicom (instance)",
                    ],
                    "transferSyntax": "* (as stored) or the stored syntax; transcodes to "
                    + ", ".join(sorted(TRANSCODE_TARGETS)),
                    "default": "1.2.840.10008.1.2.1",
                },
                "metadata": "application/dicom+json, from the index cache",
                "frames": {
                    "mediaTypes": [
                        "application/octet-stream",
                        *sorted({m for v in FRAME_MEDIA_TYPES.values() for m in v}),
                    ],
                    "transferSyntax": "* (as stored), 1.2.840.10008.1.2.1 (decoded; the default)",
                },
                "bulkdata": "application/octet-stream, single or multipart; Range requests",
                "rendered": ["image/jpeg", "image/png"],
                "thumbnail": ["image/jpeg", "image/png"],
            },
            "stow": {
                "mediaTypes": ['multipart/related; type="application/dicom"', "application/dicom"],
                "maxUploadBytes": settings.max_upload_bytes,
            },
            "viewer": {"ohif": OHIF_VERSION, "path": "/viewer"},
        }
    )
