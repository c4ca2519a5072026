"""Who is asking, and what each role may do where.

Roles (API tokens, browser sessions and identity-provider claims all map onto these):
* `admin`: everything, every partition;
* `clinician`: read and store the clinical partition, the worklist, publication, sharing studies;
* `ingest`: store only (clinical partition and project STOW roots), no read;
* `researcher`: read their own projects' partitions and work with their cohorts, nothing else — never the
  clinical partition, whatever else the credential says.

A permission names an operation; `authorize` checks the role has it and, for partition-scoped permissions,
that the partition is one the principal may touch. Every HTTP route declares the permission it needs
(imaging.access.http.Require), and one table here says which roles hold which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from imaging.errors import NotAuthorized
from imaging.partition import CLINICAL


class Role(StrEnum):
    INGEST = "ingest"
    CLINICIAN = "clinician"
    RESEARCHER = "researcher"
    ADMIN = "admin"


ROLES = tuple(r.value for r in Role)
# When an identity carries several roles, the first of these it holds is the one it acts in (one role per
# request keeps the partition rules simple: a clinician-researcher logs in as a clinician).
ROLE_PRECEDENCE = (Role.ADMIN, Role.CLINICIAN, Role.RESEARCHER, Role.INGEST)


class Permission(StrEnum):
    READ = "read"  # DICOMweb search and retrieve in a partition
    STORE = "store"  # STOW-RS into a partition
    WORKLIST = "worklist"  # triage worklist and findings (clinical)
    PROJECTS = "projects"  # see projects (a researcher sees their own)
    MANAGE_PROJECTS = "projects.manage"  # create projects
    PUBLISH = "publish"  # de-identify clinical studies into a project
    COHORTS = "cohorts"  # save, list and export a project's cohorts
    SHARE = "share"  # queue a clinical study for peers; see the outbox
    LINK = "link"  # create and revoke share links in a partition one may read
    LIST_LINKS = "link.list"  # every share link
    MANAGE_SHARING = "sharing.manage"  # peers, policies, retries
    CONSENT = "consent"  # the consent registry
    AUDIT = "audit"  # the audit trail
    DELETE = "delete"  # delete studies, series and instances (DICOMweb DELETE, REST, CLI)
    RETENTION = "retention"  # retention rules, their previews and runs; pending deletions
    MANAGE_TOKENS = "tokens.manage"  # create, list and revoke API tokens
    FEDERATED_QUERY = "federation.query"  # ask this site and its peers how many studies match (counts)
    FEDERATION_REQUEST = "federation.request"  # send and follow access requests for a project
    MANAGE_FEDERATION = "federation.manage"  # peer sites, discovery switches, approve/reject requests
    OPERATIONS = "operations"  # storage and index statistics, the health of every component (operator pages)


# Permissions checked against a partition: the principal must be allowed in that partition too.
PARTITION_SCOPED = frozenset(
    {Permission.READ, Permission.STORE, Permission.COHORTS, Permission.LINK, Permission.FEDERATION_REQUEST}
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.CLINICIAN: frozenset(
        {
            Permission.READ,
            Permission.STORE,
            Permission.WORKLIST,
            Permission.PROJECTS,
            Permission.PUBLISH,
            Permission.SHARE,
            Permission.LINK,
            Permission.LIST_LINKS,
        }
    ),
    Role.INGEST: frozenset({Permission.STORE}),
    Role.RESEARCHER: frozenset(
        {
            Permission.READ,
            Permission.PROJECTS,
            Permission.COHORTS,
            Permission.LINK,
            Permission.FEDERATED_QUERY,
            Permission.FEDERATION_REQUEST,
        }
    ),
}


class Via(StrEnum):
    """How a principal authenticated (the audit trail's prefix for its user)."""

    TOKEN = "token"  # an API token from the index
    OIDC = "oidc"  # a JWT access token from the hospital's OpenID Provider
    DEV = "dev"  # development mode: no credential at all
    SHARE = "share-link"  # a share link (read-only, its studies only)


@dataclass(frozen=True)
class Principal:
    role: str
    projects: frozenset[str] = field(default_factory=frozenset)  # a researcher's projects
    token_pk: int | None = None  # the API token's key (Via.TOKEN)
    via: Via = Via.TOKEN
    subject: str = ""  # the identity provider's `sub` (Via.OIDC), or a share link's key

    @property
    def project(self) -> str:
        """The principal's only project ('' for none; the first in name order for several)."""
        return min(self.projects, default="")

    @property
    def user(self) -> str:
        """How the audit trail names this principal (never a secret)."""
        if self.via is Via.TOKEN and self.token_pk is not None:
            return f"token:{self.token_pk}:{self.role}"
        if self.via in (Via.OIDC, Via.SHARE):
            return f"{self.via.value}:{self.subject}"
        return f"dev:{self.role}"


DEV = Principal(Role.ADMIN, via=Via.DEV)


def may(principal: Principal, permission: Permission, partition: str | None = None) -> bool:
    try:
        authorize(principal, permission, partition)
    except NotAuthorized:
        return False
    return True


def authorize(principal: Principal, permission: Permission, partition: str | None = None) -> None:
    """NotAuthorized unless the principal's role holds `permission` (in `partition`, when scoped)."""
    try:
        role = Role(principal.role)
    except ValueError:
        raise NotAuthorized("unknown role") from None
    if permission not in ROLE_PERMISSIONS[role]:
        raise NotAuthorized(f"role {role} may not {permission}")
    if permission in PARTITION_SCOPED and partition is not None:
        if role is Role.RESEARCHER and (partition == CLINICAL or partition not in principal.projects):
            raise NotAuthorized("a researcher opens only their own research projects")
        if role is Role.CLINICIAN and partition != CLINICAL:
            raise NotAuthorized("research projects are open to their researchers only")
