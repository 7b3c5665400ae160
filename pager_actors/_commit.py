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
from typing import Any

import pykka
import structlog

from pager_actors._adapter_actors import Dispatcher
from pager_actors._future import CommandFuture
from pager_actors._inbox import Envelope, ServiceInbox
from pager_actors._work import WorkTracker
from pager_actors.domain import Effect
from pager_actors.ports import (
    DeliveryResult,
    StateStore,
    StoreError,
    Transition,
    VersionConflictError,
)

log = structlog.get_logger("pager_actors.store")

MAX_BATCH = 2000


@dataclass(frozen=True, slots=True)
class Commit:
    """One processed command: what to store, what to do once stored, whom to answer."""

    service_id: str
    transition: Transition | None  # None: the command changed nothing
    effects: tuple[Effect, ...]
    future: CommandFuture[Any]
    value: Any


@dataclass(frozen=True, slots=True)
class Barrier:
    """Reached once every commit queued before it is settled; then `then()` is called."""

    service_id: str
    then: Any  # Callable[[str], None]; kept loose so the dataclass stays slotted and frozen


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
                 on_lost_sync: Any) -> None:
        super().__init__()
        self._carried: list[DeliveryResult] = []
        self._store = store
        self._dispatcher = dispatcher
        self._work = work
        self._on_lost_sync = on_lost_sync  # Callable[[str], None]: the registry reloads it

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
            if isinstance(message, Barrier):
                try:
                    message.then(message.service_id)
                except Exception:
                    log.exception("barrier_callback_failed", service=message.service_id)

    def _commit(self, commits: list[Commit], results: list[DeliveryResult]
                ) -> tuple[dict[str, StoreError], bool]:
        """Write the batch; on a conflict drop that service's commits and try the rest.

        Returns the services whose commits failed, with the error to report,
        and whether the delivery results were recorded.
        """
        failed: dict[str, StoreError] = {}
        while True:
            transitions = [c.transition for c in commits
                           if c.transition is not None and c.service_id not in failed]
            if not transitions and not results:
                return failed, True
            try:
                self._store.commit(transitions, results)
                return failed, True
            except VersionConflictError as error:
                log.error("commit_conflict", service=error.service_id, error=str(error))
                failed[error.service_id] = error
                self._on_lost_sync(error.service_id)
            except Exception as error:  # any failure of the store fails this batch only
                store_error = error if isinstance(error, StoreError) else StoreError(
                    f"commit failed: {error!r}")
                log.error("commit_failed", transitions=len(transitions),
                          deliveries=len(results), error=str(store_error))
                for commit in commits:
                    if commit.service_id not in failed:
                        failed[commit.service_id] = store_error
                        if commit.transition is not None:
                            self._on_lost_sync(commit.service_id)
                return failed, False


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


Committer = InlineCommitter | GroupCommitter


class LateCallback:
    """A callback whose target is set after it is handed out (breaks a start-order cycle)."""

    def __init__(self) -> None:
        self.target: Any = None

    def __call__(self, *args: Any) -> None:
        if self.target is not None:
            self.target(*args)
