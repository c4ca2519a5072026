"""PS3.15 Annex E de-identification: Basic Profile + options, keyed pseudonyms, pixel cleaning.

    from imaging.deid import DeidOption, DeidProfile, Deidentifier, DeidResult
    deid = Deidentifier(key=project_secret, profile=DeidProfile(options=frozenset({...})))
    result = deid.deidentify(ds)  # result.dataset is None when result.quarantined

Modules, one job each:
- generate_table.py -> table.py: Table E.1-1 (Basic Profile 2026c, option columns 2024b), generated.
- options.py: DeidOption / DeidProfile and their CID 7050 codes.
- actions.py: table + profile -> tag -> action dicts (the hot-path lookups), one per walk mode
  (inside kept, cleaned or dummied sequences), fail-closed defaults for unlisted attributes.
- iod.py: Type 1/2/3 of an attribute in the object's IOD (from highdicom's offline tables), so that
  X/Z/D-style actions keep the output conformant; conditions.py: 1C/2C conditions the table breaks.
- codes.py: code items (public codes keep their canonical meaning, others are dummied where cleaned).
- pseudonyms.py: HMAC-SHA-256 UIDs (2.25.), patient pseudonyms and one date offset per patient.
- dates.py, text.py: date shifting (DA/DT, timezone kept), allow-list cleaning of free text.
- private.py, graphics.py, pixels.py: safe private elements, overlays/curves, burned-in text.
- walk.py: the walk over every element at every depth; raw.py: unparsed values on its fast path.
- engine.py: one instance (pixels, walk, markers, file meta); part10.py: direct Part 10 reading and
  writing; batch.py, cli.py: files.

Idempotence: our output carries a keyed seal (see engine.py); sealed input is returned unchanged.
"""

from imaging.deid.engine import Deidentifier, DeidResult
from imaging.deid.options import DeidOption, DeidProfile

__all__ = ["DeidOption", "DeidProfile", "DeidResult", "Deidentifier"]
