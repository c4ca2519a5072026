"""Access control shared by every edge: principals, roles and permissions (`principal`), API tokens
(`tokens`), and the HTTP dependencies every router declares its permission with (`http`)."""

from imaging.access.principal import DEV, ROLES, Permission, Principal, Role, authorize, may

__all__ = ["DEV", "ROLES", "Permission", "Principal", "Role", "authorize", "may"]
