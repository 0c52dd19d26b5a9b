"""The config file: the example documents the defaults, every error names its key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent import spoolnames
from agent.cli import cli
from agent.config import CDR_TYPES, SCHEMA, load
from agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
ROOT = '[destination]\nroot = "dest"\n'  # the one required key


def write(folder: Path, text: str) -> Path:
    path = folder / "config.toml"
    path.write_text(text)
    return path


def config_error(path: Path) -> str:
    """The ConfigError's one-line message, which names the file (shown as <file>)."""
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message.replace(str(path), "<file>")


# --- the example ----------------------------------------------------------------------


def test_example_loads() -> None:
    config = load(EXAMPLE)
    assert config.destination.root == Path("/srv/recordings")
    assert config.source == EXAMPLE


@pytest.mark.parametrize("cdr_type", CDR_TYPES)
def test_changing_only_the_cdr_type_of_the_example_is_valid(tmp_path: Path, cdr_type: str) -> None:
    text = EXAMPLE.read_text()
    assert text.count('\ntype = "auto"\n') == 1
    path = write(tmp_path, text.replace('\ntype = "auto"\n', f'\ntype = "{cdr_type}"\n'))
    assert load(path).cdr.type == cdr_type


def test_a_key_of_another_type_names_the_line_to_comment_out(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'{ROOT}[cdr]\ntype = "none"\n# a comment\n  "freepbx_conf" = "/etc/freepbx.conf"\n',
    )
    assert config_error(path) == (
        "<file>:6: cdr.freepbx_conf does not apply to cdr.type = 'none' (its keys:"
        " asterisk_conf_dir, type, wait_seconds); comment out line 6 or change the type"
    )
    sftp_key = write(tmp_path, '[destination]\nroot = "d"\nhost = "web"\n')
    assert config_error(sftp_key) == (
        "<file>:3: destination.host does not apply to destination.type = 'local';"
        " comment out line 3 or change the type"
    )


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    before = ROOT.encode() + b'[index]\ntitle = "Caf'
    path.write_bytes(before + b'\xe9"\n')  # Latin-1, as an old editor writes it
    assert config_error(path) == f"<file>: not valid UTF-8 (byte {len(before)})"


def documented_keys() -> dict[str, set[str]]:
    """Keys the example sets, plus those it shows commented out (`# key = ...`): keys of
    other cdr types, and keys whose default is "unset"."""
    keys: dict[str, set[str]] = {}
    table = ""
    for line in EXAMPLE.read_text().splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            table = header[1]
        elif key := re.match(r"^#? ?(\w+) = ", line):
            keys.setdefault(table, set()).add(key[1])
    return keys


def test_example_shows_every_key() -> None:
    assert documented_keys() == {t: set(k) for t, k in SCHEMA.items()}


ACTIVE_KEYS = [
    (table, key)
    for table, keys in tomllib.loads(EXAMPLE.read_text()).items()
    for key in keys
    if (table, key) != ("destination", "root")  # the one key without a default
]


@pytest.mark.parametrize(("table", "key"), ACTIVE_KEYS, ids=[f"{t}.{k}" for t, k in ACTIVE_KEYS])
def test_example_value_is_the_default(table: str, key: str) -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    default, check = SCHEMA[table][key]
    assert example[table][key] == default
    loaded = getattr(getattr(load(EXAMPLE), table), key)
    assert loaded == check(f"{table}.{key}", default, EXAMPLE.parent)


def test_minimal_file_gets_the_defaults(tmp_path: Path) -> None:
    config = load(write(tmp_path, ROOT))
    assert config.spool.path == Path("/var/spool/asterisk/monitor")
    assert config.spool.settle_seconds == 5
    assert config.spool.extensions == spoolnames.DEFAULT_EXTENSIONS
    assert config.spool.patterns == ()
    assert config.state.path == Path("/var/lib/recsync/state.db")
    assert config.cdr.type == "auto"
    assert config.log.level == "info"


# --- errors name the key --------------------------------------------------------------

BAD = [
    ("unknown table", f"[bogus]\nx = 1\n{ROOT}", "[bogus]"),
    ("unknown key", f"[spool]\nsettle_time = 5\n{ROOT}", "spool.settle_time"),
    ("table is a value", f"spool = 5\n{ROOT}", "spool"),
    ("string for number", f'[spool]\nsettle_seconds = "5"\n{ROOT}', "spool.settle_seconds"),
    ("bool for number", f"[spool]\nstale_seconds = true\n{ROOT}", "spool.stale_seconds"),
    ("negative number", f"[spool]\nbackfill_days = -1\n{ROOT}", "spool.backfill_days"),
    ("negative wait", f"[cdr]\nwait_seconds = -0.5\n{ROOT}", "cdr.wait_seconds"),
    ("zero reconcile", f"[spool]\nreconcile_minutes = 0\n{ROOT}", "spool.reconcile_minutes"),
    ("extensions string", f'[spool]\nextensions = "wav"\n{ROOT}', "spool.extensions"),
    ("extensions dotted", f'[spool]\nextensions = [".wav"]\n{ROOT}', "spool.extensions"),
    ("extensions empty", f"[spool]\nextensions = []\n{ROOT}", "spool.extensions"),
    ("extensions number", f'[spool]\nextensions = ["wav", 3]\n{ROOT}', "spool.extensions"),
    ("empty path", f'[spool]\npath = ""\n{ROOT}', "spool.path"),
    ("number path", f"[state]\npath = 5\n{ROOT}", "state.path"),
    ("missing root", '[destination]\ntype = "local"\n', "destination.root"),
    ("no destination", '[spool]\npath = "spool"\n', "destination.root"),
    ("bad destination", '[destination]\ntype = "ftp"\nroot = "d"\n', "destination.type"),
    ("bad cdr type", f'[cdr]\ntype = "bogus"\n{ROOT}', "cdr.type"),
    ("bad log level", f'[log]\nlevel = "loud"\n{ROOT}', "log.level"),
    ("patterns not a list", f'[spool]\npatterns = "x"\n{ROOT}', "spool.patterns"),
    ("links off s3", f"[webhook]\npresign_seconds = 60\n{ROOT}", "webhook.presign_seconds"),
    (
        "links past 7 days",
        f"[webhook]\npresign_seconds = 604801\n{ROOT}",
        "webhook.presign_seconds",
    ),
    ("negative days", f"[retention]\nspool_days = -1\n{ROOT}", "retention.spool_days"),
    ("days string", f'[retention]\nspool_days = "30"\n{ROOT}', "retention.spool_days"),
    ("percent over 100", f"[retention]\nmin_free_percent = 101\n{ROOT}", "min_free_percent"),
    ("bad low disk", f'[retention]\non_low_disk = "delete"\n{ROOT}', "retention.on_low_disk"),
    ("unknown retention", f"[retention]\nspool_dayz = 3\n{ROOT}", "retention.spool_dayz"),
]


@pytest.mark.parametrize(("text", "key"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_value_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    assert key in config_error(write(tmp_path, text))


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("settle_seconds = nan", "spool.settle_seconds"),
        ("reconcile_minutes = inf", "spool.reconcile_minutes"),
    ],
)
def test_non_finite_number_names_the_key(tmp_path: Path, line: str, key: str) -> None:
    # nan never compares >= anything (a headerless file never settles); an infinite
    # reconcile interval overflows the scheduler at run time instead of at load.
    assert key in config_error(write(tmp_path, f"[spool]\n{line}\n{ROOT}"))


def test_presigned_links_need_an_s3_destination(tmp_path: Path) -> None:
    local = config_error(write(tmp_path, f"[webhook]\npresign_seconds = 3600\n{ROOT}"))
    assert "presigned links need destination.type = 's3' (it is 'local')" in local
    s3 = '[destination]\ntype = "s3"\nbucket = "calls"\n[webhook]\npresign_seconds = 3600\n'
    assert load(write(tmp_path, s3)).webhook.presign_seconds == 3600


# --- [retention] ---------------------------------------------------------------------


def test_retention_is_off_by_default(tmp_path: Path) -> None:
    retention = load(write(tmp_path, ROOT)).retention
    assert (retention.spool_days, retention.move_to, retention.min_free_percent) == (0, None, 0)
    assert retention.on_low_disk == "alert"
    assert not retention.deletes


def test_retention_takes_fractions_of_days_and_a_move_to_folder(tmp_path: Path) -> None:
    text = f'[spool]\npath = "spool"\n[retention]\nspool_days = 0.5\nmove_to = "archive"\n{ROOT}'
    retention = load(write(tmp_path, text)).retention
    assert retention.spool_days == 0.5
    assert retention.move_to == tmp_path / "archive"
    assert retention.deletes


def test_only_prune_on_low_disk_deletes(tmp_path: Path) -> None:
    alert = load(write(tmp_path, f"[retention]\nmin_free_percent = 10\n{ROOT}")).retention
    assert not alert.deletes
    text = f'[retention]\nmin_free_percent = 10\non_low_disk = "prune"\n{ROOT}'
    assert load(write(tmp_path, text)).retention.deletes


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('spool_days = 3\nmove_to = "spool/old"', "must be outside spool.path"),
        ('spool_days = 3\nmove_to = "."', "must be outside spool.path"),
        ('move_to = "archive"', "no rule removes anything"),
    ],
)
def test_move_to_must_be_outside_the_spool_and_used(tmp_path: Path, text: str, says: str) -> None:
    path = write(tmp_path, f'[spool]\npath = "spool"\n[retention]\n{text}\n{ROOT}')
    assert says in config_error(path)


# --- spool.patterns -------------------------------------------------------------------

DISA = r"^DISA-(?P<src>\d+)-(?P<dst>\d+)-(?P<date>\d{8})-(?P<time>\d{6})-(?P<uniqueid>[\d.]+)$"


def patterns(*entries: str) -> str:
    return f"[spool]\npatterns = [{', '.join(entries)}]\n{ROOT}"


def test_custom_pattern_compiles_and_parses(tmp_path: Path) -> None:
    config = load(write(tmp_path, patterns(f"{{ name = \"my-disa\", regex = '{DISA}' }}")))
    (pattern,) = config.spool.patterns
    assert pattern.name == "my-disa"
    recording = spoolnames.parse(
        "DISA-100-2125551234-20240315-101502-1710497702.42.wav", patterns=config.spool.patterns
    )
    assert (recording.pattern, recording.kind, recording.era) == ("my-disa", "custom", "custom")
    assert (recording.src, recording.dst, recording.uniqueid) == (
        "100",
        "2125551234",
        "1710497702.42",
    )
    assert recording.started_at.strftime("%Y-%m-%d %H:%M:%S") == "2024-03-15 10:15:02"


GOOD = f"{{ name = \"ok\", regex = '{DISA}' }}"
BAD_PATTERNS = [
    ("bad regex", ["{ name = \"p\", regex = '(?P<date>[0-9' }"], "spool.patterns[0]"),
    (
        "no date or time",
        [r"{ name = 'p', regex = '(?P<src>\d+)-(?P<uniqueid>.+)' }"],
        "spool.patterns[0]",
    ),
    ("date without time", [r"{ name = 'p', regex = '(?P<date>\d{8})-x' }"], "spool.patterns[0]"),
    (
        "unknown group",
        [r"{ name = 'p', regex = '(?P<epoch>\d+)-(?P<who>.+)' }"],
        "spool.patterns[0]",
    ),
    ("missing regex", ['{ name = "p" }'], "spool.patterns[0]"),
    ("extra key", [f'{{ name = "p", regex = \'{DISA}\', kind = "x" }}'], "spool.patterns[0]"),
    ("not a table", ['"x"'], "spool.patterns[0]"),
    ("second is bad", [GOOD, "{ name = \"p\", regex = '(' }"], "spool.patterns[1]"),
]


@pytest.mark.parametrize(
    ("entries", "key"), [c[1:] for c in BAD_PATTERNS], ids=[c[0] for c in BAD_PATTERNS]
)
def test_bad_pattern_names_its_index(tmp_path: Path, entries: list[str], key: str) -> None:
    assert key in config_error(write(tmp_path, patterns(*entries)))


def test_epoch_pattern_is_enough(tmp_path: Path) -> None:
    config = load(write(tmp_path, patterns(r"{ name = 'e', regex = 'rec-(?P<epoch>\d+)' }")))
    assert config.spool.patterns[0].name == "e"


# --- paths and files ------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = write(
        folder,
        '[spool]\npath = "spool"\n[state]\npath = "var/state.db"\nstaging = "../staging"\n'
        '[destination]\nroot = "out"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load(Path("..") / "etc" / "config.toml")
    assert config.spool.path == folder / "spool"
    assert config.state.path == folder / "var" / "state.db"
    assert config.state.staging == tmp_path / "staging"
    assert config.destination.root == folder / "out"
    assert path.exists()


def test_absolute_paths_stay(tmp_path: Path) -> None:
    config = load(write(tmp_path, f'[spool]\npath = "/var/x"\n{ROOT}'))
    assert config.spool.path == Path("/var/x")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    assert config_error(write(tmp_path, "[spool\npath = 1\n")).startswith("<file>: not valid TOML")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    assert "<file>" in config_error(tmp_path / "absent.toml")


def test_unreadable_path_names_the_file(tmp_path: Path) -> None:
    assert config_error(tmp_path).startswith("cannot read <file>")  # a folder, not a file


# --- recsync check-config -------------------------------------------------------------


def check_config(path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--config", str(path), "check-config"])
    return result.exit_code, result.stdout, result.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, f'[spool]\npath = "spool"\n{ROOT}')
    code, out, _ = check_config(path)
    assert code == 0
    assert "OK" in out
    assert str(tmp_path / "spool") in out


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"[spool]\nsettle_seconds = true\n{ROOT}", "spool.settle_seconds"),
        (f"[spool]\nbogus = 1\n{ROOT}", "spool.bogus"),
        ("[spool\n", "TOML"),
        (patterns("{ name = \"p\", regex = '(' }"), "spool.patterns[0]"),
    ],
)
def test_check_config_refuses_a_bad_file(tmp_path: Path, text: str, key: str) -> None:
    code, out, err = check_config(write(tmp_path, text))
    assert code != 0
    assert out == ""
    (line,) = err.strip().splitlines()
    assert key in line


def test_check_config_without_a_file(tmp_path: Path) -> None:
    code, _, err = check_config(tmp_path / "absent.toml")
    assert code != 0
    (line,) = err.strip().splitlines()
    assert "absent.toml" in line
