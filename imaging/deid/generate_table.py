"""Generate `imaging/deid/table.py` from the PS3.15 Table E.1-1 data files.

    python -m imaging.deid.generate_table --standard-dir ../shared/standard

Sources (never edited by hand, see ../shared/standard/README.md):
- `ps315-e1-1-2026c-basic.json`: the Basic Profile action of every row (edition 2026c).
- `ps315-e1-1-2024b.json`: the option columns (edition 2024b), and the rows that 2026c no longer lists
  (kept so that an old object carrying them is still handled, fail closed).

The 38 rows new in 2026c have no option columns in any machine-readable source we hold, so their option
behaviour is chosen here, deliberately, by analogy with the nearest 2024b row (see NEW_ROW_OPTIONS).
"""

from __future__ import annotations

import argparse
import json
import pprint
from pathlib import Path
from typing import Any

BASIC_EDITION = "2026c"
OPTION_EDITION = "2024b"
BASIC_FILE = f"ps315-e1-1-{BASIC_EDITION}-basic.json"
OPTION_FILE = f"ps315-e1-1-{OPTION_EDITION}.json"
OUTPUT = Path(__file__).with_name("table.py")

OPTION_COLUMNS = (
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)

_DATES = {"rtnLongFullDatesOpt": "K", "rtnLongModifDatesOpt": "C"}
_DESCRIPTOR = {"cleanDescOpt": "C"}
_GRAPHICS = {"cleanGraphOpt": "C"}
_CHARACTERISTIC = {"rtnPatCharsOpt": "K"}
_CHARACTERISTIC_TEXT = {"rtnPatCharsOpt": "C"}

# Option behaviour for the rows new in 2026c, each by analogy with a 2024b row:
NEW_ROW_OPTIONS: dict[str, dict[str, str]] = {
    # Diagnosis code sequences: like Admitting Diagnoses Code Sequence (0008,1084), cleaned as descriptors.
    "(0008,1301)": _DESCRIPTOR,
    "(0008,1302)": _DESCRIPTOR,
    "(0008,1303)": _DESCRIPTOR,
    "(0008,1304)": _DESCRIPTOR,
    # Names to use and pronouns (0010,0011)-(0010,0016) identify the person: no option keeps them.
    # Gender identity and sex parameters for clinical use: like Patient's Sex (0010,0040), kept by Retain
    # Patient Characteristics; their free-text comments cleaned like Allergies (0010,2110).
    "(0010,0041)": _CHARACTERISTIC,
    "(0010,0042)": _CHARACTERISTIC_TEXT,
    "(0010,0043)": _CHARACTERISTIC,
    "(0010,0044)": _CHARACTERISTIC,
    "(0010,0045)": _CHARACTERISTIC_TEXT,
    "(0010,0046)": _CHARACTERISTIC,
    # (0010,0047) Sex Parameters for Clinical Use Category Reference is a URI to a patient document: removed.
    # Ethnic groups: like Ethnic Group (0010,2160).
    "(0010,2161)": _CHARACTERISTIC,
    "(0010,2162)": _CHARACTERISTIC,
    # Device identifiers: like Device Serial Number (0018,1000), kept by Retain Device Identity.
    "(0018,1010)": {"rtnDevIdOpt": "K"},
    "(0018,1011)": {"rtnDevIdOpt": "K"},
    # Waveform labels and descriptions: free-text descriptors.
    "(003A,0020)": _DESCRIPTOR,
    "(003A,0203)": _DESCRIPTOR,
    "(003A,020C)": _DESCRIPTOR,
    "(0040,0556)": _DESCRIPTOR,
    "(0040,B03B)": _DESCRIPTOR,
    "(0040,B03F)": _DESCRIPTOR,
    # Date-times: like every other DT row (Full Dates keeps, Modified Dates shifts).
    "(0040,A034)": _DATES,
    "(0040,A035)": _DATES,
    "(0040,B034)": _DATES,
    "(0040,B036)": _DATES,
    # Waveform annotations and unformatted text objects are graphics: like Graphic Annotation Sequence.
    "(0040,B020)": _GRAPHICS,
    "(0070,0006)": _GRAPHICS,
    # (0040,E012) Display URI may embed identifiers in a query string: removed under every option.
    # A UID: like every other U row, kept by Retain UIDs.
    "(300A,0054)": {"rtnUIDsOpt": "K"},
    # Masked repeating groups: like the 2024b rows (50XX,XXXX), (60XX,3000), (60XX,4000).
    "(5000,0000)": _GRAPHICS,
    "(6000,3000)": _GRAPHICS,
    "(6000,4000)": _GRAPHICS,
}
# The new rows deliberately left without any option (removed whatever is asked).
NEW_ROWS_WITHOUT_OPTION = frozenset(
    {
        "(0010,0011)",
        "(0010,0012)",
        "(0010,0013)",
        "(0010,0014)",
        "(0010,0015)",
        "(0010,0016)",
        "(0010,0047)",
        "(0040,E012)",
    }
)


def _tag(text: str) -> int:
    group, element = text.strip("()").split(",")
    return int(group + element, 16)


def _options(row: dict[str, Any]) -> dict[str, str]:
    return {column: row[column] for column in OPTION_COLUMNS if row.get(column)}


def build(standard_dir: Path) -> str:
    """Return the source text of table.py."""
    basic: list[dict[str, Any]] = json.loads((standard_dir / BASIC_FILE).read_text())
    options: list[dict[str, Any]] = json.loads((standard_dir / OPTION_FILE).read_text())
    by_tag = {row["tag"]: row for row in options}

    attributes: dict[int, tuple[str, str, dict[str, str]]] = {}
    repeating: list[tuple[int, int, str, str, dict[str, str]]] = []
    new_rows = []
    for row in basic:
        old = by_tag.get(row["tag"])
        if old is not None:
            row_options = _options(old)
        else:
            new_rows.append(row["tag"])
            if row["tag"] not in NEW_ROW_OPTIONS and row["tag"] not in NEW_ROWS_WITHOUT_OPTION:
                raise SystemExit(f"row {row['tag']} is new in {BASIC_EDITION}: choose its option behaviour")
            row_options = dict(NEW_ROW_OPTIONS.get(row["tag"], {}))
        if row.get("mask"):
            repeating.append(
                (_tag(row["tag"]), _tag(row["mask"]), row["name"], row["basicProfile"], row_options)
            )
        else:
            attributes[_tag(row["tag"])] = (row["name"], row["basicProfile"], row_options)
    # Rows of the option edition that the basic edition no longer lists (retired attributes): kept.
    basic_tags = {row["tag"] for row in basic}
    private: tuple[str, dict[str, str]] | None = None
    for row in options:
        if row["tag"].startswith("(GGGG"):
            private = (row["basicProfile"], _options(row))
        elif row["tag"] not in basic_tags and "XX" not in row["tag"]:
            attributes[_tag(row["tag"])] = (row["name"], row["basicProfile"], _options(row))
    if private is None:
        raise SystemExit("the private attributes row is missing")
    unhandled = set(NEW_ROW_OPTIONS) | NEW_ROWS_WITHOUT_OPTION
    if unhandled != set(new_rows):
        raise SystemExit(f"NEW_ROW_OPTIONS is stale: {sorted(unhandled ^ set(new_rows))}")

    lines = [
        f'"""PS3.15 Table E.1-1: Basic Profile {BASIC_EDITION}, option columns {OPTION_EDITION}.',
        "",
        "generated by `python -m imaging.deid.generate_table`, do not edit.",
        '"""',
        "",
        f"EDITION = {BASIC_EDITION!r}",
        f"OPTION_EDITION = {OPTION_EDITION!r}",
        "",
        "# tag: (name, Basic Profile action, {option column: action})",
        "ATTRIBUTES: dict[int, tuple[str, str, dict[str, str]]] = {",
    ]
    for tag in sorted(attributes):
        name, action, opts = attributes[tag]
        lines.append(f"    0x{tag:08X}: ({name!r}, {action!r}, {opts!r}),")
    lines.append("}")
    lines.append("")
    lines.append("# repeating groups: (tag, mask, name, Basic Profile action, {option column: action})")
    lines.append("REPEATING: tuple[tuple[int, int, str, str, dict[str, str]], ...] = (")
    for tag, mask, name, action, opts in sorted(repeating):
        lines.append(f"    (0x{tag:08X}, 0x{mask:08X}, {name!r}, {action!r}, {opts!r}),")
    lines.append(")")
    lines.append("")
    lines.append(
        "# private attributes (gggg,eeee) where gggg is odd: (Basic Profile action, {option: action})"
    )
    lines.append(f"PRIVATE: tuple[str, dict[str, str]] = {pprint.pformat(private, width=100)}")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--standard-dir", type=Path, default=Path("../shared/standard"))
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    args.output.write_text(build(args.standard_dir))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
