"""PS3.15 Annex E de-identification: Basic Profile + options, keyed pseudonyms, pixel cleaning.

    from imaging.deid import DeidOption, DeidProfile, Deidentifier, DeidResult
    deid = Deidentifier(key=project_secret, profile=DeidProfile(options=frozenset({...})))
    result = deid.deidentify(ds)  # result.dataset is None when result.quarantined

Modules, one job each:
- generate_table.py -> table.py: Table E.1-1 (Basic Profile 2026c, option columns 2024b), generated.
- options.py: DeidOption / DeidProfile and their CID 7050 codes.
- actions.py: table + profile -> one tag -> action dict (the hot-path lookup), fail-closed defaults.
- iod.py: Type 1/2/3 of an attribute in the object's IOD (from highdicom's offline tables), so that
  X/Z/D-style actions keep the output conformant.
- pseudonyms.py: HMAC-SHA-256 UIDs (2.25.), patient pseudonyms and one date offset per patient.
- dates.py, text.py: date shifting (DA/DT, timezone kept), allow-list cleaning of free text.
- private.py, graphics.py, pixels.py: safe private elements, overlays/curves, burned-in text.
- engine.py: the walk over every element at every depth + markers; batch.py, cli.py: files.

Idempotence: our output carries a keyed seal (see engine.py); sealed input is returned unchanged.
"""

from imaging.deid.engine import Deidentifier, DeidResult
from imaging.deid.options import DeidOption, DeidProfile

__all__ = ["DeidOption", "DeidProfile", "DeidResult", "Deidentifier"]
