"""A bad setting stops `gateway serve` with one line naming the variable and
what is wrong: no traceback, a non-zero exit, nothing secret echoed."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.auth.tokens import parse_tokens
from gateway.config import SECRET_SETTINGS, ConfigError, Settings
from tests.tokens import api_token

GOOD = api_token("crm")
SECRET_IN_URL = "hunter2hunter2"
# variable settings -> what the one line must say
CASES: dict[str, tuple[dict[str, str], str]] = {
    "database scheme": (
        {"GATEWAY_DATABASE_URL": f"mysql://root:{SECRET_IN_URL}@db/x"},
        "GATEWAY_DATABASE_URL: scheme 'mysql' is not supported",
    ),
    "database port": (
        {"GATEWAY_DATABASE_URL": f"postgresql://u:{SECRET_IN_URL}@db:port/x"},
        "GATEWAY_DATABASE_URL is not a valid URL",
    ),
    "a number": ({"GATEWAY_RETRY_BASE": "abc"}, "GATEWAY_RETRY_BASE must be a number, not 'abc'"),
    "a whole number": ({"GATEWAY_MAX_ATTEMPTS": "2.5"}, "GATEWAY_MAX_ATTEMPTS must be a whole"),
    "a negative number": ({"GATEWAY_RETRY_CAP": "-1"}, "GATEWAY_RETRY_CAP must be 0 or more"),
    "not finite": ({"GATEWAY_LEASE_SECONDS": "inf"}, "GATEWAY_LEASE_SECONDS must be a finite"),
    "zero": ({"GATEWAY_WORKERS": "0"}, "GATEWAY_WORKERS must be more than 0"),
    "a flag": ({"GATEWAY_DISPATCHER_ENABLED": "maybe"}, "GATEWAY_DISPATCHER_ENABLED must be true"),
    "a log level": ({"GATEWAY_LOG_LEVEL": "LOUD"}, "GATEWAY_LOG_LEVEL must be one of"),
    "a backend URL": (
        {"GATEWAY_OMNEO_URL": "omneo.example.com/api", "GATEWAY_OMNEO_TOKEN": "t"},
        "GATEWAY_OMNEO_URL must be an http:// or https:// URL",
    ),
    "a backend URL without its token": (
        {"GATEWAY_IMPORT_BATCH_URL": "https://ib.example.com"},
        "GATEWAY_IMPORT_BATCH_TOKEN is empty but GATEWAY_IMPORT_BATCH_URL is set",
    ),
    "a short API token": (
        {"GATEWAY_API_TOKENS": f"crm:{GOOD},shop:short-{SECRET_IN_URL}"},
        "GATEWAY_API_TOKENS: the token of app 'shop' is 20 characters; use at least 32",
    ),
    "an unknown scope": (
        {"GATEWAY_API_TOKENS": f"crm:{GOOD}:write+admin"},
        "GATEWAY_API_TOKENS: app 'crm' has unknown scope 'admin'",
    ),
    "a token used twice": (
        {"GATEWAY_API_TOKENS": f"crm:{GOOD},shop:{GOOD}"},
        "GATEWAY_API_TOKENS: app 'shop' has a token that another entry already uses",
    ),
    "a secret both as a variable and as a file": (
        {"GATEWAY_OMNEO_TOKEN": SECRET_IN_URL, "GATEWAY_OMNEO_TOKEN_FILE": "/run/omneo"},
        "GATEWAY_OMNEO_TOKEN and GATEWAY_OMNEO_TOKEN_FILE are both set; set one of them",
    ),
    "a secret file that cannot be read": (
        {"GATEWAY_METRICS_TOKEN_FILE": "/nonexistent/metrics-token"},
        "GATEWAY_METRICS_TOKEN_FILE: cannot read /nonexistent/metrics-token (No such file",
    ),
    "a short metrics token": (
        {"GATEWAY_METRICS_TOKEN": SECRET_IN_URL},
        "GATEWAY_METRICS_TOKEN is 14 characters; use at least 32",
    ),
    "a lane for an app without a token": (
        {"GATEWAY_APP_LANES": "crm:bulk,importer:bulk"},
        "GATEWAY_APP_LANES: app 'importer' has no token in GATEWAY_API_TOKENS",
    ),
    "an unknown lane": (
        {"GATEWAY_APP_LANES": "crm:slow"},
        "GATEWAY_APP_LANES: app 'crm' has unknown lane 'slow'; lanes are realtime, bulk",
    ),
    "a lane entry without a lane": (
        {"GATEWAY_APP_LANES": "crm"},
        "GATEWAY_APP_LANES: entry 1 is not app:lane",
    ),
    "a quota for an app without a token": (
        {"GATEWAY_APP_QUOTAS": "crm:100,shop:10"},
        "GATEWAY_APP_QUOTAS: app 'shop' has no token in GATEWAY_API_TOKENS",
    ),
    "a quota that is not a rate": (
        {"GATEWAY_APP_QUOTAS": "crm:fast"},
        "GATEWAY_APP_QUOTAS: app 'crm': 'fast' is not rate or rate/burst",
    ),
    "a quota of no profiles": (
        {"GATEWAY_APP_QUOTAS": "crm:0"},
        "GATEWAY_APP_QUOTAS: app 'crm': the rate must be a number more than 0, not '0'",
    ),
    "a quota with a fractional burst": (
        {"GATEWAY_APP_QUOTAS": "crm:10/2.5"},
        "GATEWAY_APP_QUOTAS: app 'crm': the burst must be a whole number of 1 or more",
    ),
    "a default quota that is not a rate": (
        {"GATEWAY_APP_QUOTA_DEFAULT": "-5/10"},
        "GATEWAY_APP_QUOTA_DEFAULT: the rate must be a number more than 0, not '-5'",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_serve_stops_with_one_line_naming_the_variable(case: str, tmp_path: Path) -> None:
    settings, expected = CASES[case]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}", "GATEWAY_PORT": "9"}
    env |= {"GATEWAY_API_TOKENS": f"crm:{GOOD}", **settings}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gateway: ")
    assert expected in lines[0]
    assert SECRET_IN_URL not in done.stderr
    assert not (tmp_path / "g.db").exists()  # stopped before anything started


def test_the_token_syntax() -> None:
    tokens = parse_tokens(f" crm:{GOOD} , ops:{'o' * 32}:read+operate+erase,,")
    assert tokens[GOOD].app == "crm" and tokens[GOOD].scopes == {"write"}
    assert tokens["o" * 32].scopes == {"read", "operate", "erase"}
    for spec in (f"crm:{GOOD}:", f"crm:{GOOD}:write+", f"{GOOD}", f":{GOOD}", f"a:b:{GOOD}:write"):
        with pytest.raises(ConfigError) as error:
            Settings(api_tokens=spec).api_token_map()
        assert GOOD not in str(error.value), spec
    # The form deployments used before scopes still loads, as a writer.
    loaded = Settings.from_env({"GATEWAY_API_TOKENS": f"crm:{GOOD}"})
    assert loaded.api_token_map() == {GOOD: tokens[GOOD]}


def test_every_secret_setting_can_be_read_from_a_file(tmp_path: Path) -> None:
    """GATEWAY_<NAME>_FILE for each credential: the file's contents, one trailing
    newline stripped (as `kubectl create secret --from-file` and editors leave it)."""
    values = {
        "api_tokens": f"crm:{GOOD}",
        "metrics_token": "m" * 32,
        "encryption_keys": "k1:" + base64.b64encode(b"k" * 32).decode(),
        "database_url": f"sqlite:///{tmp_path / 'g.db'}",
        "ocamba_token": "o-token",
        "omneo_token": "omneo token with spaces ",
        "omneo_webhook_secret": "hook",
        "import_batch_token": "ib",
    }
    assert set(values) == set(SECRET_SETTINGS)
    env = {}
    for name, value in values.items():
        path = tmp_path / name
        path.write_text(value + ("\r\n" if name == "ocamba_token" else "\n"))
        env[f"GATEWAY_{name.upper()}_FILE"] = str(path)
    settings = Settings.from_env(env)
    assert {name: getattr(settings, name) for name in values} == values
    # Only the last newline goes; a file without one is taken as it is.
    (tmp_path / "two").write_text(GOOD + "\n\n")
    (tmp_path / "none").write_text(f"crm:{GOOD}")
    assert Settings.from_env({"GATEWAY_OMNEO_TOKEN_FILE": str(tmp_path / "two")}).omneo_token == (
        GOOD + "\n"
    )
    assert Settings.from_env({"GATEWAY_API_TOKENS_FILE": str(tmp_path / "none")}).api_tokens == (
        f"crm:{GOOD}"
    )
    # What is read is checked as the variable would be.
    (tmp_path / "short").write_text("short\n")
    with pytest.raises(ConfigError, match="GATEWAY_METRICS_TOKEN is 5 characters"):
        Settings.from_env({"GATEWAY_METRICS_TOKEN_FILE": str(tmp_path / "short")})
    # Settings that are no credential have no _FILE form.
    assert Settings.from_env({"GATEWAY_LOG_LEVEL_FILE": str(tmp_path / "short")}).log_level == (
        "INFO"
    )


def test_a_secret_file_error_names_the_variable_not_the_contents(tmp_path: Path) -> None:
    secret = tmp_path / "tokens"
    secret.write_text(f"crm:{GOOD}\n")
    both = {"GATEWAY_API_TOKENS": f"crm:{GOOD}", "GATEWAY_API_TOKENS_FILE": str(secret)}
    with pytest.raises(ConfigError) as error:
        Settings.from_env(both)
    assert str(error.value) == (
        "GATEWAY_API_TOKENS and GATEWAY_API_TOKENS_FILE are both set; set one of them"
    )
    # An empty variable is set too: which of the two was meant cannot be told.
    with pytest.raises(ConfigError, match="both set"):
        Settings.from_env({"GATEWAY_API_TOKENS": "", "GATEWAY_API_TOKENS_FILE": str(secret)})
    cases = {
        str(tmp_path / "missing"): "(No such file or directory)",
        str(tmp_path): "(Is a directory)",
        "": "GATEWAY_API_TOKENS_FILE is empty; it must name a file",
    }
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + GOOD.encode())
    cases[str(binary)] = "is not UTF-8 text"
    unreadable = tmp_path / "unreadable"
    unreadable.write_text(GOOD)
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        cases[str(unreadable)] = "(Permission denied)"
    for path, expected in cases.items():
        with pytest.raises(ConfigError) as error:
            Settings.from_env({"GATEWAY_API_TOKENS_FILE": path})
        message = str(error.value)
        assert message.startswith("GATEWAY_API_TOKENS_FILE"), message
        assert expected in message, message
        assert "\n" not in message and GOOD not in message, message
