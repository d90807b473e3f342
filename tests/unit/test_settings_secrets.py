"""`SG_ENV=prod` refuses weak, default and missing secrets in every URL setting, naming the
setting and never the secret; `env=dev` accepts them all (tests and `make up` run as dev)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from streamguard.settings import KNOWN_DEFAULT_SECRETS, Settings, url_secret_problem

ROOT = Path(__file__).resolve().parents[2]
STRONG = "Xq7-vR2p9LmZ4tWk"  # 16 characters, no dictionary word
STRONG_URLS: dict[str, Any] = {
    "db": {"url": f"postgresql+psycopg://sg:{STRONG}@db:5432/streamguard"},
    "redis": {"url": f"redis://:{STRONG}@redis:6379/0"},
    "broker": {"url": f"redis://default:{STRONG}@redis:6379/1"},
    "storage": {"uri": "s3://bucket/prefix", "s3_endpoint_url": "https://minio.internal:9000"},
}


def prod(**sections: Any) -> Settings:
    return Settings(env="prod", **(STRONG_URLS | sections))


def refusal(**sections: Any) -> str:
    with pytest.raises(ValidationError) as info:
        prod(**sections)
    return str(info.value)


def test_strong_secrets_are_accepted_in_prod() -> None:
    settings = prod()
    assert settings.env == "prod" and settings.redis.url and settings.broker.url


@pytest.mark.parametrize("db_url", [
    "sqlite:////data/streamguard.db",  # embedded: no server, no password
    f"postgresql://sg:{STRONG}@db/streamguard?sslmode=require",
    f"postgresql://sg@db/streamguard?password={STRONG}",  # libpq's query form
])
def test_other_acceptable_database_urls(db_url: str) -> None:
    assert prod(db={"url": db_url}).db.url == db_url


@pytest.mark.parametrize("broker_url", [
    None, f"amqp://sg:{STRONG}@rabbit:5672//", f"rediss://:{STRONG}@redis:6380/1"])
def test_other_acceptable_broker_urls(broker_url: str | None) -> None:
    assert prod(broker={"url": broker_url}).broker.url == broker_url


@pytest.mark.parametrize("word", sorted(KNOWN_DEFAULT_SECRETS))
@pytest.mark.parametrize("setting", ["db.url", "redis.url", "broker.url"])
def test_each_known_default_is_refused_naming_the_setting(word: str, setting: str) -> None:
    section = setting.split(".")[0]
    url = {"db": f"postgresql://sg:{word}@db/streamguard", "redis": f"redis://:{word}@r:6379/0",
           "broker": f"redis://:{word}@r:6379/1"}[section]
    message = refusal(**{section: {"url": url}})
    assert f"{setting}: uses a well-known default password" in message
    assert "openssl rand" in message  # says what would be accepted
    assert f":{word}@" not in message and "input_value" not in message


@pytest.mark.parametrize("password", [
    "Password1234", "streamguard-local", "STREAMGUARD2024!", "changethis!!!!", "minioadmin123"])
def test_defaults_with_case_or_digits_or_symbols_added_are_refused(password: str) -> None:
    assert url_secret_problem(f"postgresql://sg:{password}@db/x") == \
        "uses a well-known default password"


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql://sg@db/streamguard", "has no password (postgresql servers without one"),
    ("postgresql+psycopg://db/streamguard", "has no password"),
    ("postgresql://sg:@db/streamguard", "has an empty password"),
    ("postgresql://sg:Zk4%40q@db/streamguard", "shorter than 12 characters"),
    ("postgresql://longusername12:LongUserName12@db/x", "equal to its user name"),
    ("postgresql://sg:zzzzzzzzzzzzzzzz@db/x", "one repeated character"),
    ("postgresql://sg@db/x?password=", "has an empty password"),
    ("redis://redis:6379/0", "has no password (redis servers without one"),
    ("redis://default@redis:6379/0", "has no password"),
    ("amqp://rabbit:5672//", "has no password"),  # kombu would log in as guest:guest
    ("amqp://guest:guest@rabbit:5672//", "well-known default"),
])
def test_weak_or_missing_password_reasons(url: str, reason: str) -> None:
    problem = url_secret_problem(url)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(("section", "value", "setting"), [
    ("db", {"url": "postgresql://sg@db/streamguard"}, "db.url"),
    ("redis", {"url": "redis://redis:6379/0"}, "redis.url"),
    ("broker", {"url": "redis://redis:6379/1"}, "broker.url"),
    ("storage", {"uri": "s3://b/p", "s3_endpoint_url": "http://admin:short@minio:9000"},
     "storage.s3_endpoint_url"),
])
def test_each_url_setting_is_checked(section: str, value: dict[str, str], setting: str) -> None:
    assert f"{setting}: " in refusal(**{section: value})


def test_every_problem_is_listed_at_once_without_any_secret() -> None:
    message = refusal(db={"url": "postgresql://sg:hunter2@db/x"},
                      redis={"url": "redis://redis:6379/0"},
                      broker={"url": "redis://:changeme@redis:6379/1"})
    assert "db.url: has a password shorter than 12 characters" in message
    assert "redis.url: has no password" in message
    assert "broker.url: uses a well-known default password" in message
    assert "hunter2" not in message and "changeme" not in message


def test_compose_defaults_are_refused_in_prod(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose.yml's fallbacks (`${POSTGRES_PASSWORD:-streamguard-local}`, a Redis without
    a password) are for trying it out; with SG_ENV=prod they must not start."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["api"]["environment"]
    for key in [k for k in os.environ if k.startswith("SG_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("SG_"):
            monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)))
    with pytest.raises(ValidationError) as info:
        Settings()
    message = str(info.value)
    assert "db.url: " in message
    if "redis://redis" in str(env.get("SG_REDIS__URL")):  # no password in the compose file
        assert "redis.url: has no password" in message
    assert "streamguard-local" not in message


def test_dev_accepts_anything() -> None:
    settings = Settings(env="dev", db={"url": "postgresql://postgres:postgres@127.0.0.1/x"},
                        redis={"url": "redis://127.0.0.1:6379/0"},
                        broker={"url": "amqp://guest:guest@127.0.0.1//"})
    assert settings.env == "dev"


@pytest.mark.parametrize(("trackers", "problem"), [
    ({"mlflow_password": "password1"}, "trackers.mlflow_password: uses a well-known default"),
    ({"mlflow_token": "abc"}, "trackers.mlflow_token: has a password shorter than 12"),
    ({"mlflow_username": "mlflow-user-9x", "mlflow_password": "MLFLOW-USER-9X"},
     "trackers.mlflow_password: has a password equal to its user name"),
    ({"mlflow_uri": "https://sg:changeme@mlflow.internal"},
     "trackers.mlflow_uri: uses a well-known default password"),
])
def test_tracker_secrets_are_checked_in_prod(trackers: dict[str, str], problem: str) -> None:
    message = refusal(trackers=trackers)
    assert problem in message
    for secret in trackers.values():
        if secret not in ("mlflow-user-9x",):
            assert secret not in message  # the setting is named, never its value


def test_strong_tracker_secrets_are_accepted_and_hidden() -> None:
    strong = "Tz8-kQ4n2WpX7mVc"
    settings = prod(trackers={"mlflow_uri": "https://mlflow.internal",
                              "mlflow_username": "sg", "mlflow_password": strong})
    assert settings.trackers.mlflow_password is not None
    assert settings.trackers.mlflow_password.get_secret_value() == strong
    assert strong not in repr(settings) and strong not in str(settings.model_dump())
