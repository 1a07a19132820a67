#!/bin/sh
# Runs inside the Debian 12 guest (as root, from keyhaven-ci.service) and
# tests the keyhaven package under a real systemd user manager. Each result
# is one line on the second serial port (/dev/ttyS1), which the host reads:
#   PASS <check> | FAIL <check> -- <why> | INFO <text> | DONE
# then the guest powers off. Written into the image by run.sh.

out=/dev/ttyS1
say() {
	printf '%s\n' "$*" >"$out"
	printf '%s\n' "$*"
}
pass() { say "PASS $1"; }
fail() { say "FAIL $1 -- $2"; }
finish() {
	say DONE
	sync
	systemctl poweroff --no-block
	exit 0
}

uid=1000
as_user() {
	runuser -u kh -- env HOME=/home/kh XDG_RUNTIME_DIR=/run/user/$uid \
		DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus "$@"
}
user_ctl() { as_user systemctl --user "$@"; }
state() { user_ctl is-active "$1" 2>/dev/null; }

say "INFO guest: $(uname -r), $(systemctl --version | head -n 1)"

# The lingering user's manager starts at boot.
i=0
while [ "$(systemctl is-active user@$uid.service)" != active ] && [ $i -lt 120 ]; do
	sleep 1
	i=$((i + 1))
done
if [ "$(systemctl is-active user@$uid.service)" = active ]; then
	pass "a user manager runs for the lingering user kh"
else
	fail "a user manager runs for the lingering user kh" "user@$uid.service is $(systemctl is-active user@$uid.service)"
	finish
fi

if dpkg -i /root/ci/keyhaven.deb >/root/ci/dpkg.log 2>&1; then
	pass "the .deb installs (dpkg -i)"
else
	fail "the .deb installs (dpkg -i)" "$(tail -n 3 /root/ci/dpkg.log | tr '\n' ' ')"
	finish
fi

user_ctl daemon-reload
if user_ctl enable --now keyhavend.socket >/root/ci/enable.log 2>&1 &&
	[ "$(state keyhavend.socket)" = active ]; then
	pass "systemctl --user enable --now keyhavend.socket"
else
	fail "systemctl --user enable --now keyhavend.socket" "$(tr '\n' ' ' </root/ci/enable.log)"
	finish
fi

s=$(state keyhavend.service)
if [ "$s" = inactive ]; then
	pass "keyhavend.service is not running before the first connection"
else
	fail "keyhavend.service is not running before the first connection" "it is $s"
fi

token="tok-vm-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
if printf '%s' "$token" | as_user keyhaven store jellyfin srv-1 user-1 >/root/ci/store.log 2>&1 &&
	[ "$(state keyhavend.service)" = active ]; then
	pass "keyhaven store activates keyhavend.service through the socket"
else
	fail "keyhaven store activates keyhavend.service through the socket" \
		"$(tr '\n' ' ' </root/ci/store.log); service $(state keyhavend.service)"
fi

main_pid=$(user_ctl show -p MainPID --value keyhavend.service)
if as_user keyhaven status >/root/ci/status.log 2>&1 &&
	grep -q "pid $main_pid," /root/ci/status.log && grep -q "key tier:" /root/ci/status.log; then
	pass "keyhaven status answers from the activated daemon (pid $main_pid)"
else
	fail "keyhaven status answers from the activated daemon" "$(tr '\n' ' ' </root/ci/status.log)"
fi
say "INFO $(grep 'key tier:' /root/ci/status.log)"

# systemctl's own note that the socket can still activate the service is
# expected here; kept out of the journal checked below.
user_ctl stop keyhavend.service 2>/root/ci/stop.log
s=$(state keyhavend.service)
sock=$(state keyhavend.socket)
got=$(as_user keyhaven get -n jellyfin srv-1 user-1 2>/root/ci/get.log)
if [ "$s" = inactive ] && [ "$sock" = active ] && [ "$got" = "$token" ] &&
	[ "$(state keyhavend.service)" = active ]; then
	pass "the token survives a stop, and a get re-activates the daemon"
else
	fail "the token survives a stop, and a get re-activates the daemon" \
		"after stop: service $s, socket $sock; get: $(tr '\n' ' ' </root/ci/get.log)"
fi

# The whole journal of this boot about keyhaven: the user manager's lines
# on the units and the daemon's own.
journalctl -b --no-pager -o short-monotonic \
	USER_UNIT=keyhavend.service + _SYSTEMD_USER_UNIT=keyhavend.service + \
	USER_UNIT=keyhavend.socket + _SYSTEMD_USER_UNIT=keyhavend.socket >/root/ci/journal.log 2>&1
# (The host name is keyhaven-ci: match the daemon and unit name only.)
journalctl -b --no-pager -o short-monotonic | grep -i -e keyhavend -e 'namespace' \
	>>/root/ci/journal.log 2>&1
# Sandbox failures and warnings. The daemon's advice that its key is in a
# file (no Secret Service runs in this guest) is expected and listed apart.
grep -i -E 'namespace setup failed|failed to set up|ignoring|sandbox|permission denied|operation not permitted|status=2[0-9][0-9]|WARN|ERROR|failed' \
	/root/ci/journal.log | grep -v 'kept in a 0600 key file' | sort -u >/root/ci/bad.log
grep 'kept in a 0600 key file' /root/ci/journal.log | head -n 1 | sed 's/^/INFO expected (no Secret Service in the guest): /' |
	while IFS= read -r line; do say "$line"; done
if [ -s /root/ci/bad.log ]; then
	fail "the journal is free of sandbox failures and warnings" "$(wc -l </root/ci/bad.log) line(s), below"
	while IFS= read -r line; do say "INFO journal: $line"; done </root/ci/bad.log
else
	pass "the journal is free of sandbox failures and warnings ($(wc -l </root/ci/journal.log) keyhaven lines read)"
fi

as_user systemd-analyze --user security keyhavend.service >/root/ci/security.log 2>&1
level=$(sed -n 's/.*Overall exposure level for keyhavend.service: \([0-9.]*\).*/\1/p' /root/ci/security.log)
if [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 3.1) }'; then
	pass "systemd-analyze --user security keyhavend.service: exposure $level (limit 3.1)"
else
	fail "systemd-analyze --user security keyhavend.service: exposure ${level:-unknown} (limit 3.1)" \
		"$(tail -n 2 /root/ci/security.log | tr '\n' ' ')"
fi

finish
