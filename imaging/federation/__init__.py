"""Federated cohort discovery and access requests (a feature, above sharing; nothing imports it).

A researcher asks every peer site how many studies match a cohort definition; each site answers with
counts only, small cells and differencing suppressed; then an access request (a data permit) goes to a
holding site, whose administrator approves or rejects it; on approval the cohort is shared de-identified
through the sharing outbox with the requesting project's key.

* `models`      tables: federation_peer, federation_token_use, federation_query, federation_incoming,
                federation_request_study, federation_outgoing
* `criteria`    the cohort definition and `matching_studies`, the one function every count uses
* `disclosure`  what a count may say (small cells, differencing, rounding), audited and logged
* `keys`        this site's Ed25519 key; the key check that ties a request to a project key
* `signing`     peer authentication: a JWT signed per call (audience, expiry, jti replay, request binding)
* `peers`       the peer site registry (site id, public key, discovery / requests / ask switches)
* `client`      signed calls to peers, the fan-out of a count
* `permits`     access requests received: store, approve (queue the delivery), reject, status
* `requesting`  access requests sent: send, follow
* `api`         REST: `/api/federation/...` (this site's users), `/federation/v1/...` (peer sites)
* `cli`         `imaging federation ...`
Settings: `federation_site_id` (empty: off), `federation_min_count`, `federation_count_rounding`,
`federation_difference_hours`, `federation_token_seconds`, `federation_token_max_seconds`,
`federation_clock_skew_seconds`, `federation_timeout`.
"""
