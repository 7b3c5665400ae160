"""PgForwarder: the Forwarder port over PostgreSQL's `commands` table and LISTEN/NOTIFY,
with no broker (issue 11).

The origin (the node a caller reached) and the owner (the node holding the
lease of the service's shard) meet in one table:

1. `forward()` queues the command and returns at once. A sender thread INSERTs
   it (shard, service, JSON from `adapters.command_json`, origin) and
   `pg_notify('pager_commands', <shard>)` in one transaction. If PostgreSQL
   cannot be reached, the reply fails StoreError: nothing was queued.
2. Every node that `serve()`s has a listener thread (its own connection,
   LISTEN on both channels, and a `poll` backstop: a lost notification only
   delays). On a notification naming a shard it holds, it claims the waiting
   rows of its shards (`UPDATE ... SET taken_by = <node> ... FOR UPDATE SKIP
   LOCKED`, committed before anything runs) and hands them, in id order, to
   one runner thread, which calls `run` (`pager.submit(..., forward=False)`)
   in that order: one origin's commands for one service keep their order. The
   listener never waits on the engine: `run` may wait for the engine's
   backpressure, so it has its own thread.
3. When a command's future settles, a writer thread stores the answer (the
   Outcome, or the error) in its row and `pg_notify('pager_answers', <origin>)`.
4. The origin's listener, named in that notification (or at its next poll),
   reads its answered rows, resolves the replies, and deletes the rows.
5. A command with no answer after `timeout` seconds is withdrawn: `UPDATE ...
   SET taken_by = '(expired)' WHERE taken_by IS NULL`. If that took the row, no
   node ever ran it and none ever will: ForwardTimeoutError(applied=False).
   Otherwise a node took it and did not answer (it died, or is slow):
   ForwardTimeoutError(applied=None). Answers that come later are ignored.

Rows older than an hour (answered but never read, withdrawn, orphaned by a dead
origin) are swept by every node's listener at start and every five minutes.

`close()` stops the threads; a command claimed here but not yet run is given
back (taken_by NULL) for the next holder of its shard; each reply still waiting
fails PagerStoppedError, saying whether its command was withdrawn (never
applied) or already taken (unknown). Stop the pager before closing its
forwarder, so the answers of the commands it is still running go out.

No message or log line carries the DSN's password (`adapters.pg_conn`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from typing import Any, NamedTuple, Protocol

import psycopg

from adapters.command_json import (
    decode_answer,
    decode_command,
    encode_command,
    encode_error,
    encode_outcome,
)
from adapters.pg_conn import Connection, Database
from pager_actors.cluster import shard_of
from pager_actors.domain import Command
from pager_actors.errors import (
    ForwardTimeoutError,
    NotOwnerError,
    OwnerFailedError,
    PagerStoppedError,
)
from pager_actors.logs import get_logger
from pager_actors.ports import Outcome, Reply, StoreError

log = get_logger("pager_actors.adapters.pg_forward")

COMMANDS_CHANNEL = "pager_commands"
ANSWERS_CHANNEL = "pager_answers"
EXPIRED = "(expired)"  # the taken_by of a command withdrawn by its origin
GIVE_BACK = "(give back)"  # not an answer: the claim is released for the shard's next owner
KEEP_ROWS = timedelta(hours=1)
SWEEP_EVERY = 300.0  # seconds between two sweeps of old rows
SEND_BATCH = 256  # commands inserted in one transaction, at most
CLAIM_BATCH = 64  # commands claimed in one statement, at most
MAX_BACKLOG = 256  # commands claimed here and not yet run: no more are claimed past it
FIRST_BACKOFF = 0.05  # seconds before reconnecting; doubles up to `poll`
CLOSE_WAIT = 5.0  # seconds close() lets each thread finish

# A command older than the timeout is never claimed: its origin gave up on it (every node
# has the same timeout), and it must not run late, after PostgreSQL came back, say.
_CLAIM = """
    UPDATE commands SET taken_by = %s
    WHERE id IN (SELECT id FROM commands
                 WHERE taken_by IS NULL AND shard = ANY(%s) AND created_at > now() - %s
                   AND id <> ALL(%s)
                 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT %s)
    RETURNING id, service_id, command, origin"""
GIVEN_BACK_REMEMBERED = 1000  # ids this node gave back and must not claim again


class OutcomeFuture(Protocol):
    """What `run` returns: the engine's `CommandFuture[Outcome]` has this shape."""

    def add_done_callback(self, callback: Callable[[Any], object]) -> None: ...

    def get(self, *, timeout: float | None = None) -> Outcome: ...


class _Queued(NamedTuple):
    """A command given to forward(), not yet inserted."""

    service_id: str
    shard: int
    text: str
    reply: Reply[Outcome]
    deadline: float  # monotonic


class _Waiting(NamedTuple):
    """A command inserted, waiting for its answer."""

    service_id: str
    reply: Reply[Outcome]
    deadline: float  # monotonic


class _Claimed(NamedTuple):
    """A command this node took, to run for its origin."""

    id: int
    service_id: str
    text: str
    origin: str


class PgForwarder:
    """A Forwarder (`pager_actors.ports`) between the nodes of one PostgreSQL database.

    `node` names this node in the table (its rows' origin, the rows it took).
    `timeout`: seconds a forwarded command may wait for its answer. `poll`: seconds
    between two looks at the table when no notification comes. Threads start at
    once; no connection is made in the constructor (each thread connects, and
    reconnects, on its own).
    """

    def __init__(self, dsn: str, *, node: str, timeout: float = 10.0,
                 poll: float = 1.0) -> None:
        if timeout <= 0 or poll <= 0:
            raise ValueError(f"timeout and poll must be positive, got {timeout}, {poll}")
        if not node or node == EXPIRED:
            raise ValueError(f"not a node name: {node!r}")
        self.node = node
        self._db = Database(dsn, "pager-actors forwarder")
        self._timeout = timeout
        self._poll = poll
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._figures: Counter[str] = Counter()
        self._outbound: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._waiting: dict[int, _Waiting] = {}
        # Serving: set once by serve().
        self._run: Callable[[str, Command], OutcomeFuture] | None = None
        self._held: Callable[[], Collection[int]] | None = None
        self._backlog: queue.Queue[_Claimed | None] = queue.Queue()
        self._answers: queue.SimpleQueue[tuple[_Claimed, Any] | None] = queue.SimpleQueue()
        self._unrun: list[_Claimed] = []
        self._given_back: deque[int] = deque(maxlen=GIVEN_BACK_REMEMBERED)
        self._claim_more = False  # the backlog was full: claim again once it empties
        self._woken = False
        self._handed_back = False  # close() failed the waiting replies: none may be added
        self._pipe_open = True
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._threads = [threading.Thread(target=self._send_loop, daemon=True,
                                          name=f"forward-send-{node}"),
                         threading.Thread(target=self._listen_loop, daemon=True,
                                          name=f"forward-listen-{node}")]
        self._serving_threads: list[threading.Thread] = []
        for thread in self._threads:
            thread.start()

    # -- the port ---------------------------------------------------------------------

    def forward(self, service_id: str, command: Command, reply: Reply[Outcome]) -> None:
        """Queue `command` for the holder of its service's shard; never waits."""
        try:
            text = encode_command(command)
        except ValueError as error:
            self._count("forward_failures")
            reply.fail(error)
            return
        queued = _Queued(service_id, shard_of(service_id), text, reply,
                         time.monotonic() + self._timeout)
        with self._lock:  # close() puts its end marker under the same lock, after this
            if not self._closed:
                self._outbound.put(queued)
                return
        reply.fail(PagerStoppedError("the forwarder is closed: the command was not sent"))

    def serve(self, run: Callable[[str, Command], OutcomeFuture],
              held: Callable[[], Collection[int]]) -> None:
        """Run here the commands forwarded for the shards `held()` names (read at each
        claim): `run(service_id, command)` must return the command's future at once."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the forwarder is closed")
            if self._run is not None:
                raise RuntimeError("serve() was called already")
            self._run, self._held = run, held
            self._serving_threads = [
                threading.Thread(target=self._run_loop, daemon=True,
                                 name=f"forward-run-{self.node}"),
                threading.Thread(target=self._write_loop, daemon=True,
                                 name=f"forward-answer-{self.node}")]
        for thread in self._serving_threads:
            thread.start()
        self.wake()

    def wake(self) -> None:
        """Claim the waiting commands of the held shards now (after an adoption)."""
        self._woken = True
        with self._lock, contextlib.suppress(BlockingIOError, OSError):  # full: awake already
            if self._pipe_open:  # once closed, its number may be another file's
                os.write(self._wake_write, b"!")

    def figures(self) -> dict[str, int]:
        """Counters: commands_forwarded (queued in the table), forwarded_answered (answers
        received), forward_timeouts, forwarded_served (run here for another node),
        forward_failures (refused before queuing: PostgreSQL unreachable, bad command)."""
        names = ("commands_forwarded", "forwarded_answered", "forward_timeouts",
                 "forwarded_served", "forward_failures")
        with self._lock:
            return {name: self._figures[name] for name in names}

    @property
    def closed(self) -> bool:
        """close() was called (it may still be finishing)."""
        return self._closed

    def close(self) -> None:
        """Stop the threads, give back what was claimed and not run, fail the replies
        still waiting (PagerStoppedError), close the connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._outbound.put(None)
        self.wake()
        self._threads[0].join(CLOSE_WAIT)  # the sender: every insert ends in _waiting
        if self._serving_threads:
            self._backlog.put(None)
            self._serving_threads[0].join(CLOSE_WAIT)
            self._answers.put(None)  # after the runner: its answers go out first
            self._serving_threads[1].join(CLOSE_WAIT)
        self._threads[1].join(CLOSE_WAIT)
        while True:
            try:
                claimed = self._backlog.get_nowait()
            except queue.Empty:
                break
            if claimed is not None:
                self._unrun.append(claimed)
        self._hand_back()
        if not self._threads[1].is_alive():  # else it may still wait on the pipe
            with self._lock:
                self._pipe_open = False
                for fd in (self._wake_read, self._wake_write):
                    with contextlib.suppress(OSError):
                        os.close(fd)

    # -- origin: inserting ---------------------------------------------------------

    def _send_loop(self) -> None:
        db: Connection | None = None
        try:
            while True:
                first = self._outbound.get()
                if first is None:
                    return
                batch, done = [first], False
                while len(batch) < SEND_BATCH:
                    try:
                        item = self._outbound.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        done = True
                        break
                    batch.append(item)
                if self._stop.is_set():
                    self._fail_queued(batch, PagerStoppedError(
                        "the forwarder closed before the command was sent"))
                else:
                    db = self._insert(db, batch)
                if done:
                    return
        finally:
            if db is not None:
                db.close()

    def _insert(self, db: Connection | None, batch: list[_Queued]) -> Connection | None:
        """Insert `batch` in one transaction (a batch refused by PostgreSQL's rules goes
        again one command at a time); the connection to use next."""
        for attempt in (1, 2):
            try:
                if db is None:
                    db = self._db.connect(autocommit=False)
                ids = self._insert_rows(db, batch)
            except StoreError as error:  # cannot connect
                self._fail_queued(batch, error)
                return None
            except psycopg.Error as error:
                db = _drop(db)
                if attempt == 1 and isinstance(error, psycopg.OperationalError):
                    continue  # a connection lost since its last use: nothing was committed
                if len(batch) > 1 and not isinstance(error, psycopg.OperationalError):
                    for one in batch:
                        db = self._insert(db, [one])
                    return db
                self._fail_queued(batch, StoreError(
                    f"{self._db.where}: cannot queue the command: {self._db.reason(error)}"))
                return db
            try:
                db.commit()
            except psycopg.Error as error:
                # It may have committed: the commands are awaited as if it had; if not,
                # their timeout says "unknown", which is true from here.
                log.warning("forward_commit_unconfirmed", store=self._db.where,
                            commands=len(batch), error=self._db.reason(error))
                db = _drop(db)
            with self._lock:
                late = self._handed_back
                if not late:
                    for queued, row_id in zip(batch, ids, strict=True):
                        self._waiting[row_id] = _Waiting(queued.service_id, queued.reply,
                                                         queued.deadline)
                self._figures["commands_forwarded"] += len(batch)
            if late:  # close() gave up waiting for this thread
                self._fail_queued(batch, PagerStoppedError(
                    "the forwarder closed while the command was being sent: whether it "
                    "was applied is unknown"))
            return db
        return db  # pragma: no cover - the loop always returns

    def _insert_rows(self, db: Connection, batch: Sequence[_Queued]) -> list[int]:
        ids: list[int] = []
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO commands (shard, service_id, command, origin, created_at) "
                "VALUES (%s, %s, %s, %s, now()) RETURNING id",
                [(q.shard, q.service_id, q.text, self.node) for q in batch], returning=True)
            while True:
                row = cursor.fetchone()
                assert row is not None
                ids.append(int(row[0]))
                if not cursor.nextset():
                    break
            cursor.execute("SELECT pg_notify(%s, shard::text) FROM unnest(%s::int[]) AS shard",
                           (COMMANDS_CHANNEL, sorted({q.shard for q in batch})))
        return ids

    def _fail_queued(self, batch: Sequence[_Queued], error: BaseException) -> None:
        if isinstance(error, StoreError):
            log.warning("forward_failed", store=self._db.where, commands=len(batch),
                        error=str(error))
            self._count("forward_failures", len(batch))
        for queued in batch:
            _resolve(queued.reply, error)

    # -- the listener: claims, answers, timeouts, sweeps ----------------------------------

    def _listen_loop(self) -> None:
        db: Connection | None = None
        backoff = FIRST_BACKOFF
        next_poll = next_sweep = time.monotonic()
        reported = False  # an outage is logged once
        try:
            while not self._stop.is_set():
                try:
                    if db is None:
                        db = self._db.connect(autocommit=True)
                        db.execute(f"LISTEN {COMMANDS_CHANNEL}")
                        db.execute(f"LISTEN {ANSWERS_CHANNEL}")
                        if reported:
                            log.info("forward_listener_reconnected", store=self._db.where)
                        reported, backoff, next_poll = False, FIRST_BACKOFF, 0.0
                    claim, answers = self._notified(db)
                    if not (claim or answers):
                        self._wait(db, next_poll)
                        claim, answers = self._notified(db)
                    if time.monotonic() >= next_poll:  # the backstop: anything missed
                        claim = answers = True
                        next_poll = time.monotonic() + self._poll
                    if claim:
                        self._claim(db)
                    if answers:
                        self._fetch_answers(db)
                    self._expire(db)
                    if time.monotonic() >= next_sweep:
                        self._sweep(db)
                        next_sweep = time.monotonic() + SWEEP_EVERY
                except Exception as error:  # never the end of the listener: log, go on
                    if not reported:
                        log.warning("forward_listener_lost", store=self._db.where,
                                    error=self._words(error))
                        reported = True
                    db = _drop(db)
                    self._expire_unchecked()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._poll)
        finally:
            _drop(db)

    def _wait(self, db: Connection, next_poll: float) -> None:
        """Until a notification, a wake(), the next poll or the next reply's deadline."""
        with self._lock:
            deadlines = [waiting.deadline for waiting in self._waiting.values()]
        until = min([next_poll, *deadlines])
        timeout = max(until - time.monotonic(), 0.0)
        if self._woken or self._stop.is_set() or timeout == 0:
            return
        poller = select.poll()  # not select(): a daemon's descriptors may pass 1024
        poller.register(db.fileno(), select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        poller.poll(timeout * 1000)

    def _notified(self, db: Connection) -> tuple[bool, bool]:
        """(claim, answers): what the notifications received so far, and wake(), call for."""
        claim = answers = False
        held: Collection[int] | None = None
        for note in db.notifies(timeout=0):
            if note.channel == ANSWERS_CHANNEL:
                answers = answers or note.payload == self.node
            elif note.channel == COMMANDS_CHANNEL and not claim and self._run is not None:
                held = self._held_shards() if held is None else held
                claim = note.payload.isdigit() and int(note.payload) in held
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._wake_read, 4096):
                pass
        if self._woken:
            self._woken = False
            claim = answers = True
        return claim, answers

    def _held_shards(self) -> Collection[int]:
        assert self._held is not None
        try:
            return frozenset(self._held())
        except Exception as error:  # a coordinator that cannot tell: claim nothing now
            log.error("held_shards_failed", error=repr(error))
            return frozenset()

    def _claim(self, db: Connection) -> None:
        if self._run is None:
            return
        held = sorted(self._held_shards())
        while held and not self._stop.is_set():
            room = MAX_BACKLOG - self._backlog.qsize()
            if room <= 0:
                self._claim_more = True  # the runner wakes us once it has caught up
                return
            limit = min(CLAIM_BATCH, room)
            with self._lock:
                refused = list(self._given_back)
            rows = db.execute(_CLAIM, (self.node, held, timedelta(seconds=self._timeout),
                                       refused, limit)).fetchall()
            for row in sorted(rows):
                self._backlog.put(_Claimed(int(row[0]), row[1], row[2], row[3]))
            if len(rows) < limit:
                return

    def _fetch_answers(self, db: Connection) -> None:
        with self._lock:
            ids = list(self._waiting)
        if not ids:
            return
        rows = db.execute("SELECT id, answer FROM commands WHERE origin = %s AND id = ANY(%s) "
                          "AND answer IS NOT NULL", (self.node, ids)).fetchall()
        for row_id, text in rows:
            self._settle(int(row_id), _answer(text))
        if rows:
            db.execute("DELETE FROM commands WHERE id = ANY(%s)", ([row[0] for row in rows],))

    def _expire(self, db: Connection) -> None:
        """Withdraw the commands whose reply waited `timeout` seconds, and fail them."""
        now = time.monotonic()
        with self._lock:
            overdue = [(row_id, w) for row_id, w in self._waiting.items() if w.deadline <= now]
        for row_id, waiting in overdue:
            withdrawn = db.execute("UPDATE commands SET taken_by = %s "
                                   "WHERE id = %s AND taken_by IS NULL",
                                   (EXPIRED, row_id)).rowcount
            if not withdrawn:
                late = db.execute("DELETE FROM commands WHERE id = %s AND answer IS NOT NULL "
                                  "RETURNING answer", (row_id,)).fetchone()
                if late is not None:  # answered since the last look
                    self._settle(row_id, _answer(late[0]))
                    continue
            error = ForwardTimeoutError(waiting.service_id, self._timeout,
                                        False if withdrawn else None)
            log.warning("forward_timed_out", service=waiting.service_id, command=row_id,
                        applied=error.applied)
            if self._settle(row_id, error):
                self._count("forward_timeouts")

    def _expire_unchecked(self) -> None:
        """PostgreSQL is out of reach: the overdue replies fail without a withdrawal."""
        now = time.monotonic()
        with self._lock:
            overdue = [(row_id, w) for row_id, w in self._waiting.items() if w.deadline <= now]
        for row_id, waiting in overdue:
            if self._settle(row_id, ForwardTimeoutError(
                    waiting.service_id, self._timeout, None,
                    "PostgreSQL could not be reached to withdraw the command")):
                self._count("forward_timeouts")

    def _sweep(self, db: Connection) -> None:
        swept = db.execute("DELETE FROM commands WHERE created_at < now() - %s",
                           (KEEP_ROWS,)).rowcount
        if swept:
            log.info("forwarded_commands_swept", rows=swept)

    def _settle(self, row_id: int, answer: Outcome | BaseException) -> bool:
        """Resolve the reply waiting for `row_id` (once: False if it was already)."""
        with self._lock:
            waiting = self._waiting.pop(row_id, None)
            if waiting is not None and isinstance(answer, Outcome):
                self._figures["forwarded_answered"] += 1
        if waiting is None:
            return False
        _resolve(waiting.reply, answer)
        return True

    # -- owner: running and answering --------------------------------------------------

    def _run_loop(self) -> None:
        assert self._run is not None
        while True:
            claimed = self._backlog.get()
            if claimed is None:
                return
            if self._stop.is_set():
                self._unrun.append(claimed)
                continue
            self._run_one(self._run, claimed)
            if self._claim_more and self._backlog.empty():
                self._claim_more = False
                self.wake()

    def _run_one(self, run: Callable[[str, Command], OutcomeFuture], claimed: _Claimed) -> None:
        try:
            future = run(claimed.service_id, decode_command(claimed.text))
        except Exception as error:  # a command it cannot decode, a run that raised
            self._answers.put((claimed, error))
            return
        self._count("forwarded_served")
        future.add_done_callback(lambda settled: self._answers.put((claimed, settled)))

    def _write_loop(self) -> None:
        db: Connection | None = None
        backoff = FIRST_BACKOFF
        pending: list[tuple[_Claimed, str]] = []
        done = False  # close() marked the end of the answers
        give_up = None  # once closing: when unwritten answers are dropped
        try:
            while pending or not done:
                if not pending:
                    item = self._answers.get()
                    if item is None:
                        return
                    pending.append(_encoded(item))
                done = self._take_answers(pending) or done
                try:
                    if db is None:
                        db = self._db.connect(autocommit=False)
                    self._write_answers(db, pending)
                    pending, backoff = [], FIRST_BACKOFF
                except Exception as error:  # never the end of the writer: log, go on
                    log.warning("forward_answers_not_written", store=self._db.where,
                                answers=len(pending), error=self._words(error))
                    db = _drop(db)
                    if self._stop.is_set():
                        give_up = give_up or time.monotonic() + CLOSE_WAIT / 2
                        if time.monotonic() >= give_up:
                            log.error("forward_answers_dropped", answers=len(pending))
                            return
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self._poll)
        finally:
            _drop(db)

    def _take_answers(self, pending: list[tuple[_Claimed, str]]) -> bool:
        """Add the answers already queued to `pending` (up to a batch); True if the end
        marker was among them."""
        while len(pending) < SEND_BATCH:
            try:
                item = self._answers.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            pending.append(_encoded(item))
        return False

    def _write_answers(self, db: Connection, answers: Sequence[tuple[_Claimed, str]]) -> None:
        """Store the answers and notify their origins, in one transaction (again after a
        failure: an answer's write is idempotent)."""
        given_back = [claimed.id for claimed, text in answers if text == GIVE_BACK]
        answered = [(claimed, text) for claimed, text in answers if text != GIVE_BACK]
        with self._lock:  # never claimed here again: the shard left, its next owner runs it
            self._given_back.extend(given_back)
        with db.cursor() as cursor:
            if given_back:  # the shard left this node after the claim: its next owner runs it
                cursor.execute("UPDATE commands SET taken_by = NULL "
                               "WHERE id = ANY(%s) AND taken_by = %s", (given_back, self.node))
                cursor.execute("SELECT pg_notify(%s, '')", (COMMANDS_CHANNEL,))
            cursor.executemany("UPDATE commands SET answer = %s, answered_at = now() "
                               "WHERE id = %s AND taken_by = %s",
                               [(text, claimed.id, self.node) for claimed, text in answered])
            cursor.execute("SELECT pg_notify(%s, origin) FROM unnest(%s::text[]) AS origin",
                           (ANSWERS_CHANNEL, sorted({claimed.origin for claimed, _ in answered})))
        db.commit()

    # -- closing -------------------------------------------------------------------

    def _hand_back(self) -> None:
        """Give back the commands claimed and not run; withdraw the commands still waiting
        for an answer, and fail their replies."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
            self._handed_back = True
        unrun, self._unrun = [claimed.id for claimed in self._unrun], []
        if not waiting and not unrun:
            return
        withdrawn: set[int] = set()
        try:
            with contextlib.closing(self._db.connect(autocommit=True)) as db:
                if unrun:
                    db.execute("UPDATE commands SET taken_by = NULL WHERE id = ANY(%s) "
                               "AND taken_by = %s AND answer IS NULL", (unrun, self.node))
                if waiting:
                    rows = db.execute("UPDATE commands SET taken_by = %s WHERE id = ANY(%s) "
                                      "AND taken_by IS NULL RETURNING id",
                                      (EXPIRED, list(waiting))).fetchall()
                    withdrawn = {int(row[0]) for row in rows}
        except (StoreError, psycopg.Error) as error:
            log.warning("forward_close_unchecked", store=self._db.where,
                        error=self._words(error))
        for row_id, w in waiting.items():
            _resolve(w.reply, PagerStoppedError(
                "the forwarder closed before any node took the command: it was not applied"
                if row_id in withdrawn else
                "the forwarder closed before the owner answered: whether the command was "
                "applied is unknown"))

    def _words(self, error: BaseException) -> str:
        """What to log of a failure: a StoreError's message (masked already), or
        PostgreSQL's words with the password masked."""
        return str(error) if isinstance(error, StoreError) else self._db.reason(error)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._figures[name] += n


def _encoded(item: tuple[_Claimed, Any]) -> tuple[_Claimed, str]:
    """A settled command's answer as JSON: its outcome, or its error; GIVE_BACK if this
    node no longer runs the service (the command goes back for its new owner to claim)."""
    claimed, settled = item
    if isinstance(settled, BaseException):
        return claimed, GIVE_BACK if isinstance(settled, NotOwnerError) \
            else encode_error(settled)
    try:
        return claimed, encode_outcome(settled.get(timeout=0))
    except NotOwnerError:
        return claimed, GIVE_BACK
    except Exception as error:
        return claimed, encode_error(error)


def _answer(text: str) -> Outcome | BaseException:
    try:
        return decode_answer(text)
    except Exception as error:  # an owner of another version, a damaged row
        return OwnerFailedError("an answer this node cannot read", repr(error))


def _resolve(reply: Reply[Outcome], answer: Outcome | BaseException) -> None:
    try:
        if isinstance(answer, BaseException):
            reply.fail(answer)
        else:
            reply.set(answer)
    except Exception as error:  # resolved already (queue.Full), or a reply that broke
        log.debug("reply_not_resolved", error=repr(error))


def _drop(db: Connection | None) -> Connection | None:
    """Close `db` if there is one, whatever fails; None: the connection to use next."""
    if db is not None:
        with contextlib.suppress(Exception):
            db.close()
    return None
