"""Watch against a real keyhavend: snapshot, live events, filters, cancel."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

import keyhaven
from keyhaven import EventKind, Key

#: Longest a test waits for an event before it cancels the watch and fails.
EVENT_TIMEOUT = 20.0


@pytest.fixture
def bounded() -> Iterator[list[keyhaven.Watch]]:
    """Watches appended here are cancelled after EVENT_TIMEOUT, so a missing
    event ends the iteration (and fails the test) instead of hanging it."""
    watches: list[keyhaven.Watch] = []
    timer = threading.Timer(EVENT_TIMEOUT, lambda: [w.cancel() for w in watches])
    timer.daemon = True
    timer.start()
    yield watches
    timer.cancel()
    for w in watches:
        w.cancel()


def test_snapshot_then_live_events_with_attributes(
    client: keyhaven.Client, bounded: list[keyhaven.Watch]
) -> None:
    home = {"server_name": "Home", "device_id": "dev-1"}
    client.store(Key("jellyfin", "srv-1", "ana"), b"secret-a", attributes=home)
    client.store(Key("jellyfin", "srv-2", "ana"), b"secret-b", attributes={"server_name": "Away"})

    with client.watch(attributes={"server_name": "Home"}, snapshot=True) as events:
        bounded.append(events)
        first = next(events)
        assert first.kind == EventKind.SNAPSHOT
        assert first.metadata is not None
        assert str(first.metadata.key) == "jellyfin::srv-1::ana::access_token"
        assert first.metadata.attributes == home
        assert first.actor is None
        assert next(events).kind == EventKind.SYNCED

        # Not matching the filter: not seen. Then one that matches.
        client.store(Key("plex", "", "acct"), b"p", attributes={"server_name": "Away"})
        stored = client.store(
            Key("jellyfin", "srv-3", "bob"),
            b"secret-c",
            attributes={"server_name": "Home", "user_name": "bob"},
        )
        live = next(events)
        assert live.kind == EventKind.STORED
        assert live.metadata == stored.metadata
        assert live.metadata.attributes == {"server_name": "Home", "user_name": "bob"}
        assert live.actor is not None and live.actor.uid == os.getuid()
        assert live.time is not None

        client.delete(Key("jellyfin", "srv-1", "ana"))
        deleted = next(events)
        assert deleted.kind == EventKind.DELETED
        assert deleted.metadata is not None and deleted.metadata.key.user_id == "ana"
        for event in (first, live, deleted):
            assert "secret" not in repr(event)


def test_cancel_ends_the_iteration_quietly(
    client: keyhaven.Client, bounded: list[keyhaven.Watch]
) -> None:
    events = client.watch(provider="jellyfin")
    bounded.append(events)
    threading.Timer(0.2, events.cancel).start()
    assert list(events) == []


def test_a_bad_filter_is_refused_when_the_watch_starts(client: keyhaven.Client) -> None:
    with pytest.raises(keyhaven.InvalidArgument):
        client.watch(attributes={"bad name": "x"})
    with pytest.raises(keyhaven.InvalidArgument):
        client.watch(provider="not a provider")


def test_the_stream_ends_unavailable_when_the_daemon_stops(
    daemon, client: keyhaven.Client, bounded: list[keyhaven.Watch]
) -> None:
    events = client.watch()
    bounded.append(events)
    daemon.stop()
    with pytest.raises(keyhaven.Unavailable):
        for _ in events:
            pass
