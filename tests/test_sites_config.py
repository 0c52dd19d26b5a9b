"""agent.site and destination.layout: a safe folder name by default, a clear error otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import default_site, from_dict
from agent.errors import ConfigError

BASE = {"destination": {"type": "local", "root": "/srv/rec"}}


def test_single_is_the_default_and_owns_the_root() -> None:
    config = from_dict(BASE, base=Path("/etc"))
    assert (config.destination.layout, config.destination.site) == ("single", None)
    assert config.agent.site == default_site()


def test_sites_puts_the_agent_under_its_site() -> None:
    data = {
        "agent": {"site": "pbx-north_2"},
        "destination": {**BASE["destination"], "layout": "sites"},
    }
    config = from_dict(data, base=Path("/etc"))
    assert (config.destination.layout, config.destination.site) == ("sites", "pbx-north_2")
    assert config.destination.where == "/srv/rec (site pbx-north_2)"


@pytest.mark.parametrize(
    ("hostname", "site"),
    [
        ("PBX-1.example.com", "pbx-1"),
        ("pbx one", "pbx-one"),
        ("-._", "pbx"),
        ("static", "static-pbx"),
        ("é" * 100, "pbx"),
        ("a" * 100, "a" * 63),
    ],
)
def test_the_default_is_the_short_host_name_made_safe(hostname: str, site: str) -> None:
    assert default_site(hostname) == site


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "a.b", "-a", "static", "<b>", "a" * 64, 7])
def test_an_unsafe_site_is_refused_naming_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"agent\.site"):
        from_dict({"agent": {"site": bad}, **BASE}, base=Path("/etc"))


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"destination\.layout"):
        from_dict({"destination": {**BASE["destination"], "layout": "tree"}}, base=Path("/etc"))
