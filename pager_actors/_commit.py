"""Commit before effects: a command's new state and its outbox rows reach the store
before any port is called and before its future resolves.

Two committers share one interface:
- `InlineCommitter`, for a store whose commit is cheap (memory): the service
  actor commits in its own thread.
- `StoreWriter`, a Pykka actor for a store whose commit costs a disk flush
  (SQLite): it drains every commit queued by any service actor and writes them
  in one transaction (group commit), then dispatches their effects and
  resolves their futures, in queue order.
Both also record delivery results (delivered / failed) from the adapter actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import pykka

from pager_actors._adapter_actors import Dispatcher
from pager_actors._future import CommandFuture
from pager_actors._inbox import Envelope, ServiceInbox
from pager_actors._work import WorkTracker
from pager_actors.domain import Effect
from pager_actors.logs import get_logger
from pager_actors.ports import (
    DeliveryResult,
    StateStore,
    StoreError,
    Transition,
    TransitionRefusedError,
)

log = get_logger("pager_actors.store")

MAX_BATCH = 2000


class Commit(NamedTuple):
    """One processed command: what to store, what to do once stored, whom to answer."""

    service_id: str
    transition: Transition | None  # None: the command changed nothing
    effects: tuple[Effect, ...]
    future: CommandFuture[Any]
    value: Any


@dataclass(frozen=True, slots=True)
class Barrier:
    """Reached once every commit queued before it is settled; then `then()` is called.

    `service_id` names the service being reloaded (its refusals end there), or is
    empty for a barrier that only waits (a graceful `Pager.abandon`).
    """

    service_id: str
    then: Any  # Callable[[str], None]; kept loose so the dataclass stays slotted and frozen


@dataclass(frozen=True, slots=True)
class Probe:
    """Check whether the store takes writes again (asked by the readiness check)."""


class StoreHealth:
    """Why the store refuses writes (disk full...), or None. Only the store writer sets it.

    `probing` is set by whoever asks for a probe and cleared by the writer once
    it ran, so that at most one probe is ever queued.
    """

    __slots__ = ("probing", "problem")

    def __init__(self) -> None:
        self.problem: str | None = None
        self.probing = False


class InlineCommitter:
    def __init__(self, store: StateStore, dispatcher: Dispatcher, work: WorkTracker) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._work = work

    def submit(self, commit: Commit) -> None:
        """Commit in the caller's thread; a store error propagates to it (nothing applied)."""
        if commit.transition is not None:
            self._store.commit((commit.transition,))
        self._dispatcher.dispatch(commit.effects, settled=1)
        commit.future.set(commit.value)

    def settle(self, result: DeliveryResult) -> None:
        try:
            self._store.commit((), (result,))
        finally:
            self._work.end()

    def barrier(self, barrier: Barrier) -> None:
        barrier.then(barrier.service_id)


class StoreWriter(pykka.ThreadingActor):
    """Group commit: one transaction for everything queued since the last one."""

    @staticmethod
    def _create_actor_inbox() -> ServiceInbox:
        return ServiceInbox()

    MAX_CARRIED = 100_000

    def __init__(self, store: StateStore, dispatcher: Dispatcher, work: WorkTracker,
                 on_lost_sync: Any, health: StoreHealth) -> None:
        super().__init__()
        self._carried: list[DeliveryResult] = []
        self._health = health
        self._store = store
        self._dispatcher = dispatcher
        self._work = work
        self._on_lost_sync = on_lost_sync  # Callable[[str], None]: the registry reloads it
        # Services whose actor's state is ahead of the store (a commit of theirs failed):
        # every commit of theirs fails until the registry's reload barrier passes, since it
        # was decided on a state the store never took, even one that changes nothing.
        self._diverged: set[str] = set()

    def on_stop(self) -> None:
        """Whatever arrives after the stop request is refused, not silently dropped."""
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        inbox.close(self._refuse)

    def _refuse(self, left: list[Any]) -> None:
        for envelope in left:
            message = envelope.message
            if isinstance(message, Commit):
                message.future.fail(StoreError("the store writer stopped before this commit"))
                self._work.end()
            elif isinstance(message, DeliveryResult):
                self._work.end()  # the row stays pending: it is sent again at the next start
            elif envelope.reply_to is not None:
                envelope.reply_to.set(None)

    def on_receive(self, message: Any) -> None:
        batch, stop = [message], None
        inbox = self.actor_inbox
        assert isinstance(inbox, ServiceInbox)
        for envelope in inbox.drain(MAX_BATCH):
            if envelope.reply_to is not None:  # pykka's stop request: after this batch
                stop = envelope
                break
            batch.append(envelope.message)
        self._write(batch)
        if stop is not None:
            stop.reply_to.set(self._handle_receive(stop.message))

    def _write(self, batch: list[Any]) -> None:
        """Commit, then release effects and answers. Never raises: the writer must not die."""
        commits = [m for m in batch if isinstance(m, Commit)]
        results = [m for m in batch if isinstance(m, DeliveryResult)]
        carried, self._carried = self._carried, []
        failed, recorded = self._commit(commits, carried + results)
        for commit in commits:
            error = failed.get(commit.service_id)
            try:
                if error is None:
                    self._dispatcher.dispatch(commit.effects, settled=1)
                    commit.future.set(commit.value)
                else:
                    commit.future.fail(error)
                    self._work.end()
            except Exception:
                log.exception("commit_answer_failed", service=commit.service_id)
        if not recorded:  # keep them for the next batch, so no row stays pending for nothing
            self._carried = (carried + results)[-self.MAX_CARRIED:]
        self._work.end(len(results))
        for message in batch:
            if isinstance(message, Probe):
                self._probe()
            elif isinstance(message, Barrier):
                self._diverged.discard(message.service_id)  # the service's old actor is gone
                try:
                    message.then(message.service_id)
                except Exception:
                    log.exception("barrier_callback_failed", service=message.service_id)

    def _probe(self) -> None:
        health = self._health
        try:
            if health.problem is not None:
                self._store.probe()
                log.warning("store_writable_again")
                health.problem = None
        except Exception as error:
            health.problem = str(error) if isinstance(error, StoreError) else repr(error)
        finally:
            health.probing = False

    def _commit(self, commits: list[Commit], results: list[DeliveryResult]
                ) -> tuple[dict[str, StoreError], bool]:
        """Write the batch; a transition the store refuses is dropped and the rest retried.

        Returns the services whose commits failed, with the error to report,
        and whether the delivery results were recorded. A refused transition
        fails its own service's commits only; a store that refuses every
        write (disk full) fails the batch, with an error that names no service.
        """
        failed: dict[str, StoreError] = {
            c.service_id: TransitionRefusedError(
                c.service_id, "an earlier command's commit failed; the service is being "
                "reloaded from the store: send the command again")
            for c in commits if c.service_id in self._diverged}
        while True:
            transitions = [c.transition for c in commits
                           if c.transition is not None and c.service_id not in failed]
            if not transitions and not results:
                return failed, True
            try:
                self._store.commit(transitions, results)
                self._health.problem = None
                return failed, True
            except TransitionRefusedError as error:
                batch = {t.state.service_id for t in transitions}
                # A lost shard lease names every service of the batch it refuses, so that
                # the batch is retried once without all of them.
                refused = [sid for sid in getattr(error, "service_ids", (error.service_id,))
                           if sid in batch and sid not in failed]
                if refused:
                    for service_id in refused:
                        log.error("commit_refused", service=service_id, error=str(error))
                        failed[service_id] = error
                        self._lost_sync(service_id)
                    continue
                # A store naming a service that is not in the batch is broken: give up.
                problem = StoreError("the store refused a transition it was not given")
            except StoreError as error:  # the store refuses writes: this batch fails
                problem = error
            except Exception as error:
                problem = StoreError(f"commit failed: {type(error).__name__}")
            self._fail_batch(commits, failed, problem, len(transitions), len(results))
            return failed, False

    def _fail_batch(self, commits: list[Commit], failed: dict[str, StoreError],
                    problem: StoreError, transitions: int, deliveries: int) -> None:
        self._health.problem = str(problem)
        log.error("commit_failed", transitions=transitions, deliveries=deliveries,
                  error=str(problem))
        already = set(failed)
        for commit in commits:
            failed.setdefault(commit.service_id, problem)
        # Any service with a change in the batch, whatever came before it there (a no-op
        # status read often does), is now ahead of the store: reload it.
        for service_id in {c.service_id for c in commits if c.transition is not None} - already:
            self._lost_sync(service_id)

    def _lost_sync(self, service_id: str) -> None:
        self._diverged.add(service_id)
        self._on_lost_sync(service_id)


class GroupCommitter:
    """What service and adapter actors hold: it queues work for the StoreWriter."""

    def __init__(self, writer: pykka.ActorRef[StoreWriter]) -> None:
        self._inbox: ServiceInbox = writer.actor_inbox  # type: ignore[assignment]

    def submit(self, commit: Commit) -> None:
        self._inbox.put(Envelope(commit))

    def settle(self, result: DeliveryResult) -> None:
        self._inbox.put(Envelope(result))

    def barrier(self, barrier: Barrier) -> None:
        self._inbox.put(Envelope(barrier))

    def probe(self) -> None:
        self._inbox.put(Envelope(Probe()))


Committer = InlineCommitter | GroupCommitter


class LateCallback:
    """A callback whose target is set after it is handed out (breaks a start-order cycle)."""

    def __init__(self) -> None:
        self.target: Any = None

    def __call__(self, *args: Any) -> None:
        if self.target is not None:
            self.target(*args)
