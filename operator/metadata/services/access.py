"""Who the caller is and what they may see: admins everything, members their projects."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Forbidden
from ..models import Project, Role


@dataclass(frozen=True)
class Identity:
    """An authenticated user (from the auth proxy or an API token) or the operator's service."""

    name: str
    email: str | None
    groups: tuple[str, ...]
    role: Role

    @property
    def is_admin(self) -> bool:
        """Admins see and change every project."""
        return self.role is Role.ADMIN

    def can_use(self, project: Project) -> bool:
        """Whether this identity may read and change ``project``."""
        return (
            self.is_admin
            or self.name in project.members
            or any(g in project.groups for g in self.groups)
        )

    def require_admin(self, action: str) -> None:
        """Raise :class:`Forbidden` unless this identity is an admin."""
        if not self.is_admin:
            raise Forbidden(f"{action} needs the admin role")
