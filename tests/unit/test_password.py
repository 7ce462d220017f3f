"""The broker password comes from the environment or a mounted file, never reaching tasks."""

from __future__ import annotations

import pytest

from workqueue.brokers import password_from_env
from workqueue.errors import ConfigError
from workqueue.handlers import CommandHandler
from workqueue.message import Item


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv("WORKQUEUE_BROKER_PASSWORD", raising=False)
    monkeypatch.delenv("WORKQUEUE_BROKER_PASSWORD_FILE", raising=False)


def test_file_is_read_and_its_newline_dropped(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("s3 cret\n")
    monkeypatch.setenv("WORKQUEUE_BROKER_PASSWORD_FILE", str(secret))
    assert password_from_env() == "s3 cret"


def test_variable_wins_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKQUEUE_BROKER_PASSWORD", "direct")
    monkeypatch.setenv("WORKQUEUE_BROKER_PASSWORD_FILE", str(tmp_path / "missing"))
    assert password_from_env() == "direct"


def test_neither_means_no_password():
    assert password_from_env() is None


def test_unreadable_file_says_which_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKQUEUE_BROKER_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"missing \(WORKQUEUE_BROKER_PASSWORD_FILE\).*mount"):
        password_from_env()


def test_the_task_command_does_not_see_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKQUEUE_BROKER_PASSWORD", "hunter2")
    monkeypatch.setenv("WORKQUEUE_BROKER_PASSWORD_FILE", "/run/secret")
    seen = tmp_path / "env"
    handler = CommandHandler(["sh", "-c", f'env > {seen}'])
    handler.run(Item("00000001", "task", 1))
    text = seen.read_text()
    assert "WORKQUEUE_PAYLOAD=task" in text
    assert "hunter2" not in text and "/run/secret" not in text
