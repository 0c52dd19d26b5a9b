"""status.json at the destination root: the heartbeat admins read from the webserver, and
the mark that one agent owns one root."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from agent.daemon import Agent
from agent.errors import AgentError
from tests.conftest import Site
from tests.support.contracts import STATUS_FIELDS
from tests.support.mixmonitor import write_recording

NAME = "2024/03/15/out-18005551234-1001-20240315-101502-1710497702.42.wav"


def test_status_json_says_how_the_sync_goes(site: Site, make_agent: Callable[..., Agent]) -> None:
    write_recording(site.spool_file(NAME))
    make_agent(site.config(spool={"backfill_days": 100_000})).run_until_idle()
    status = json.loads((site.dest / "status.json").read_text())
    assert set(status) == STATUS_FIELDS
    assert status["host"] == socket.gethostname()
    assert status["counts"]["done"] == 1 and status["backlog"] == 0
    assert status["destination"] == {"state": "ok", "reason": None}


def test_a_root_owned_by_another_agent_is_refused(
    site: Site, make_agent: Callable[..., Agent]
) -> None:
    write_recording(site.spool_file(NAME))
    (site.dest / "status.json").write_text(json.dumps({"host": "other-pbx"}))
    agent = make_agent(site.config(spool={"backfill_days": 100_000}))
    with pytest.raises(AgentError, match="belongs to the agent on 'other-pbx'"):
        agent.run_until_idle()
    assert site.shipped() == []
    assert json.loads((site.dest / "status.json").read_text()) == {"host": "other-pbx"}
