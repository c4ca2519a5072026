"""The web interface at /ui: server-rendered pages (Jinja2) with htmx for the parts that update in place —
no build step, nothing fetched at run time (htmx ships in `static/`, see static/VENDORED.md).

Pages for the three kinds of users, each route declaring its permission like every other route
(`Require`), and each calling the same domain functions as the REST API and the CLI, so validation and
audit are the same:

* radiologist — `worklist`: the triage worklist, live, opening studies in the built-in OHIF viewer;
* researcher — `research`: projects, the cohort builder with its count as one types and a thumbnail
  strip, saving, exports with a progress bar, manifests, the audit trail of one's own exports;
  `discovery`: the cohort counted at every peer site, access requests sent and their status;
* site operator — `operations` (readiness and health of each component, statistics with SVG charts),
  `sharing` (peers, policies, the outbox and its retries), `federation` (this site's id and key, peer
  sites and their switches, access requests received: approve, reject, delivery), `consent`, `admin`
  (audit search, API tokens).

Signing in is the archive's (`/login`: OpenID Connect where configured, else an API token in a form) and
the pages use its HttpOnly session cookie; changes come only from this origin (imaging.access.http).
`render` holds the templates' environment and the answers' security headers, `errors` the pages' form of
the application's error answers, `charts` the SVG charts, `health` the component checks.
"""

from fastapi import APIRouter

from dicomweb.ui import admin, consent, discovery, federation, home, operations, research, sharing, worklist


def router() -> APIRouter:
    r = APIRouter()
    for module in (home, worklist, research, discovery, operations, sharing, federation, consent, admin):
        r.include_router(module.router)
    return r
