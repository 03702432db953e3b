"""The leader-election loop: read the Lease, let `leasing.decide` choose, write, repeat.

While standing by it retries every retry period (jittered). Once leading it renews every retry
period; when no renewal has succeeded for the renew deadline it stops leading at once (the
sweeper is cancelled before the lease can expire for others). On shutdown the holder releases the
lease (empty holder, 1 s duration) so a standby takes over without waiting for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from jibri_pod_controller.adapters.kube import Cluster, Conflict, KubeError, NotFound, StoredLease
from jibri_pod_controller.adapters.metrics import Metrics
from jibri_pod_controller.core.config import LeaseTimings
from jibri_pod_controller.core.leasing import Observation, Step, decide, released

log = logging.getLogger("jibri_pod_controller.lease")


class Elector:
    def __init__(
        self,
        *,
        cluster: Cluster,
        metrics: Metrics,
        name: str,
        identity: str,
        timings: LeaseTimings,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._cluster = cluster
        self._metrics = metrics
        self._name = name
        self._identity = identity
        self._timings = timings
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._jitter = jitter
        self._observed: Observation | None = None
        self._held: StoredLease | None = None
        self._resigning = False
        self.leading = asyncio.Event()

    def resign(self) -> None:
        """Stop leading at the next renewal, give the Lease up, and stand back for a while.

        For a leader that cannot do the leader's work (its sweeper keeps failing): a standby
        takes over at once instead of after the lease expires, and this replica waits two
        lease durations before campaigning again, so the standby gets the Lease.
        """
        if self.leading.is_set():
            self._resigning = True

    async def _try_acquire_or_renew(self) -> bool:
        try:
            stored = await self._cluster.get_lease(self._name)
            decision = decide(
                identity=self._identity,
                current=stored.record if stored else None,
                previous=self._observed,
                now=self._monotonic(),
                wall_now=self._wall_clock(),
                lease_duration=self._timings.duration,
            )
            self._observed = decision.observation
            if decision.step is Step.STAND_BY or decision.record is None:
                self._held = None
                return False
            if decision.step is Step.CREATE:
                self._held = await self._cluster.create_lease(self._name, decision.record)
            else:
                assert stored is not None
                self._held = await self._cluster.update_lease(
                    self._name, decision.record, resource_version=stored.resource_version
                )
            self._observed = Observation(self._held.record, self._monotonic())
            return True
        except Conflict:
            return False  # another replica wrote first; look again next period
        except Exception as exc:  # an API error, or a record it cannot read: never the process
            kind = exc.kind if isinstance(exc, KubeError) else "unexpected"
            self._metrics.api_errors.labels(operation="lease", kind=kind).inc()
            log.warning("lease attempt failed", extra={"lease": self._name, "error": repr(exc)})
            return False

    async def _pause(self) -> None:
        """Wait a (jittered) retry period, or less if the observed lease expires sooner.

        Expiry is still judged from the local time the record was seen to change; waking at
        that moment rather than at the next tick of the retry grid takes up to a retry period
        off a failover.
        """
        period = self._timings.retry_period
        delay = period + period * 0.2 * self._jitter()
        observed = self._observed
        if observed is not None and observed.record.holder not in ("", self._identity):
            expiry = observed.changed_at + observed.record.lease_duration_seconds
            delay = min(delay, max(0.0, expiry - self._monotonic()) + 0.01)
        await self._sleep(delay)

    async def run(
        self,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
    ) -> None:
        """Campaign forever (until cancelled); call back when leadership starts and stops."""
        try:
            while True:
                while not await self._try_acquire_or_renew():
                    await self._pause()
                self._become_leader(on_started)
                await self._renew_until_lost()
                if self._resigning:
                    self._stop_leading(on_stopped, "resigned: this replica cannot sweep")
                    await self.release()
                    self._resigning = False
                    await self._sleep(2 * self._timings.duration)
                    continue
                self._stop_leading(on_stopped, "renew deadline passed or lease lost")
        finally:
            if self.leading.is_set():
                self._stop_leading(on_stopped, "shutting down")

    async def _renew_until_lost(self) -> None:
        """Renew every retry period; return once renewal failed for the renew deadline."""
        deadline = self._timings.renew_deadline
        last_renew = self._monotonic()
        while True:
            await self._sleep(self._timings.retry_period)
            if self._resigning:
                return
            remaining = deadline - (self._monotonic() - last_renew)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # comes as the renewal ends, and a stopped elector would go on renewing.
            renewed = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.1, remaining)):
                    renewed = await self._try_acquire_or_renew()
            if renewed:
                last_renew = self._monotonic()
            elif self._lost_to_other() or self._monotonic() - last_renew >= deadline:
                return

    def _lost_to_other(self) -> bool:
        record = self._observed.record if self._observed else None
        return record is not None and record.holder not in ("", self._identity)

    def _become_leader(self, on_started: Callable[[], None]) -> None:
        self.leading.set()
        self._metrics.leader.set(1)
        self._metrics.leader_transitions.labels(direction="started").inc()
        log.info("started leading", extra={"lease": self._name, "identity": self._identity})
        on_started()

    def _stop_leading(self, on_stopped: Callable[[], None], why: str) -> None:
        self.leading.clear()
        self._metrics.leader.set(0)
        self._metrics.leader_transitions.labels(direction="stopped").inc()
        log.warning("stopped leading", extra={"lease": self._name, "why": why})
        on_stopped()

    async def release(self) -> None:
        """Give the lease up if this replica holds it (clean shutdown)."""
        held = self._held
        if held is None or held.record.holder != self._identity:
            return
        try:
            await self._cluster.update_lease(
                self._name,
                released(held.record, self._wall_clock()),
                resource_version=held.resource_version,
            )
            log.info("released lease", extra={"lease": self._name})
        except (Conflict, NotFound):
            pass  # someone else holds it now, or it is gone: nothing to release
        except KubeError as exc:
            log.warning("could not release lease", extra={"lease": self._name, "error": str(exc)})
        finally:
            self._held = None
