"""The promotion lock: mutual exclusion between runs moving the aliases of one registered model.

MLflow has no compare-and-set on aliases, so the lock is built from registered-model tags:
each contender writes its own claim tag, waits long enough for any earlier claim to become
visible, and proceeds only if its claim is the oldest. Two racing runs therefore decide
one after the other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ferflow.errors import FerflowError
from ferflow.tracking.store import client, process_alive

log = logging.getLogger(__name__)

# How long a claim waits before reading the others: longer than one tag write takes to
# land, so any contender that stamped its claim earlier is visible by then.
CLAIM_SETTLE_S = 0.5
LOCK_PREFIX = "ferflow.promotion_claim."


class LockTimeoutError(FerflowError, RuntimeError):
    """Another run held the promotion lock for longer than register.lock_timeout_s."""


@contextlib.contextmanager
def promotion_lock(tracker: Any, name: str, timeout_s: float) -> Iterator[None]:
    """Mutual exclusion between runs promoting versions of `name`.

    Each contender writes its own tag `ferflow.promotion_claim.<token>` = "<wall-clock time>
    <host> <pid>", sleeps CLAIM_SETTLE_S, then reads all claims: the oldest (time, token)
    goes ahead, the others withdraw and retry. Distinct tag keys mean no claim overwrites
    another; the settle wait means a claim stamped earlier but written slightly later is
    still seen. A crashed holder's claim is removed as soon as a contender on the same host
    sees its process is gone; a claim from another host is ignored once older than
    `timeout_s`.
    """
    token = uuid.uuid4().hex
    key = LOCK_PREFIX + token
    deadline = time.monotonic() + timeout_s
    while True:
        stamp = time.time()
        tracker.set_registered_model_tag(name, key, f"{stamp:.6f} {socket.gethostname()} {os.getpid()}")
        time.sleep(CLAIM_SETTLE_S)
        claims = _live_claims(tracker, name, timeout_s)
        if min(claims, default=(stamp, token)) == (stamp, token):
            break
        tracker.delete_registered_model_tag(name, key)
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"could not take the promotion lock of {name!r} within register.lock_timeout_s="
                f"{timeout_s}: another run is promoting; retry, or delete stale "
                f"`{LOCK_PREFIX}*` tags on the registered model"
            )
        time.sleep(random.uniform(0.1, 0.5))
    try:
        yield
    finally:
        tracker.delete_registered_model_tag(name, key)


@contextlib.contextmanager
def locked(uri: str, name: str, timeout_s: float) -> Iterator[None]:
    """`promotion_lock` on the registry at `uri`."""
    with promotion_lock(client(uri), name, timeout_s):
        yield


def _live_claims(tracker: Any, name: str, timeout_s: float) -> list[tuple[float, str]]:
    tags = tracker.get_registered_model(name).tags
    now, here = time.time(), socket.gethostname()
    claims = []
    for key, value in tags.items():
        if not key.startswith(LOCK_PREFIX):
            continue
        stamp_text, _, owner = value.partition(" ")
        host, _, pid = owner.partition(" ")
        try:
            stamp = float(stamp_text)
        except ValueError:
            continue
        if host == here and pid.isdigit() and not process_alive(int(pid)):
            log.warning("removing the promotion claim of process %s on %s: it is gone", pid, host)
            with contextlib.suppress(Exception):
                tracker.delete_registered_model_tag(name, key)
            continue
        if now - stamp < timeout_s:
            claims.append((stamp, key.removeprefix(LOCK_PREFIX)))
    return claims
