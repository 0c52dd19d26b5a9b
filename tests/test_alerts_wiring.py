"""The agent's alerts as an admin sees them: a paused destination runs the alert command
once, its recovery once more."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from agent.config import from_dict
from agent.daemon import Agent
from agent.errors import DestinationDown
from tests.conftest import Site
from tests.support.faults import FlakyTransport
from tests.support.mixmonitor import write_recording


def test_paused_destination_alerts_once_and_recovers_once(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    record = site.root / "alerts.jsonl"
    script = site.root / "alert.sh"
    script.write_text(
        '#!/bin/sh\nprintf \'{"alert": "%s", "reason": "%s"}\\n\' '
        f'"$RECSYNC_ALERT" "$RECSYNC_ALERT_REASON" >> {record}\n'
    )
    script.chmod(0o755)
    write_recording(site.spool_file("2024/03/15/out-1800-1001-20240315-101502-1710497702.42.wav"))
    config = site.config(spool={"backfill_days": 100_000}, alerts={"command": [str(script)]})
    agent = make_agent(config, transport=FlakyTransport(site.dest, [DestinationDown("disk full")]))
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.health.check(now)
    agent.health.check(now + 15)  # still paused: no second alert
    resume = agent.destination.paused_until
    assert resume is not None
    agent.run_once(resume)  # the probe answers: resumed and shipped
    assert agent.destination.paused_until is None
    agent.health.check(resume + 1)
    alerts = [json.loads(line) for line in record.read_text().splitlines()]
    assert [a["alert"] for a in alerts] == ["problem", "recovered"]
    assert "disk full" in alerts[0]["reason"]


def test_with_several_destinations_an_alert_names_its_own(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    record = site.root / "alerts.jsonl"
    script = site.root / "alert.sh"
    script.write_text(
        '#!/bin/sh\nprintf \'{"destination": "%s", "reason": "%s"}\\n\' '
        f'"$RECSYNC_ALERT_DESTINATION" "$RECSYNC_ALERT_REASON" >> {record}\n'
    )
    script.chmod(0o755)
    write_recording(site.spool_file("2024/03/15/out-1800-1001-20240315-101502-1710497702.42.wav"))
    data = site.data(spool={"backfill_days": 100_000}, alerts={"command": [str(script)]})
    data["destination"]["archive"] = {"type": "local", "root": str(site.root / "archive")}
    (site.root / "archive").mkdir()
    config = from_dict(data, base=site.root).for_destination("archive")
    down = FlakyTransport(site.root / "archive", [DestinationDown("disk full")])
    agent = make_agent(config, transport=down)
    now = time.time()
    agent.start(now)
    agent.run_once(now)
    agent.health.check(now)
    [alert] = [json.loads(line) for line in record.read_text().splitlines()]
    assert alert["destination"] == "archive"
    assert alert["reason"].startswith("destination archive: destination paused")
