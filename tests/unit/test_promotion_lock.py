"""Issue #24, item 3: the promotion lock is taken over only when its owner is provably gone.

A stopped (SIGSTOP) but living owner keeps it: a second `ferflow promote` waits, then fails
with one line, and only the owner's move happens once it continues.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ferflow.commands import models as model_commands
from ferflow.tracking import lock
from tests.conftest import REPO, small_params, sqlite_registry

mlflow = pytest.importorskip("mlflow")

NAME = "fer-lock"
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
    "TF_CPP_MIN_LOG_LEVEL": "3",
}
# The owner: the real CLI promoting version 3, which stops itself inside the lock right
# before it moves an alias (as a SIGSTOP from outside would find it).
STOPPED_OWNER = """
import os, signal, sys
from ferflow.tracking.registry import Registry
move = Registry.move_aliases
def stop_then_move(*args, **kwargs):
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
    return move(*args, **kwargs)
Registry.move_aliases = stop_then_move
from ferflow.cli import main
argv = ["promote", "--version", "3", "--set", "register.model_name=fer-lock", "--params", sys.argv[1]]
sys.exit(main(argv))
"""


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A SQLite registry with three versions of fer-lock, version 2 champion."""
    return sqlite_registry(tmp_path, monkeypatch, NAME, 3)


def champion(client) -> str:
    return str(client.get_model_version_by_alias(NAME, "champion").version)


@pytest.mark.slow  # two CLI processes on a fresh SQLite registry: 35-50 s on 2 busy cores
def test_a_stopped_owner_keeps_the_lock_and_the_second_promote_fails_in_one_line(registry, tmp_path):
    uri, client = registry
    env = {**ENV, "MLFLOW_TRACKING_URI": uri}
    # given `ferflow promote --version 3` stopped (SIGSTOP) while it holds the lock
    owner = subprocess.Popen(
        [sys.executable, "-c", STOPPED_OWNER, str(REPO / "params.yaml")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().strip() == "holding"
        deadline = time.monotonic() + 30
        while Path(f"/proc/{owner.pid}/stat").read_text().split()[2] != "T":  # stopped
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # when a second promote wants version 1 (lock timeout 3 s)
        started = time.monotonic()
        second = subprocess.run(
            [
                *(sys.executable, "-m", "ferflow.cli", "promote", "--version", "1"),
                *("--set", f"register.model_name={NAME}", "--set", "register.lock_timeout_s=3"),
                *("--params", str(REPO / "params.yaml")),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        waited = time.monotonic() - started
        # then it waited, failed with one line naming the owner, and moved nothing
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"held by process {owner.pid} on {socket.gethostname()}" in lines[0]
        assert f"kill {owner.pid}" in lines[0]
        assert waited >= 3
        assert champion(client) == "2"
        # and once the owner continues, its move (and only its) happens
        owner.send_signal(signal.SIGCONT)
        _, owner_err = owner.communicate(timeout=120)
    finally:
        owner.kill()
    assert owner.returncode == 0, owner_err
    assert champion(client) == "3"
    assert str(client.get_model_version_by_alias(NAME, "previous-champion").version) == "2"
    assert not [k for k in client.get_registered_model(NAME).tags if k.startswith(lock.LOCK_PREFIX)]


def _foreign_claim(client, renewed: float) -> str:
    key = f"{lock.LOCK_PREFIX}elsewhere"
    value = f"{renewed - 5:.6f} other-host 4242 {renewed:.6f}"
    client.set_registered_model_tag(NAME, key, value)
    return key


def test_a_claim_of_another_host_whose_lease_ran_out_is_taken_over(registry):
    _, client = registry
    # given a claim of another host not renewed for longer than the lease
    key = _foreign_claim(client, time.time() - 2 * lock.LEASE_S)
    # when a version is promoted
    model_commands.promote(small_params(f"register.model_name={NAME}", "register.lock_timeout_s=30"), "3")
    # then the dead claim is gone and the promotion happened
    assert key not in client.get_registered_model(NAME).tags
    assert champion(client) == "3"


def test_a_claim_of_another_host_with_a_live_lease_is_waited_for(registry):
    _, client = registry
    # given a claim of another host renewed a moment ago
    _foreign_claim(client, time.time())
    # when a version is promoted with a 1 s lock timeout
    with pytest.raises(lock.LockTimeoutError, match="held by process 4242 on other-host"):
        model_commands.promote(small_params(f"register.model_name={NAME}", "register.lock_timeout_s=1"), "3")
    # then nothing moved
    assert champion(client) == "2"


def test_the_owner_renews_its_lease_while_it_holds_the_lock(registry, monkeypatch):
    _, client = registry
    monkeypatch.setattr(lock, "LEASE_S", 0.6)  # renewed every 0.2 s

    with lock.promotion_lock(client, NAME, 10) as claim:
        first = lock.claims(client, NAME)[0].renewed
        time.sleep(0.7)
        later = lock.claims(client, NAME)[0].renewed
        claim.confirm()  # still its own

    assert later > first


def test_an_owner_whose_claim_was_taken_over_does_not_write(registry):
    _, client = registry

    with lock.promotion_lock(client, NAME, 10) as claim:
        # its lease ran out while it was stopped, and a contender removed the claim
        client.delete_registered_model_tag(NAME, claim.key)
        with pytest.raises(lock.LockLostError, match="taken over"):
            claim.confirm()
