"""A throttling server: the agent (`recsync run --once`) ships through a proxy in front of the
real Ceph RGW that answers some requests 503 SlowDown with Retry-After: 1
(tests/support/throttle.py). Every recording arrives once, sha256-equal, and no retry
came sooner than the server asked (the proxy's own times, not the test's sleeps)."""

from __future__ import annotations

import itertools
from collections import defaultdict

from tests.conftest import Site
from tests.support.s3 import RadosGateway
from tests.support.throttle import RETRY_AFTER, Seen, ThrottlingProxy, every_other_put, first
from tests.test_s3 import agent_config, call_names, record, run_agent, shipped_entries


def ship_through(site: Site, rgw: RadosGateway, bucket: str, proxy: ThrottlingProxy) -> None:
    tables = agent_config(site, rgw, bucket)
    tables["destination"] |= {"endpoint": proxy.endpoint}
    site.write_config(**tables)
    done = run_agent(site, "run", "--once")
    assert done.returncode == 0, done.stderr


def delivered_once(rgw: RadosGateway, bucket: str, names: list[str]) -> None:
    client = rgw.client(bucket)
    try:
        entries = shipped_entries(client)  # each sha256-checked against its object
        keys = [k for k, _ in client.list_keys("pbx1/2024/03/15/") if k.endswith(".wav")]
    finally:
        client.close()
    assert sorted(e["original"] for e in entries) == [f"2024/03/15/{n}" for n in names]
    assert len(keys) == len(names)


def test_each_first_put_slowed_down_still_ships_everything_once(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    """Each recording's first PUT, and every other PUT of status.json (its claim with
    If-None-Match, retried through RetryingTransport, and its rewrites) get a 503."""
    names = call_names(18, 3)
    record(site, names)
    upstream = rgw.endpoint.removeprefix("http://")
    with ThrottlingProxy(upstream, every_other_put(".wav", "status.json")) as proxy:
        ship_through(site, rgw, s3_bucket, proxy)
    delivered_once(rgw, s3_bucket, names)
    puts: dict[str, list[Seen]] = defaultdict(list)
    for seen in proxy.requests():
        if seen.method == "PUT" and seen.path.endswith((".wav", "status.json")):
            puts[seen.path].append(seen)
    status_json = puts.pop(f"/{s3_bucket}/pbx1/status.json")
    claim = [t.headers.get("if-none-match") for t in status_json[:3]]
    assert claim == ["*", "*", None], claim  # the claim, its retry, then a rewrite
    assert len(puts) == len(names)
    for path, tries in [*puts.items(), ("status.json", status_json)]:
        statuses = [t.status for t in tries]
        assert statuses[:2] == [503, 200] and statuses == [503, 200] * (len(tries) // 2), path
        for refused, retry in itertools.pairwise(tries):
            if refused.status == 503:
                assert retry.arrived - refused.answered >= RETRY_AFTER, (path, refused, retry)


def test_the_first_requests_slowed_down_are_waited_out(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    """The agent's very first requests (its probe) are refused three times in a row."""
    names = call_names(19, 2)
    record(site, names)
    upstream = rgw.endpoint.removeprefix("http://")
    with ThrottlingProxy(upstream, first(3)) as proxy:
        ship_through(site, rgw, s3_bucket, proxy)
    delivered_once(rgw, s3_bucket, names)
    seen = proxy.requests()
    assert [s.status for s in seen[:4]] == [503, 503, 503, 200], seen[:4]
    for refused, retry in itertools.pairwise(seen[:4]):
        assert retry.method == refused.method == "PUT"  # the probe, each try a new name
        assert retry.arrived - refused.answered >= RETRY_AFTER, (refused, retry)
    assert all(s.status < 500 for s in seen[3:])
