"""The web console: server-rendered pages over the Pager facade, behind a login."""

from pager_actors.console.app import create_console
from pager_actors.console.passwords import hash_password

__all__ = ["create_console", "hash_password"]
