"""Who is asking, and what each role may do where.

Roles (API tokens and, later, identity-provider claims map onto these):
* `admin`: everything, every partition;
* `clinician`: read and store the clinical partition, the worklist, publication, sharing studies;
* `ingest`: store only (clinical partition and project STOW roots), no read;
* `researcher`: read their own project's partition and work with its cohorts, nothing else.

A permission names an operation; `authorize` checks the role has it and, for partition-scoped permissions,
that the partition is one the principal may touch. Every HTTP route declares the permission it needs
(imaging.access.http.Require), and one table here says which roles hold which.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from imaging.errors import NotAuthorized
from imaging.partition import CLINICAL


class Role(StrEnum):
    INGEST = "ingest"
    CLINICIAN = "clinician"
    RESEARCHER = "researcher"
    ADMIN = "admin"


ROLES = tuple(r.value for r in Role)


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
    FEDERATED_QUERY = "federation.query"  # ask this site and its peers how many studies match (counts)
    FEDERATION_REQUEST = "federation.request"  # send and follow access requests for a project
    MANAGE_FEDERATION = "federation.manage"  # peer sites, discovery switches, approve/reject requests


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


@dataclass(frozen=True)
class Principal:
    role: str
    project: str = ""  # a researcher's project
    token_pk: int | None = None  # None: development mode

    @property
    def user(self) -> str:
        """How the audit trail names this principal (never a secret)."""
        return f"token:{self.token_pk}:{self.role}" if self.token_pk is not None else f"dev:{self.role}"


DEV = Principal(Role.ADMIN)


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
        if role is Role.RESEARCHER and (partition == CLINICAL or partition != principal.project):
            raise NotAuthorized("this token opens only its own research project")
        if role is Role.CLINICIAN and partition != CLINICAL:
            raise NotAuthorized("research projects are open to their researchers only")
