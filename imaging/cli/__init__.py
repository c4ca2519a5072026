"""`imaging` command line (an edge): the core commands and every feature's sub-app.

* `server`   serve, worker
* `data`     import, reindex, fsck, stats
* `tokens`   API tokens
* `consent`, `audit`  the consent registry and the audit trail (ground packages' command lines)
* `viewer`   the built-in OHIF viewer
* `schema`   the index schema migration (developers)
* `deid`     de-identify files (imaging.deid.cli)
The feature sub-apps (project, cohort, share, triage) come from the composition root, imaging.app. Shared
options and helpers are in imaging.console, where the features' own command lines find them too.
"""

from __future__ import annotations

import typer

from imaging import app as composition
from imaging.cli import audit, consent, data, schema, server, tokens, viewer
from imaging.deid.cli import deid

app = typer.Typer(help="Medical imaging sharing archive with AI triage.", no_args_is_help=True)
for module in (server, data):
    app.registered_commands.extend(module.app.registered_commands)
app.add_typer(tokens.app, name="token", help="API tokens (stored hashed).")
app.add_typer(consent.app, name="consent", help="Consent registry (opt-outs of secondary use and sharing).")
app.add_typer(audit.app, name="audit", help="Audit trail (DICOM PS3.15 A.5 event codes).")
app.add_typer(viewer.app, name="viewer", help="The built-in OHIF viewer, served at /viewer.")
app.add_typer(schema.app, name="schema", help="Index schema migrations (deployment, developers).")
app.command("deid")(deid)
for name, sub_app, help_text in composition.commands():
    app.add_typer(sub_app, name=name, help=help_text)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
