"""The promotion lock: mutual exclusion between runs moving the aliases of one registered model.

MLflow has no compare-and-set on aliases, so the lock is built from registered-model tags:
each contender writes its own claim tag, waits long enough for any earlier claim to become
visible, and proceeds only if its claim is the oldest. Two racing runs therefore decide
one after the other.

A claim is taken over only when its owner is provably gone: a process of this host that no
longer exists, or a claim of another host whose lease (renewed every LEASE_S / 3 by a
thread of the owner while it lives) ran out. A living owner that is stopped (SIGSTOP, a
debugger) keeps its claim: contenders wait, then fail with one line. An owner whose claim
was taken over meanwhile finds out before it writes (`Claim.confirm`) and stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ferflow.errors import FerflowError
from ferflow.tracking.store import process_alive

log = logging.getLogger(__name__)

# How long a claim waits before reading the others: longer than one tag write takes to
# land, so any contender that stamped its claim earlier is visible by then.
CLAIM_SETTLE_S = 0.5
LOCK_PREFIX = "ferflow.promotion_claim."
# A claim of another host is the owner's while renewed within this many seconds; the owner
# renews it every LEASE_S / 3. (A process of this host is asked directly whether it lives.)
LEASE_S = 60.0


class LockTimeoutError(FerflowError, RuntimeError):
    """Another run held the promotion lock for longer than register.lock_timeout_s."""


class LockLostError(FerflowError, RuntimeError):
    """This run's claim was taken over (its lease ran out while it was stopped): it must not write."""


@dataclass(frozen=True)
class Owner:
    """Who holds a claim, read from its tag value "<claimed> <host> <pid> [<renewed>]"."""

    key: str
    claimed: float
    host: str
    pid: int | None
    renewed: float

    @classmethod
    def parse(cls, key: str, value: str) -> Owner | None:
        parts = value.split()
        try:
            claimed = float(parts[0])
            renewed = float(parts[3]) if len(parts) > 3 else claimed
        except (IndexError, ValueError):
            return None
        host = parts[1] if len(parts) > 1 else ""
        pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        return cls(key, claimed, host, pid, renewed)

    def gone(self, now: float) -> bool:
        """Provably gone: a dead process of this host, or a lease of another host run out."""
        if self.host == socket.gethostname() and self.pid is not None:
            return not process_alive(self.pid)
        return now - self.renewed > LEASE_S

    def describe(self, now: float) -> str:
        since = time.strftime("%H:%M:%S UTC", time.gmtime(self.claimed))
        return (
            f"held by process {self.pid} on {self.host} since {since} (lease renewed "
            f"{now - self.renewed:.0f} s ago)"
        )


def _stamp(claimed: float, renewed: float) -> str:
    return f"{claimed:.6f} {socket.gethostname()} {os.getpid()} {renewed:.6f}"


class Claim:
    """This process's claim while it holds the lock; a thread renews its lease."""

    def __init__(self, tracker: Any, name: str, key: str, claimed: float) -> None:
        self.tracker, self.name, self.key, self.claimed = tracker, name, key, claimed
        self.renewed = claimed  # when the lease was last written
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="ferflow-lock-lease", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
                if self.key in self.tracker.get_registered_model(self.name).tags:
                    now = time.time()
                    self.tracker.set_registered_model_tag(self.name, self.key, _stamp(self.claimed, now))
                    self.renewed = now

    def confirm(self) -> None:
        """Raise LockLostError unless this claim still stands: call right before writing."""
        tags = self.tracker.get_registered_model(self.name).tags
        owner = Owner.parse(self.key, tags.get(self.key, ""))
        lapsed = time.time() - self.renewed > LEASE_S  # others may have judged it gone
        if lapsed or owner is None or owner.claimed != float(f"{self.claimed:.6f}"):
            raise LockLostError(
                f"the promotion lock of {self.name!r} was taken over while this process was stopped "
                "(its lease ran out); nothing was moved by it. Check the aliases (`ferflow runs check`) "
                "and rerun"
            )


@contextlib.contextmanager
def promotion_lock(tracker: Any, name: str, timeout_s: float) -> Iterator[Claim]:
    """Mutual exclusion between runs promoting versions of `name`; yields the held `Claim`.

    Each contender writes its own tag `ferflow.promotion_claim.<token>` = "<wall-clock time>
    <host> <pid> <renewed>", sleeps CLAIM_SETTLE_S, then reads all claims: the oldest (time,
    token) goes ahead, the others withdraw and retry until `timeout_s`. Distinct tag keys mean
    no claim overwrites another; the settle wait means a claim stamped earlier but written
    slightly later is still seen. Claims whose owner is provably gone (`Owner.gone`) are
    removed.
    """
    token = uuid.uuid4().hex
    key = LOCK_PREFIX + token
    deadline = time.monotonic() + timeout_s
    while True:
        stamp = time.time()
        tracker.set_registered_model_tag(name, key, _stamp(stamp, stamp))
        time.sleep(CLAIM_SETTLE_S)
        claims = _live_claims(tracker, name)
        first = min(claims, key=lambda o: (o.claimed, o.key), default=None)
        if first is None or first.key == key:
            break
        tracker.delete_registered_model_tag(name, key)
        if time.monotonic() > deadline:
            raise LockTimeoutError(
                f"could not take the promotion lock of {name!r} within register.lock_timeout_s="
                f"{timeout_s:g} s: {first.describe(time.time())}. Wait for it and retry; if that "
                f"process is stuck, end it (`kill {first.pid}` on {first.host}), or delete the tag "
                f"`{first.key}` on the registered model, then retry"
            )
        time.sleep(random.uniform(0.1, 0.5))
    claim = Claim(tracker, name, key, stamp)
    claim._renewer.start()
    try:
        yield claim
    finally:
        claim._stop.set()
        tracker.delete_registered_model_tag(name, key)


def claims(tracker: Any, name: str) -> list[Owner]:
    """Every promotion claim on `name`, live or not (for `ferflow runs check`)."""
    tags = tracker.get_registered_model(name).tags
    found = (Owner.parse(key, value) for key, value in tags.items() if key.startswith(LOCK_PREFIX))
    return [owner for owner in found if owner is not None]


def _live_claims(tracker: Any, name: str) -> list[Owner]:
    now, live = time.time(), []
    for owner in claims(tracker, name):
        if owner.gone(now):
            log.warning("removing the promotion claim of process %s on %s: it is gone", owner.pid, owner.host)
            with contextlib.suppress(Exception):
                tracker.delete_registered_model_tag(name, owner.key)
        else:
            live.append(owner)
    return live
