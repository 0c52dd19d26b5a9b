"""The CRM is told about each recording through the durable outbox: one signed POST per
recording, a failing CRM never holds up shipping, a late CDR row makes one update."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from agent.cdr.sqlite import SqliteCdr
from agent.daemon import Agent
from agent.errors import ConfigError
from agent.publish.webhook import SIGNATURE_HEADER, Webhook, verify
from tests.conftest import Site
from tests.support.cdr import SqliteCdrFile, cdr_row
from tests.support.crm import CrmServer
from tests.support.mixmonitor import write_recording

SECRET = b"crm-shared-secret"
DAY = "2024/03/15"


def record(site: Site, count: int) -> list[str]:
    rels = [
        f"{DAY}/out-18005551234-1001-20240315-1015{n:02d}-1710497702.{n}.wav" for n in range(count)
    ]
    for n, rel in enumerate(rels):
        write_recording(site.spool_file(rel), seed=n)
    return rels


def agent_with_hook(
    site: Site, crm: CrmServer, make_agent: Callable[..., Agent], cdr: SqliteCdrFile | None = None
) -> Agent:
    overrides: dict[str, dict[str, object]] = {"spool": {"backfill_days": 100_000}}
    if cdr is not None:
        overrides["cdr"] = {"type": "sqlite", "path": str(cdr.path), "wait_seconds": 1}
    return make_agent(
        site.config(**overrides),  # type: ignore[arg-type]
        cdr=SqliteCdr(path=cdr.path, table="cdr") if cdr else None,
        webhook=Webhook(url=f"{crm.base}/hooks", secret=SECRET, timeout=2),
    )


def events(crm: CrmServer) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in crm.received]


def test_one_signed_post_per_recording(
    site: Site, crm: CrmServer, make_agent: Callable[..., Agent]
) -> None:
    rels = record(site, 3)
    agent_with_hook(site, crm, make_agent).run_until_idle()
    got = crm.wait_for(3)
    assert len(got) == 3
    for request in got:
        assert verify(SECRET, request.body, request.headers[SIGNATURE_HEADER.lower()])
    sent = events(crm)
    assert {e["event"] for e in sent} == {"recording.shipped"}
    assert sorted(e["recording"]["original"] for e in sent) == sorted(rels)  # type: ignore[index]
    manifest = json.loads((site.dest / DAY / "manifest.json").read_text())
    assert sorted(e["recording"]["file"] for e in sent) == sorted(  # type: ignore[index]
        m["file"] for m in manifest["recordings"]
    )
    # the link to the call's row on its day page, as the manifest has it
    links = {m["uniqueid"]: m["link"] for m in manifest["recordings"]}
    for e in sent:
        recording: dict[str, str] = e["recording"]  # type: ignore[assignment]
        assert recording["link"] == links[recording["uniqueid"]]
        assert recording["link"] == f"{DAY}/index.html#{recording['uniqueid']}"


def test_failing_crm_gets_everything_later_and_never_blocks_shipping(
    site: Site, crm: CrmServer, make_agent: Callable[..., Agent]
) -> None:
    rels = record(site, 3)
    crm.answer(500, times=4)
    agent = agent_with_hook(site, crm, make_agent)
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    assert {agent.store.by_stem(r[:-4]).state for r in rels} == {"done"}  # shipped anyway
    later = now
    for _ in range(48):  # an hour later each time: past any backoff
        later += 3600
        agent.outbox.deliver(later)
        if len(crm.received) == 4 + 3:  # four refusals, then each recording once
            break
    assert len(crm.received) == 7
    delivered = {json.loads(r.body)["id"] for r in crm.received}
    assert len(delivered) == 3  # retries reuse the id: the CRM can dedupe
    assert agent.outbox.deliver(later + 3600) == 0  # nothing is sent twice once accepted


def test_late_cdr_row_sends_one_update(
    site: Site, crm: CrmServer, make_agent: Callable[..., Agent]
) -> None:
    cdr = SqliteCdrFile(site.root / "master.db")
    record(site, 1)
    agent = agent_with_hook(site, crm, make_agent, cdr)
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.run_once(now + 2)  # the CDR wait is over: shipped without it
    crm.wait_for(1)
    cdr.insert(cdr_row("1710497702.0", cnam="Late Caller"))
    assert agent.fill_late_cdr(now + 60) == 1
    agent.outbox.deliver(now + 60)
    sent = events(crm)
    assert [e["event"] for e in sent] == ["recording.shipped", "recording.updated"]
    assert sent[1]["recording"]["caller_name"] == "Late Caller"  # type: ignore[index]
    assert agent.fill_late_cdr(now + 120) == 0
    agent.outbox.deliver(now + 120)
    assert len(crm.received) == 2


def test_an_event_whose_link_cannot_be_signed_waits_for_it(
    site: Site, crm: CrmServer, make_agent: Callable[..., Agent]
) -> None:
    """A promised download_url is never left out: the event is tried again later."""
    record(site, 1)
    agent = agent_with_hook(site, crm, make_agent)
    assert agent.outbox is not None
    unreadable = [ConfigError("cannot read the secret file /etc/recsync/s3-secret")]

    def link(remote: str) -> str:
        if unreadable:
            raise unreadable.pop()
        return f"https://s3.example.com/{remote}?X-Amz-Signature=0"

    agent.outbox.download_url = link
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    assert crm.received == []
    assert agent.outbox.deliver(now + 3600) == 1
    [sent] = events(crm)
    assert sent["download_url"] == link(sent["recording"]["file"])  # type: ignore[index]
