"""What the installed service may write: the unit and its drop-ins read as systemd layers
them, the drop-in `recsync unit-paths` writes, and doctor's check of both."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from click.testing import CliRunner, Result

from agent import service_unit
from agent.cli import cli
from agent.config import load
from agent.errors import DestinationDown
from agent.service_unit import DROP_IN, UNIT, Sandbox, drop_in, read_write_value
from agent.transport.local import LocalTransport
from tests.conftest import Site

REPO = Path(__file__).resolve().parent.parent
PACKAGED_UNIT = REPO / "packaging" / "systemd" / "recsync.service"


def unit_dir(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "units"
    folder.mkdir(exist_ok=True)
    (folder / UNIT).write_text(text)
    return folder


def add_drop_in(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{UNIT}.d" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def packaged(tmp_path: Path) -> Path:
    return unit_dir(tmp_path, PACKAGED_UNIT.read_text())


def test_the_packaged_unit_opens_only_the_state_folder(tmp_path: Path) -> None:
    sandbox = Sandbox.load([packaged(tmp_path)])
    assert sandbox is not None
    assert sandbox.refuses(Path("/var/lib/recsync/staging")) is None
    assert sandbox.refuses(Path("/var/lib/recsync")) is None
    refused = sandbox.refuses(Path("/srv/recordings"))
    assert refused is not None and refused.fixable
    assert "ProtectSystem=strict" in refused.reason
    # The spool is read-only even under a drop-in for its parent: the most specific wins.
    spool = sandbox.refuses(Path("/var/spool/asterisk/monitor/2024"))
    assert spool is not None and "ReadOnlyPaths=" in spool.reason
    for hidden in ("/home/admin/recordings", "/root/rec", "/tmp/recordings", "/var/tmp/x"):
        refusal = sandbox.refuses(Path(hidden))
        assert refusal is not None and not refusal.fixable, hidden


def test_drop_ins_layer_as_systemd_does(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / UNIT).write_text("[Service]\nProtectSystem=strict\nReadWritePaths=/var/lib/recsync\n")
    add_drop_in(lib, "50-data.conf", "[Service]\nReadWritePaths=/data /srv/a\n")
    # The same name in a higher-priority folder replaces it; an empty value resets the list.
    add_drop_in(etc, "50-data.conf", "[Service]\nReadWritePaths=\nReadWritePaths=-'/srv/b c'\n")
    add_drop_in(etc, "90-more.conf", "[Unit]\nReadWritePaths=/ignored\n[Service]\\\n")
    sandbox = Sandbox.load([etc, lib])
    assert sandbox is not None
    assert sandbox.files == [
        lib / UNIT,
        etc / f"{UNIT}.d/50-data.conf",
        etc / f"{UNIT}.d/90-more.conf",
    ]
    assert sandbox.refuses(Path("/srv/b c/2024")) is None
    for closed in ("/var/lib/recsync", "/data", "/srv/a", "/ignored"):
        assert sandbox.refuses(Path(closed)) is not None, closed
    assert Sandbox.load([tmp_path / "nothing-here"]) is None


def test_a_symlinked_folder_is_judged_where_it_leads(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "recordings"
    real.mkdir(parents=True)
    link = tmp_path / "srv-recordings"
    link.symlink_to(real)
    units = unit_dir(tmp_path, f"[Service]\nProtectSystem=strict\nReadWritePaths={real}\n")
    sandbox = Sandbox.load([units])
    assert sandbox is not None and sandbox.refuses(link) is None


def test_the_drop_in_for_the_shipped_config_opens_its_destination(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    shutil.copy(REPO / "config.example.toml", config_path)
    config = load(config_path)
    units = packaged(tmp_path)
    sandbox = Sandbox.load([units])
    assert sandbox is not None
    text, problems = drop_in(config, sandbox)
    assert problems == []
    assert text is not None and text.splitlines()[-2:] == [
        "[Service]",
        "ReadWritePaths=-/srv/recordings",
    ]
    add_drop_in(units, DROP_IN, text)
    opened = Sandbox.load([units])
    assert opened is not None and opened.refuses(Path("/srv/recordings")) is None
    # unit-paths judges the unit without its own drop-in, so it is stable.
    again = Sandbox.load([units], skip=DROP_IN)
    assert again is not None and drop_in(config, again) == (text, [])


def test_retention_opens_the_spool_and_move_to_only_when_it_deletes(tmp_path: Path) -> None:
    config_path = tmp_path / "config.toml"
    example = (REPO / "config.example.toml").read_text()
    config_path.write_text(example)
    sandbox = Sandbox.load([packaged(tmp_path)])
    assert sandbox is not None
    text, _ = drop_in(load(config_path), sandbox)
    assert text is not None and "monitor" not in text  # off by default: the spool stays read-only
    config_path.write_text(
        example.replace("spool_days = 0 ", "spool_days = 30 ").replace(
            '# move_to = "/mnt/archive/monitor"', 'move_to = "/mnt/archive/monitor"'
        )
    )
    text, problems = drop_in(load(config_path), sandbox)
    assert problems == []
    assert text is not None and text.splitlines()[-3:] == [
        "ReadWritePaths=-/srv/recordings",
        "ReadWritePaths=-/var/spool/asterisk/monitor",
        "ReadWritePaths=-/mnt/archive/monitor",
    ]


def test_systemd_accepts_the_drop_in(tmp_path: Path) -> None:
    """systemd-analyze verify on the unit with a drop-in for awkward folder names."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    site_root = tmp_path / "srv"
    odd = [site_root / "a b", site_root / "100%", site_root / "it's"]
    for folder in odd:
        folder.mkdir(parents=True)
    units = unit_dir(
        tmp_path,
        PACKAGED_UNIT.read_text().replace(
            "ExecStart=/usr/bin/recsync", f"ExecStart={sys.executable}"
        ),
    )
    sandbox = Sandbox.load([units])
    assert sandbox is not None
    text = "[Service]\n" + "".join(f"ReadWritePaths={read_write_value(folder)}\n" for folder in odd)
    add_drop_in(units, DROP_IN, text)
    done = subprocess.run(
        [tool, "verify", str(units / UNIT)], capture_output=True, text=True, timeout=60
    )
    ours = [line for line in done.stderr.splitlines() if "recsync" in line]
    assert done.returncode == 0 and not ours, done.stderr
    # And we read back what we wrote.
    opened = Sandbox.load([units])
    assert opened is not None and opened.read_write[-3:] == [PurePosixPath(f) for f in odd]


# --- the command and doctor, on a unit of the site's own ----------------------------------


@pytest.fixture
def units(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed unit that opens the site's state folder but not its destination
    (the site lives under /tmp, which the packaged unit makes private)."""
    folder = tmp_path / "systemd"
    folder.mkdir()
    (folder / UNIT).write_text(
        f"[Service]\nProtectSystem=strict\nReadWritePaths={site.state}\nPrivateTmp=no\n"
    )
    monkeypatch.setattr(service_unit, "UNIT_DIRS", (folder,))
    return folder


def invoke(site: Site, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(site.write_config()), *args])


def service_line(result: Result) -> str:
    return next(
        line for line in result.output.splitlines() if line.startswith(("✓ service", "✗ service"))
    )


def test_doctor_flags_a_destination_the_service_cannot_write(site: Site, units: Path) -> None:
    result = invoke(site, "doctor")
    assert result.exit_code != 0
    line = service_line(result)
    assert line.startswith("✗ service: destination.root")
    assert str(site.dest) in line and "ProtectSystem=strict" in line
    assert "sudo recsync unit-paths --install" in result.output
    # The shell user can write it: that check passes, which is the point of this one.
    assert any(line.startswith("✓ destination") for line in result.output.splitlines())


def test_unit_paths_install_opens_it_and_doctor_agrees(site: Site, units: Path) -> None:
    shown = invoke(site, "unit-paths")
    assert shown.exit_code == 0, shown.output
    assert f"ReadWritePaths=-{site.dest}" in shown.output
    target = units / f"{UNIT}.d" / DROP_IN
    assert not target.exists()  # printing changes nothing

    installed = invoke(site, "unit-paths", "--install")
    assert installed.exit_code == 0, installed.output
    assert target.read_text().splitlines()[-2:] == ["[Service]", f"ReadWritePaths=-{site.dest}"]
    assert service_line(invoke(site, "doctor")).startswith("✓ service:")
    assert "(unchanged)" in invoke(site, "unit-paths", "--install").output

    # A destination the unit already opens needs no drop-in: the stale one goes.
    (units / UNIT).write_text(
        f"[Service]\nProtectSystem=strict\nReadWritePaths={site.root}\nPrivateTmp=no\n"
    )
    assert invoke(site, "unit-paths", "--install").exit_code == 0
    assert not target.exists()


def test_a_folder_no_drop_in_can_open_is_an_error(site: Site, units: Path) -> None:
    (units / UNIT).write_text(
        f"[Service]\nProtectSystem=strict\nReadWritePaths={site.state}\nPrivateTmp=yes\n"
    )
    result = invoke(site, "unit-paths", "--install")
    assert result.exit_code == 1
    assert f"destination.root {site.dest}: in /tmp or /var/tmp" in result.output
    assert not (units / f"{UNIT}.d" / DROP_IN).exists()


def test_without_an_installed_unit(site: Site, units: Path) -> None:
    (units / UNIT).unlink()
    assert service_line(invoke(site, "doctor")).startswith(
        "✓ service: no recsync.service installed"
    )
    refused = invoke(site, "unit-paths")
    assert refused.exit_code == 1 and "no recsync.service installed" in refused.output


def test_a_read_only_destination_says_where_to_look(small_disk: Path) -> None:
    """What ProtectSystem=strict looks like from inside: a read-only mount (EROFS)."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        with pytest.raises(DestinationDown) as caught:
            LocalTransport(root=small_disk).probe()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    message = str(caught.value)
    assert message.startswith(f"cannot write in {small_disk}: Read-only file system")
    assert "ReadWritePaths" in message and "recsync unit-paths --install" in message
