"""Webhook delivery: the CRM is told of every shipped recording, at least once."""

from __future__ import annotations

import logging
from collections.abc import Callable

from agent.errors import ConfigError, DestinationDown, PermanentError, TransientError
from agent.log import kv
from agent.publish.manifest import entry
from agent.publish.webhook import Webhook, body, retry_delay
from agent.store.state import Store

log = logging.getLogger(__name__)


class Outbox:
    """Sends what the CRM has not been told yet; a CRM that is down waits for its next
    attempt and never holds up shipping."""

    def __init__(
        self,
        *,
        store: Store,
        webhook: Webhook,
        download_url: Callable[[str], str] | None = None,
        site: str | None = None,
    ) -> None:
        self.store = store
        self.site = site  # told to the CRM with each recording when the root is shared
        self.webhook = webhook
        self.download_url = download_url  # remote path -> a presigned link, signed per send

    def deliver(self, now: float) -> int:
        """Returns how many were delivered."""
        outbox, delivered = self.store.webhooks, 0
        for wid, rid, event, attempts in self.store.webhooks.due(now):
            row = self.store.get(rid)
            if row is None or row.remote_path is None:
                outbox.failed(wid, rid, error="recording no longer shipped", retry_at=None, now=now)
                continue
            key = f"{rid}.{wid}"  # stable across retries: the CRM dedupes on it
            try:
                payload = body(
                    event, key, entry(row, site=self.site), download_url=self._link(row.remote_path)
                )
                self.webhook.send(payload, event=event, key=key)
            except TransientError as exc:
                retry_at = now + retry_delay(attempts + 1)
                outbox.failed(wid, rid, error=str(exc), retry_at=retry_at, now=now)
                log.warning(kv("webhook-failed", id=rid, webhook_event=event, error=str(exc)))
                break  # the CRM is down: the rest wait for their turn
            except PermanentError as exc:
                outbox.failed(wid, rid, error=str(exc), retry_at=None, now=now)
                log.error(kv("webhook-refused", id=rid, webhook_event=event, error=str(exc)))
                continue
            outbox.sent(wid, rid, event=event, now=now)
            delivered += 1
        return delivered

    def _link(self, remote: str) -> str | None:
        if self.download_url is None:
            return None
        try:
            return self.download_url(remote)
        except (ConfigError, DestinationDown) as exc:  # the S3 secret unreadable just now
            raise TransientError(f"no download link for {remote}: {exc}") from exc
