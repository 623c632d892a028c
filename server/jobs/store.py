"""Where the queue keeps its jobs: huey's SQLite and Redis stores, changed so that a job a consumer
has taken is not lost with that consumer.

huey deletes a task from its queue when a worker thread takes it, and from its schedule when the
scheduler moves it to the queue. A consumer killed (SIGKILL, a lost machine) after the first and
before the job has claimed its run in the database, or between the scheduler's two steps, takes the
task with it; nothing else knows it existed. Here:

- a worker thread takes a task by moving it, in one step, into its consumer's own list of taken
  tasks, and it leaves that list only once huey is done with it (run, failed for good, or back on
  the schedule for a retry): the job's `execute` releases it;
- a due task moves from the schedule into the queue in one step (the scheduler then gets nothing to
  enqueue itself);
- a consumer says it is alive (`heartbeat`) when it starts and every third of a lease after; what a
  consumer silent for longer than `older_than` had taken goes back on the queue
  (`recover_abandoned`, run by every consumer's lease keeper).

A task may so run twice (its consumer was stalled, not dead); the job's idempotency key makes the
second run a no-op.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any, Optional

import redis
from huey import RedisHuey, SqliteHuey
from huey.storage import RedisStorage, SqliteStorage


def _consumer_id() -> str:
    """This process's name among the consumers of one queue: host, pid, and a nonce for a reused pid."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class SqliteJobStore(SqliteStorage):
    ddl = [
        *SqliteStorage.ddl,
        "create table if not exists taken (id integer not null primary key, queue text not null, "
        "owner text not null, data blob not null)",
        "create index if not exists taken_queue_owner on taken (queue, owner)",
        "create table if not exists consumer (queue text not null, owner text not null, "
        "seen real not null, primary key(queue, owner))",
    ]

    def __init__(self, *args: Any, **kwargs: Any):
        self.owner = _consumer_id()
        self._current = threading.local()  # the row id of what this thread has taken
        super().__init__(*args, **kwargs)

    def dequeue(self) -> Optional[bytes]:
        if not self.sql("select 1 from task where queue = ? limit 1", (self.name,), results=True):
            return None  # a quick look without the exclusive lock
        with self.db(commit=True) as cursor:
            cursor.execute("select id, data from task where queue = ? order by priority desc, id limit 1", (self.name,))
            row = cursor.fetchone()
            if row is None:
                return None
            task_id, data = row
            cursor.execute("delete from task where id = ?", (task_id,))
            cursor.execute("insert into taken (queue, owner, data) values (?, ?, ?)", (self.name, self.owner, data))
            self._current.taken = cursor.lastrowid
            return data

    def release(self) -> None:
        """Huey is done with what this thread took last."""
        taken = getattr(self._current, "taken", None)
        if taken is not None:
            self._current.taken = None
            self.sql("delete from taken where id = ?", (taken,), commit=True)

    def read_schedule(self, ts) -> list:
        with self.db(commit=True) as cursor:
            due = (self.name, ts.timestamp())
            cursor.execute(
                "insert into task (queue, data, priority) select queue, data, 0 from schedule "
                "where queue = ? and timestamp <= ? order by timestamp, id",
                due,
            )
            cursor.execute("delete from schedule where queue = ? and timestamp <= ?", due)
        return []

    def flush_queue(self) -> None:
        super().flush_queue()
        self.sql("delete from taken where queue = ?", (self.name,), commit=True)

    def heartbeat(self) -> None:
        self.sql(
            "insert or replace into consumer (queue, owner, seen) values (?, ?, ?)",
            (self.name, self.owner, time.time()),
            commit=True,
        )

    def recover_abandoned(self, older_than: float) -> int:
        """Put back on the queue what consumers silent for `older_than` seconds had taken; how many."""
        recovered = 0
        with self.db(commit=True) as cursor:
            cursor.execute(
                "select owner from consumer where queue = ? and seen < ? and owner != ?",
                (self.name, time.time() - older_than, self.owner),
            )
            for (owner,) in cursor.fetchall():
                cursor.execute(
                    "insert into task (queue, data, priority) select queue, data, 0 from taken "
                    "where queue = ? and owner = ? order by id",
                    (self.name, owner),
                )
                recovered += cursor.rowcount
                cursor.execute("delete from taken where queue = ? and owner = ?", (self.name, owner))
                cursor.execute("delete from consumer where queue = ? and owner = ?", (self.name, owner))
        return recovered

    def taken_count(self) -> int:
        return self.sql("select count(*) from taken where queue = ?", (self.name,), results=True)[0][0]


# Due tasks from the schedule (KEYS[1]) to the queue (KEYS[2]) in one step: a Lua script runs whole.
_SCHEDULE_TO_QUEUE = """
local due = redis.call('zrangebyscore', KEYS[1], '-inf', ARGV[1])
for _, data in ipairs(due) do
    redis.call('lpush', KEYS[2], data)
end
if #due > 0 then
    redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
end
return #due
"""


class RedisJobStore(RedisStorage):
    """Each consumer's taken tasks are a list of its own (`huey.taken.<queue>.<consumer>`), filled by
    LMOVE from the queue; the consumers' heartbeats are a hash of Redis server times, so that the
    instances' clocks don't matter."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.owner = _consumer_id()
        self.consumers_key = f"huey.consumers.{self.name}"
        self._current = threading.local()  # what this thread has taken
        self._schedule_to_queue = self.conn.register_script(_SCHEDULE_TO_QUEUE)

    def _taken_key(self, owner: str) -> str:
        return f"huey.taken.{self.name}.{owner}"

    def _server_time(self) -> float:
        seconds, microseconds = self.conn.time()
        return seconds + microseconds / 1e6

    def dequeue(self) -> Optional[bytes]:
        taken = self._taken_key(self.owner)
        if not self.blocking:
            data = self.conn.lmove(self.queue_key, taken, "RIGHT", "LEFT")
        else:
            try:
                data = self.conn.blmove(self.queue_key, taken, self.read_timeout, "RIGHT", "LEFT")
            except redis.TimeoutError:
                return None  # nothing came; a refused connection propagates, for the worker's backoff
        self._current.taken = data
        return data

    def release(self) -> None:
        """Huey is done with what this thread took last."""
        data = getattr(self._current, "taken", None)
        if data is not None:
            self._current.taken = None
            self.conn.lrem(self._taken_key(self.owner), 1, data)

    def read_schedule(self, ts) -> list:
        self._schedule_to_queue(keys=[self.schedule_key, self.queue_key], args=[self.convert_ts(ts)])
        return []

    def flush_queue(self) -> None:
        super().flush_queue()
        self.conn.delete(self._taken_key(self.owner))

    def heartbeat(self) -> None:
        self.conn.hset(self.consumers_key, self.owner, self._server_time())

    def recover_abandoned(self, older_than: float) -> int:
        """Put back on the queue what consumers silent for `older_than` seconds had taken; how many.
        Each task moves in one LMOVE, so two consumers recovering the same one move each task once."""
        cutoff = self._server_time() - older_than
        recovered = 0
        for raw_owner, seen in self.conn.hgetall(self.consumers_key).items():
            owner = raw_owner.decode()
            if owner == self.owner or float(seen) >= cutoff:
                continue
            while self.conn.lmove(self._taken_key(owner), self.queue_key, "RIGHT", "RIGHT") is not None:
                recovered += 1
            self.conn.hdel(self.consumers_key, owner)
        return recovered

    def taken_count(self) -> int:
        return sum(self.conn.llen(self._taken_key(owner.decode())) for owner in self.conn.hkeys(self.consumers_key))


class _ReleasesWhatItRan:
    """A huey whose store is told when a task it handed out is done with."""

    storage: SqliteJobStore | RedisJobStore

    def execute(self, task, timestamp=None):
        try:
            return super().execute(task, timestamp)  # type: ignore[misc]
        finally:
            self.storage.release()


class SqliteJobHuey(_ReleasesWhatItRan, SqliteHuey):
    storage_class = SqliteJobStore


class RedisJobHuey(_ReleasesWhatItRan, RedisHuey):
    storage_class = RedisJobStore
