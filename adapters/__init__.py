"""Adapters: concrete implementations of pager_actors' ports.

- `memory`: in-memory policy repository, recording senders, `ManualTimer`, `InMemoryStore`.
- `sqlite`: `SqliteStore`, the durable store.
- `smtp`, `twilio`: the real mail and SMS senders.
- `timer`: `ThreadedTimer`, the real ack-timeout timer.
- `log`: senders that log each notification instead of sending it.
"""
