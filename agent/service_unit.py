"""The installed systemd unit as the service sees the file system.

The packaged unit has `ProtectSystem=strict`: everything is read-only for the agent except
its `ReadWritePaths=`. A local destination (or any folder the config names for writing)
outside those works from a shell and fails as a service. This reads the unit and its
drop-ins the way systemd layers them, says whether the service may write a folder, and
renders the drop-in (`recsync unit-paths`) that opens the configured folders.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from agent.config import Config

UNIT = "recsync.service"
# systemd's search path for system units, highest priority first.
UNIT_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
)
DROP_IN = "recsync-paths.conf"  # the drop-in `recsync unit-paths --install` writes

_PROTECTED = {  # ProtectSystem= value -> what it makes read-only ("/" : everything)
    "no": (),
    "yes": ("/usr", "/boot", "/efi"),
    "full": ("/usr", "/boot", "/efi", "/etc"),
    "strict": ("/",),
}
_WRITABLE_UNDER_STRICT = ("/dev", "/proc", "/sys")
_HOMES = ("/home", "/root", "/run/user")
_TMPS = ("/tmp", "/var/tmp")  # noqa: S108 - names them, never writes there


def _real(path: str | PurePosixPath | Path) -> PurePosixPath:
    """Where a path leads: systemd follows symbolic links in these settings too."""
    return PurePosixPath(os.path.realpath(path))


def _under(path: PurePosixPath, top: str | PurePosixPath) -> bool:
    top = _real(top)
    return path == top or top in path.parents


def _paths(value: str) -> list[PurePosixPath]:
    """A ReadWritePaths=-style list: space-separated, quotes allowed, "-"/"+" prefixes."""
    words = shlex.split(value.replace("%%", "%"))
    return [PurePosixPath(word.lstrip("-+")) for word in words]


def read_write_value(folder: Path) -> str:
    """`folder` as a ReadWritePaths= value ("%" starts a systemd specifier)."""
    return shlex.quote(f"-{folder}").replace("%", "%%")


def drop_in_path() -> Path:
    return UNIT_DIRS[0] / f"{UNIT}.d" / DROP_IN


@dataclass(frozen=True)
class Refusal:
    reason: str
    fixable: bool  # a ReadWritePaths= entry would open it


@dataclass
class Sandbox:
    """What the unit's [Service] section says about the file system."""

    files: list[Path] = field(default_factory=list)  # the unit, then its drop-ins
    protect_system: str = "no"
    protect_home: str = "no"
    private_tmp: bool = False
    read_write: list[PurePosixPath] = field(default_factory=list)
    read_only: list[PurePosixPath] = field(default_factory=list)
    inaccessible: list[PurePosixPath] = field(default_factory=list)

    @classmethod
    def load(cls, unit_dirs: Sequence[Path] | None = None, *, skip: str = "") -> Sandbox | None:
        """The installed unit with its drop-ins (except one named `skip`); None when no
        recsync.service is installed. `unit_dirs`: systemd's (UNIT_DIRS)."""
        unit_dirs = UNIT_DIRS if unit_dirs is None else unit_dirs
        unit = next((d / UNIT for d in unit_dirs if (d / UNIT).is_file()), None)
        if unit is None:
            return None
        drop_ins: dict[str, Path] = {}
        for folder in reversed(unit_dirs):  # a higher-priority file of the same name wins
            for conf in sorted((folder / f"{UNIT}.d").glob("*.conf")):
                drop_ins[conf.name] = conf
        sandbox = cls()
        for path in [unit, *(drop_ins[name] for name in sorted(drop_ins) if name != skip)]:
            sandbox.read(path)
        return sandbox

    def read(self, path: Path) -> None:
        self.files.append(path)
        for key, value in _service_settings(path.read_text(errors="replace").splitlines()):
            self.apply(key, value)

    def apply(self, key: str, value: str) -> None:
        lists = {
            "ReadWritePaths": self.read_write,
            "ReadOnlyPaths": self.read_only,
            "InaccessiblePaths": self.inaccessible,
        }
        if key in lists:
            if value == "":
                lists[key].clear()  # an empty assignment resets the list
            else:
                lists[key].extend(_paths(value))
        elif key == "ProtectSystem":
            self.protect_system = {"true": "yes", "false": "no", "": "no"}.get(value, value)
        elif key == "ProtectHome":
            self.protect_home = {"true": "yes", "false": "no", "": "no"}.get(value, value)
        elif key == "PrivateTmp":
            self.private_tmp = value.lower() in ("yes", "true", "1", "on")

    def refuses(self, path: Path) -> Refusal | None:
        """Why the service could not write under `path` (None: the sandbox lets it)."""
        target = _real(path)
        if any(_under(target, hidden) for hidden in self.inaccessible):
            return Refusal("hidden from the service (InaccessiblePaths=)", fixable=False)
        if self.protect_home != "no" and any(_under(target, home) for home in _HOMES):
            return Refusal(
                f"under a home folder, which ProtectHome={self.protect_home} hides or makes"
                " read-only: use a folder outside /home, /root and /run/user",
                fixable=False,
            )
        if self.private_tmp and any(_under(target, tmp) for tmp in _TMPS):
            return Refusal(
                "in /tmp or /var/tmp, which the service has a private copy of"
                " (PrivateTmp=yes): use a folder elsewhere",
                fixable=False,
            )
        rules = [(top, True) for top in self.read_write] + [(top, False) for top in self.read_only]
        matching = [(len(_real(top).parts), ok) for top, ok in rules if _under(target, top)]
        if matching:  # the most specific rule wins
            if max(matching)[1]:
                return None
            return Refusal("read-only for the service (ReadOnlyPaths=)", fixable=True)
        protected = _PROTECTED.get(self.protect_system, ())
        if self.protect_system == "strict" and any(
            _under(target, top) for top in _WRITABLE_UNDER_STRICT
        ):
            return None
        if any(_under(target, top) for top in protected):
            return Refusal(
                f"read-only for the service (ProtectSystem={self.protect_system},"
                " and not under its ReadWritePaths=)",
                fixable=True,
            )
        return None


def _service_settings(lines: Iterable[str]) -> Iterable[tuple[str, str]]:
    """The Key=value pairs of the [Service] section (continuation lines joined)."""
    section = ""
    pending = ""
    for raw in lines:
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Service" and "=" in line:
            key, _, value = line.partition("=")
            yield key.strip(), value.strip()


def writable_folders(config: Config) -> list[tuple[str, Path]]:
    """The folders the agent writes, by the config key that names them."""
    folders = [
        ("state.path", config.state.path.parent),
        ("state.staging", config.state.staging),
    ]
    for name, destination in config.destinations.items():
        if destination.type == "local":
            key = "destination.root" if name == "default" else f"destination.{name}.root"
            folders.append((key, destination.root))
    if config.retention.deletes:  # originals leave the spool
        folders.append(("spool.path", config.spool.path))
        if config.retention.move_to is not None:
            folders.append(("retention.move_to", config.retention.move_to))
    return folders


def drop_in(config: Config, sandbox: Sandbox) -> tuple[str | None, list[str]]:
    """The drop-in opening what the config writes (None: nothing to open), and the
    problems no drop-in of ours can solve."""
    opened: list[Path] = []
    problems = []
    for key, folder in writable_folders(config):
        refusal = sandbox.refuses(folder)
        if refusal is None:
            continue
        if refusal.fixable:
            if folder not in opened:
                opened.append(folder)
        else:
            problems.append(f"{key} {folder}: {refusal.reason}")
    if not opened:
        return None, problems
    source = config.source or "the config"
    text = (
        f"# Written by `recsync unit-paths --install` from {source}: the folders the\n"
        "# config names for writing that the unit's sandbox keeps read-only. Run it again\n"
        "# after changing them, then: systemctl restart recsync\n"
        '# ("-": a folder that does not exist yet does not fail the start.)\n'
        "[Service]\n" + "".join(f"ReadWritePaths={read_write_value(folder)}\n" for folder in opened)
    )
    return text, problems


def install_drop_in(target: Path, text: str | None) -> bool:
    """Write (or, for None, remove) the drop-in and reload systemd; False when it was
    already so."""
    current = target.read_text() if target.is_file() else None
    if current == text:
        return False
    if text is None:
        target.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(text)
        temp.chmod(0o644)
        os.replace(temp, target)
    if Path("/run/systemd/system").is_dir():  # systemd is running: let it see the change
        subprocess.run(["systemctl", "daemon-reload"], check=False, timeout=60)
    return True
