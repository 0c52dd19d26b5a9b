"""What the agent's outgoing HTTP (the CRM webhook, alert webhooks) shares.

urllib.request is imported when an opener is made, not with this module: reading the
config (alert webhook URLs) must not load it, nor the ssl and email modules behind it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import urllib.request
    from email.message import Message

_PATH_IN_LOGS = 200  # characters of a URL's path kept in log lines


def where(url: str) -> str:
    """A URL fit for logs and reprs: no credentials, no query (tokens live there)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(an unparseable URL)"
    path = " ".join(parts.path.split())[:_PATH_IN_LOGS]
    if not parts.hostname:
        return path or "(no URL)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{path}"


def no_redirect_opener() -> urllib.request.OpenerDirector:
    """An opener on which a 3xx becomes an HTTPError: urllib would turn a redirected POST
    into a GET without its body, and a moved endpoint is for the admin to see, not to
    follow."""
    import urllib.request

    return urllib.request.build_opener(_no_redirect()())


@cache
def _no_redirect() -> type[urllib.request.HTTPRedirectHandler]:
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(
            self,
            req: urllib.request.Request,
            fp: object,
            code: int,
            msg: str,
            headers: Message,
            newurl: str,
        ) -> None:
            return None

    return NoRedirect
