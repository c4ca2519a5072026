"""REST resources of the sharing feature, one module each: peers, policies, the outbox (manual shares,
status, retry) and share links."""

from imaging.sharing.api import links, outbox, peers, policies

routers = (peers.router, policies.router, outbox.router, links.router)
