"""What the agent's outgoing HTTP (the CRM webhook, alert webhooks) shares."""

from __future__ import annotations

import urllib.request
from email.message import Message
from urllib.parse import urlsplit

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


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx becomes an HTTPError: urllib would turn a redirected POST into a GET without
    its body, and a moved endpoint is for the admin to see, not to follow."""

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
