"""The bundled brokers' container commands, as the chart renders them, run here with the
password file a Secret would mount: any password works, and a trailing newline in an
existingSecret is dropped as the workers drop it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import redis

from render import BROKER, by_kind_name, render_chart
from workqueue.brokers import password_from_env
from workqueue.local import free_port, wait_for_port

AUTH_DIR = "/var/run/secrets/workqueue"
PASSWORDS = ["plain", "with space", "hash # sign", 'quote " and \\ backslash', "ünï'cödé\n"]


def broker_command(broker: str) -> str:
    sts = by_kind_name(render_chart({"broker": {"type": broker}}))[BROKER]
    return sts["spec"]["template"]["spec"]["containers"][0]["command"][2]


def password_file(tmp_path, password: str):
    auth = tmp_path / "auth"
    auth.mkdir()
    (auth / "password").write_text(password)
    return auth


@pytest.mark.parametrize("password", PASSWORDS)
def test_redis_takes_any_password_from_the_mounted_secret(tmp_path, password):
    auth = password_file(tmp_path, password)
    (tmp_path / "data").mkdir()
    port = free_port()
    command = (broker_command("redis").replace(AUTH_DIR, str(auth))
               .replace("/tmp/redis.conf", str(tmp_path / "redis.conf"))
               .replace("--dir /data", f"--dir {tmp_path / 'data'}")
               + f" --port {port} --bind 127.0.0.1")
    server = subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for_port(server, port, 20, "redis-server")
        # The workers read the same file, dropping one trailing newline.
        os.environ["WORKQUEUE_BROKER_PASSWORD_FILE"] = str(auth / "password")
        client = redis.Redis(port=port, password=password_from_env())
        assert client.ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong").ping()
    finally:
        os.environ.pop("WORKQUEUE_BROKER_PASSWORD_FILE", None)
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("password", PASSWORDS)
def test_rabbitmq_gets_the_password_the_workers_use(tmp_path, password):
    # The image's entrypoint, replaced by one that shows what the server would be given
    auth = password_file(tmp_path, password)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    entry = bin_dir / "docker-entrypoint.sh"
    entry.write_text('#!/bin/sh\nprintf "%s" "$RABBITMQ_DEFAULT_PASS" > "$OUT"\n')
    entry.chmod(0o755)
    out = tmp_path / "seen"
    result = subprocess.run(["sh", "-c", broker_command("rabbitmq").replace(AUTH_DIR, str(auth))],
                            env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(out)},
                            timeout=30)
    assert result.returncode == 0
    assert shutil.which("od")
    assert out.read_text() == password.removesuffix("\n")
