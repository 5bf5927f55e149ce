"""Where to connect: the owner's URL (migrations) and the application role's URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from llm_service.settings import Settings


@dataclass(frozen=True)
class DatabaseUrls:
    """The two connections the service uses."""

    owner: str
    app: str


def app_url_from_owner(owner_url: str, role: str, password: str | None) -> str:
    """The owner's URL with the user (and password) replaced by the application role's."""
    parts = urlsplit(owner_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    credentials = quote(role, safe="")
    if password:
        credentials += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


def resolve_urls(settings: Settings, owner_url: str) -> DatabaseUrls:
    """Both URLs, given the owner's (from DATABASE_URL or the embedded server)."""
    app = settings.app_database_url or app_url_from_owner(
        owner_url, settings.app_db_role, settings.app_db_password
    )
    return DatabaseUrls(owner=owner_url, app=app)


def sqlalchemy_url(url: str) -> str:
    """The same URL for SQLAlchemy's psycopg driver (alembic)."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg"
    return f"{scheme}://{rest}"
