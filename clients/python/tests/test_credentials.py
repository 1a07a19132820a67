"""Store, get, delete, list and logout against a real keyhavend."""

from __future__ import annotations

import datetime

import pytest

import keyhaven
from keyhaven import ExitCode, Key

JELLYFIN = Key("jellyfin", "srv-1", "user-1")


def test_round_trip_keeps_every_byte(client: keyhaven.Client) -> None:
    secret = bytes(range(256)) + b"\xff\xfe not utf-8 \x00"
    stored = client.store(JELLYFIN, secret, label="Living room")
    assert stored.created
    assert stored.metadata.key == JELLYFIN
    assert stored.metadata.revision > 0
    assert stored.metadata.label == "Living room"
    assert stored.metadata.expires_at is None
    assert stored.metadata.created_at is not None
    assert stored.metadata.created_at.tzinfo is not None

    got = client.get(JELLYFIN)
    assert got.secret == secret
    assert got.metadata == stored.metadata

    again = client.store(JELLYFIN, b"tok-2")
    assert not again.created
    assert again.metadata.revision > stored.metadata.revision
    assert again.metadata.label is None, "a store replaces the label"

    deleted = client.delete(JELLYFIN)
    assert deleted.key == JELLYFIN
    with pytest.raises(keyhaven.NotFound) as e:
        client.get(JELLYFIN)
    assert e.value.exit_code == ExitCode.NOT_FOUND == 3
    assert "NOT_FOUND" in str(e.value)
    with pytest.raises(keyhaven.NotFound):
        client.delete(JELLYFIN)


def test_the_secret_never_shows_in_a_repr(client: keyhaven.Client) -> None:
    client.store(JELLYFIN, b"very-secret-token")
    cred = client.get(JELLYFIN)
    for text in (repr(cred), str(cred), "%s" % (cred,), repr([cred])):
        assert "very-secret-token" not in text
        assert "[REDACTED]" in text
    with pytest.raises(TypeError) as e:
        client.store(JELLYFIN, "a str token")  # type: ignore[arg-type]
    assert "a str token" not in str(e.value)


def test_expiry_round_trips_and_must_say_its_zone(client: keyhaven.Client) -> None:
    when = datetime.datetime(2100, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    stored = client.store(JELLYFIN, b"t", expires_at=when)
    assert stored.metadata.expires_at == when
    with pytest.raises(keyhaven.InvalidArgument):
        client.store(JELLYFIN, b"t", expires_at=datetime.datetime(2100, 1, 1))


def test_compare_and_swap_conflicts(client: keyhaven.Client) -> None:
    first = client.store(JELLYFIN, b"t1", expected_revision=0)
    with pytest.raises(keyhaven.Conflict) as e:
        client.store(JELLYFIN, b"t2", expected_revision=0)
    assert e.value.exit_code == ExitCode.CONFLICT == 7
    with pytest.raises(keyhaven.Conflict):
        client.store(JELLYFIN, b"t2", expected_revision=first.metadata.revision + 100)
    second = client.store(JELLYFIN, b"t2", expected_revision=first.metadata.revision)
    with pytest.raises(keyhaven.Conflict):
        client.delete(JELLYFIN, expected_revision=first.metadata.revision)
    client.delete(JELLYFIN, expected_revision=second.metadata.revision)


def test_invalid_input_is_typed(client: keyhaven.Client) -> None:
    with pytest.raises(keyhaven.InvalidArgument) as e:
        client.store(JELLYFIN, b"t", attributes={"bad name": "v"})
    assert e.value.exit_code == ExitCode.INVALID_INPUT == 6
    assert isinstance(e.value, ValueError)
    assert "attribute name" in str(e.value)
    with pytest.raises(keyhaven.InvalidArgument):
        client.store(JELLYFIN, b"t", attributes={"server_name": "a\u202eb"})
    with pytest.raises(keyhaven.InvalidArgument):
        client.store(JELLYFIN, b"t", attributes={"n%d" % i: "v" for i in range(33)})
    with pytest.raises(keyhaven.InvalidArgument):
        client.get(Key("not a provider", "s", "u"))
    with pytest.raises(keyhaven.InvalidArgument):
        client.store(JELLYFIN, b"")
    with pytest.raises(keyhaven.NotFound):
        client.get(JELLYFIN)  # nothing was written


def test_attributes_keep_replace_clear(client: keyhaven.Client) -> None:
    attrs = {"server_name": "Living room", "user_name": "ana", "device_id": "dev-1"}
    assert client.store(JELLYFIN, b"t1", attributes=attrs).metadata.attributes == attrs
    assert client.get(JELLYFIN).metadata.attributes == attrs

    # None keeps what is stored.
    assert client.store(JELLYFIN, b"t2").metadata.attributes == attrs
    assert client.get(JELLYFIN).metadata.attributes == attrs

    # A non-empty mapping replaces all of them.
    assert client.store(JELLYFIN, b"t3", attributes={"device_id": "dev-2"}).metadata.attributes == {
        "device_id": "dev-2"
    }

    # An empty one clears them.
    assert client.store(JELLYFIN, b"t4", attributes={}).metadata.attributes == {}
    assert client.get(JELLYFIN).metadata.attributes == {}
    assert client.get(JELLYFIN).secret == b"t4"


def test_list_filters_by_key_fields_and_attributes(client: keyhaven.Client) -> None:
    client.store(Key("jellyfin", "srv-1", "ana"), b"a", attributes={"server_name": "One", "user_name": "ana"})
    client.store(Key("jellyfin", "srv-1", "bob"), b"b", attributes={"server_name": "One", "user_name": "bob"})
    client.store(Key("jellyfin", "srv-2", "ana"), b"c", attributes={"server_name": "Two"})
    client.store(Key("plex", "", "acct"), b"d", attributes={"server_name": "One"})

    everything = client.list()
    assert [str(m.key) for m in everything] == [
        "jellyfin::srv-1::ana::access_token",
        "jellyfin::srv-1::bob::access_token",
        "jellyfin::srv-2::ana::access_token",
        "plex::::acct::access_token",
    ]
    assert [m.key.user_id for m in client.list("jellyfin", "srv-1")] == ["ana", "bob"]
    assert [m.key.server_id for m in client.list(user_id="ana")] == ["srv-1", "srv-2"]
    assert [m.key.provider for m in client.list(server_id="")] == ["plex"]

    one = client.list("jellyfin", attributes={"server_name": "One"})
    assert [m.key.user_id for m in one] == ["ana", "bob"]
    assert one[1].attributes == {"server_name": "One", "user_name": "bob"}
    both = client.list(attributes={"server_name": "One", "user_name": "ana"})
    assert [str(m.key) for m in both] == ["jellyfin::srv-1::ana::access_token"]
    assert client.list(attributes={"server_name": "one"}) == [], "values match exactly"


def test_list_follows_every_page(client: keyhaven.Client) -> None:
    count = 520  # over five of the daemon's default pages (100)
    for i in range(count):
        client.store(Key("emby", "srv-%04d" % i, "u"), b"t")
    client.store(Key("jellyfin", "other", "u"), b"t")
    listed = client.list("emby")
    assert [m.key.server_id for m in listed] == ["srv-%04d" % i for i in range(count)]
    assert len(client.list("emby", page_size=7)) == count
    assert len(client.list(page_size=1000)) == count + 1
    with pytest.raises(keyhaven.InvalidArgument):
        client.list(page_size=1001)


def test_logout_deletes_a_servers_logins(client: keyhaven.Client) -> None:
    for user in ("ana", "bob"):
        client.store(Key("jellyfin", "srv-1", user), b"t")
        client.store(Key("jellyfin", "srv-1", user, "refresh_token"), b"r")
    client.store(Key("jellyfin", "srv-2", "ana"), b"t")

    gone = client.logout("jellyfin", "srv-1", "ana")
    assert sorted(m.key.token_type for m in gone) == ["access_token", "refresh_token"]
    assert {m.key.user_id for m in client.list("jellyfin", "srv-1")} == {"bob"}

    gone = client.logout("jellyfin", "srv-1")
    assert {m.key.user_id for m in gone} == {"bob"}
    assert [m.key.server_id for m in client.list("jellyfin")] == ["srv-2"]
    assert client.logout("jellyfin", "srv-1") == [], "nothing left is not an error"


def test_status_and_the_handshake(daemon, client: keyhaven.Client) -> None:
    assert client.daemon_status.protocol == keyhaven.PROTOCOL == 1
    assert client.daemon_status.pid == daemon.process.pid
    client.store(JELLYFIN, b"t")
    status = client.status()
    assert status.credential_count == 1
    assert status.key_problem == ""
    assert client.socket_path == str(daemon.socket)
