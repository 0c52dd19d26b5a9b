"""destination.layout = "sites" on object storage (the test RGW): the site folder is under
the prefix, the root page beside the sites under the prefix, and a presigned link signs
the key the object has."""

from __future__ import annotations

import json
import urllib.request

from tests.conftest import Site
from tests.support.s3 import RadosGateway
from tests.test_s3 import agent_config, call_names, record, run_agent


def test_a_site_lives_under_the_prefix_beside_the_root_page(
    site: Site, rgw: RadosGateway, s3_bucket: str
) -> None:
    names = call_names(15, 2)
    record(site, names)
    tables = agent_config(site, rgw, s3_bucket)
    tables["destination"]["layout"] = "sites"
    site.write_config(**tables, agent={"site": "north"}, index={"enabled": True})
    client = rgw.client(s3_bucket)
    try:
        south = {"site": "south", "host": "pbx-s", "generated_at": "2024-03-15T10:00:00+00:00"}
        client.request("PUT", "pbx1/south/status.json", body=json.dumps(south).encode())
        done = run_agent(site, "run", "--once")
        assert done.returncode == 0, done.stderr
        keys = sorted(key for key, _ in client.list_keys(""))
        recordings = [k for k in keys if k.endswith(".wav")]
        assert len(recordings) == 2 and all(
            k.startswith("pbx1/north/2024/03/15/") for k in recordings
        )
        for key in ("pbx1/index.html", "pbx1/static/recsync.css", "pbx1/north/status.json"):
            assert key in keys, keys
        assert {k.split("/")[1] for k in keys} == {
            "index.html",
            "search.html",
            "static",
            "north",
            "south",
        }
        page = client.request("GET", "pbx1/index.html").body.decode()
        assert 'data-folder="north"' in page and 'data-folder="south"' in page
        manifest = json.loads(client.request("GET", "pbx1/north/2024/03/15/manifest.json").body)
        entry = manifest["recordings"][0]
        assert entry["site"] == "north" and entry["file"].startswith("2024/03/15/")
    finally:
        client.close()
    link = run_agent(site, "url", entry["uniqueid"], "--expires", "5m")
    assert link.returncode == 0, link.stderr
    with urllib.request.urlopen(link.stdout.strip(), timeout=10) as response:  # noqa: S310
        assert len(response.read()) == entry["size"]
