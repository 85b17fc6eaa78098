"""Configuration: environment, .env and flags, one table that --help and docs/configuration.md share."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot import config
from snapshot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
KEY = "ab" * 32


def test_every_variable_has_a_flag_and_the_storage_ones_are_snapshots():
    from snapshot.settings import ENV

    envs = [o.env for o in config.OPTIONS]
    assert set(ENV) <= set(envs)
    assert len(envs) == len(set(envs))
    assert {o.flag for o in config.OPTIONS} >= {"--bot-token", "--storage-chat", "--api-id", "--api-hash",
                                                "--storage-bot-token", "--admin-ids", "--flush-interval",
                                                "--encryption-key", "--storage-dir"}


def test_help_lists_every_variable_and_flag():
    out = subprocess.run([sys.executable, "-m", "bot", "--help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    flat = " ".join(out.split())
    for option in config.OPTIONS:
        assert option.env in flat, option.env
        assert option.flag in flat, option.flag


def test_configuration_doc_holds_the_generated_table():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert config.markdown_table() in doc, "regenerate the table: python -m bot.config"


def test_flags_beat_environment_which_beats_defaults(tmp_path):
    env = {"TGSNAP_FLUSH_INTERVAL": "7", "TGSNAP_ADMIN_IDS": "1, 2", "TGSNAP_BOT_TOKEN": "1:env",
           "TGSNAP_STORAGE_MODE": "local", "TGSNAP_STORAGE_DIR": str(tmp_path)}
    settings = config.load(["--flush-interval", "2.5", "--bot-token", "1:flag"], env)
    assert settings.flush_interval == 2.5
    assert settings.admin_ids == {1, 2}
    assert not settings.local_mode
    storage = settings.storage_settings()
    assert storage.bot_token == "1:flag"
    assert storage.mode == "local" and storage.local_dir == tmp_path
    assert config.load([], {}).flush_interval == config.StoreConfig().flush_interval


def test_dotenv_is_honoured_but_the_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("TGSNAP_ADMIN_IDS=5\nTGSNAP_LOG_LEVEL=debug\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TGSNAP_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("TGSNAP_ADMIN_IDS", raising=False)
    settings = config.load([])
    assert settings.admin_ids == {5}
    assert settings.log_level == "WARNING"


def test_no_token_means_local_mode_with_storage_under_the_data_dir(tmp_path):
    settings = config.load(["--data-dir", str(tmp_path)], {})
    assert settings.local_mode
    assert settings.storage_settings().local_dir == tmp_path / "storage"


@pytest.mark.parametrize("argv, env, needle", [
    ([], {"TGSNAP_ADMIN_IDS": "alice"}, "TGSNAP_ADMIN_IDS"),
    ([], {"TGSNAP_FLUSH_INTERVAL": "0"}, "TGSNAP_FLUSH_INTERVAL"),
    (["--flush-interval", "soon"], {}, "TGSNAP_FLUSH_INTERVAL"),
    ([], {"TGSNAP_LOG_LEVEL": "LOUD"}, "TGSNAP_LOG_LEVEL"),
    (["--storage-mode", "ftp"], {}, "TGSNAP_STORAGE_MODE"),
    ([], {"TGSNAP_ENCRYPTION_KEY": "short"}, "key"),
])
def test_bad_values_fail_at_start_naming_the_setting(argv, env, needle):
    with pytest.raises(ConfigError, match=needle):
        config.load(argv, env)


def test_secrets_stay_out_of_reprs_and_errors():
    settings = config.load(["--encryption-key", KEY], {"TGSNAP_BOT_TOKEN": "123:supersecret"})
    assert "supersecret" not in repr(settings)
    storage = settings.storage_settings(mode="local")
    assert "supersecret" not in repr(storage) and KEY not in repr(storage)
    assert storage.encryption_key == bytes.fromhex(KEY)
    assert settings.store_config(storage).replica.encryption_key == bytes.fromhex(KEY)
    with pytest.raises(ConfigError) as err:
        config.load([], {"TGSNAP_ENCRYPTION_KEY": "zz" + KEY[2:]})
    assert KEY[2:] not in str(err.value)


def test_a_configuration_error_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bot", "--flush-interval", "-1"], cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert re.search(r"configuration error: TGSNAP_FLUSH_INTERVAL", done.stderr)


def test_configuration_doc_holds_the_generated_exit_code_table():
    from snapshot import exitcodes

    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert exitcodes.markdown_table() in doc, "regenerate the table: python -m snapshot.exitcodes"


def test_the_bot_and_the_tools_share_one_flag_vocabulary():
    from tools.cli_common import make_parser

    tool_flags = {o for a in make_parser("t", "d", "e")._actions for o in a.option_strings}
    bot_flags = {o for a in config.parser()._actions for o in a.option_strings}
    storage = {o.flag for o in config.STORAGE_OPTIONS}
    assert storage <= tool_flags and storage <= bot_flags
    assert "--storage-mode" in storage and "--encryption-key" in storage


@pytest.mark.parametrize("old, new, value", [("--mode", "--storage-mode", "local"),
                                             ("--key", "--encryption-key", KEY)])
def test_old_spellings_still_work_with_a_warning(tmp_path, old, new, value):
    settings = config.load([old, value, "--data-dir", str(tmp_path)], {})
    assert settings.values[config.STORAGE_OPTIONS[0].env if old == "--mode" else "TGSNAP_ENCRYPTION_KEY"] == value
    assert any(old in w and new in w for w in settings.warnings)


def test_the_tools_accept_the_old_spellings_with_a_warning(tmp_path, capsys):
    from tools import verify

    assert verify.main(["--mode", "local", "--storage-dir", str(tmp_path / "missing"), "-q"]) == 5
    err = capsys.readouterr().err
    assert err.count("--mode is deprecated") == 1 and "use --storage-mode" in err


def test_a_misspelt_token_variable_is_warned_about_not_silently_local(tmp_path):
    settings = config.load(["--data-dir", str(tmp_path)], {"TGSNAP_TOKEN": "123:abc"})
    assert settings.local_mode
    text = "\n".join(settings.warnings)
    assert "TGSNAP_TOKEN is not a tgsnap setting (did you mean TGSNAP_BOT_TOKEN?)" in text
    assert "local mode" in text


def test_a_storage_dir_flag_selects_the_directory_in_the_bot_as_in_the_tools(tmp_path):
    env = {"TGSNAP_BOT_TOKEN": "1:a", "TGSNAP_STORAGE_CHAT": "-1001", "TGSNAP_STORAGE_MODE": "botapi"}
    storage = config.load(["--storage-dir", str(tmp_path)], env).storage_settings()
    assert storage.mode == "local" and storage.local_dir == tmp_path
    # with the channel on the command line too, the environment's mode stands
    assert config.load(["--storage-dir", str(tmp_path), "--storage-chat", "-1002"], env).storage_settings().mode \
        == "botapi"
