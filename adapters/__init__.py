"""Adapters: concrete implementations of pager_actors' ports.

`memory` holds in-memory fakes that record what they did (for tests, demos and
embedding); `timer` holds the real threaded timer; `log` prints notifications.
"""
