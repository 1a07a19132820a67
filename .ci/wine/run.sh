#!/usr/bin/env bash
# Windows binaries under Wine: cross-builds the Windows release binaries and
# runs them end to end in a private WINEPREFIX, headless.
#
#   .ci/wine/run.sh
#
# Prints PASS or FAIL per check, then "N passed, N failed", and exits
# non-zero on any failure. What Wine cannot show is printed as "not shown
# under Wine", never counted as passed. Called by .ci/run after the Linux
# tests and the release build (never beside another cargo command).
#
# Needs root on Debian 12 (installs wine64, wine and gcc-mingw-w64-x86-64
# when missing) and rustup. Facts this relies on: /work/shared/RECIPES.md
# "Windows binaries under Wine" (Wine 8.0 lacks bcryptprimitives.dll, so a
# stand-in built from bcryptprimitives.c is copied into the prefix; test use
# only).
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)

passed=0
failed=0
pass() {
	echo "PASS  $1"
	passed=$((passed + 1))
}
fail() {
	echo "FAIL  $1${2:+ -- $2}"
	failed=$((failed + 1))
}
check() { # check NAME COMMAND...: PASS when the command succeeds
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
die() {
	echo "wine: $*" >&2
	exit 2
}

echo "== wine: tools"
missing=()
command -v wine >/dev/null 2>&1 || missing+=(wine64 wine)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64)
if [ ${#missing[@]} -gt 0 ]; then
	echo "-- installing ${missing[*]}"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		die "could not install ${missing[*]}"
fi
wine --version
rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 || die "rustup target add x86_64-pc-windows-gnu failed"

echo "== wine: cross build (x86_64-pc-windows-gnu, release)"
cargo build --release --target x86_64-pc-windows-gnu -p keyhaven-daemon -p keyhaven-cli --bins \
	--example seed_legacy || die "the Windows cross build failed"
out="${CARGO_TARGET_DIR:-target}/x86_64-pc-windows-gnu/release"

work=$(mktemp -d /tmp/keyhaven-wine.XXXXXX)
export WINEPREFIX=$work/prefix WINEARCH=win64 WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() {
	# Stops this prefix's wineserver and its processes, nothing else.
	wineserver -k >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

x86_64-w64-mingw32-gcc -shared -O2 -o "$work/bcryptprimitives.dll" \
	.ci/wine/bcryptprimitives.c .ci/wine/bcryptprimitives.def -ladvapi32 ||
	die "could not build the bcryptprimitives.dll stand-in"

echo "== wine: private prefix $WINEPREFIX"
timeout 180 wineboot -i >/dev/null 2>&1 || die "wineboot -i failed"
cp "$work/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
bin=$WINEPREFIX/drive_c/keyhaven
mkdir -p "$bin"
cp "$out/keyhaven.exe" "$out/keyhavend.exe" "$out/examples/seed_legacy.exe" "$bin/"
KH=$bin/keyhaven.exe
KHD=$bin/keyhavend.exe
SEED=$bin/seed_legacy.exe

# One daemon setup per name: its own pipe, data directory, key file and
# config, under C:\kh\<name>.
use() {
	S=$1
	S_DIR=$WINEPREFIX/drive_c/kh/$S
	mkdir -p "$S_DIR"
	[ -e "$S_DIR/config.toml" ] || : >"$S_DIR/config.toml"
	export KEYHAVEN_SOCKET="\\\\.\\pipe\\keyhaven-ci-$S"
	export KEYHAVEN_DATA_DIR="C:\\kh\\$S\\data"
	export KEYHAVEN_KEY_FILE="C:\\kh\\$S\\keyhaven.key"
	export KEYHAVEN_CONFIG="C:\\kh\\$S\\config.toml"
}

# Runs the CLI; stdout to $S_DIR/out, stderr to $S_DIR/err.
cli() {
	timeout 60 wine "$KH" "$@" >"$S_DIR/out" 2>"$S_DIR/err"
}
cli_in() { # cli_in STDIN ARGS...
	local input=$1
	shift
	printf '%s' "$input" | timeout 60 wine "$KH" "$@" >"$S_DIR/out" 2>"$S_DIR/err"
}

# Starts keyhavend in the background (a console program, as by hand) and
# waits until it answers.
DPID=
start_daemon() {
	wine "$KHD" >"$S_DIR/daemon.log" 2>&1 &
	DPID=$!
	local deadline=$((SECONDS + 60))
	while [ $SECONDS -lt $deadline ]; do
		if ! kill -0 "$DPID" 2>/dev/null; then
			echo "keyhavend exited at start:" >&2
			cat "$S_DIR/daemon.log" >&2
			return 1
		fi
		if cli status; then return 0; fi
		sleep 0.5
	done
	echo "keyhavend did not answer within 60 s" >&2
	return 1
}

# Ctrl-C to the console daemon; waits for its exit; true when it exited 0.
stop_daemon() {
	[ -n "$DPID" ] || return 1
	kill -INT "$DPID" 2>/dev/null
	local deadline=$((SECONDS + 30))
	while kill -0 "$DPID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
	if kill -0 "$DPID" 2>/dev/null; then
		kill -KILL "$DPID" 2>/dev/null
		wait "$DPID" 2>/dev/null
		DPID=
		return 1
	fi
	wait "$DPID"
	local code=$?
	DPID=
	[ "$code" -eq 0 ]
}

# status --json field (python3 reads it)
field() {
	cli status --json || return 1
	python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$S_DIR/out" "$1"
}
tier_state() { # tier_state TIER -> its state in status --json
	cli status --json || return 1
	python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
print(next((t["state"] for t in s["key_tiers"] if t["tier"]==sys.argv[2]), "absent"))' "$S_DIR/out" "$1"
}

# Reads KEY (4 fields) and compares its bytes with EXPECTED.
get_equals() { # get_equals EXPECTED PROVIDER SERVER USER
	local expected=$1
	shift
	cli get -n "$@" || { cat "$S_DIR/err" >&2; return 1; }
	printf '%s' "$expected" >"$S_DIR/expected"
	cmp -s "$S_DIR/expected" "$S_DIR/out" || {
		echo "got bytes: $(od -An -tx1 "$S_DIR/out" | head -2)" >&2
		echo "expected:  $(od -An -tx1 "$S_DIR/expected" | head -2)" >&2
		return 1
	}
}

echo "== wine: checks"

# 1. The named pipe and the Credential Manager tier.
use main
if start_daemon; then
	pass "keyhavend starts and serves its named pipe"
else
	fail "keyhavend starts and serves its named pipe" "$(tail -5 "$S_DIR/daemon.log")"
fi
tok1="tok-round-trip-$RANDOM"
round_trip() {
	cli_in "$tok1" store jellyfin srv-1 user-1 &&
		get_equals "$tok1" jellyfin srv-1 user-1 &&
		cli list && grep -q "jellyfin::srv-1::user-1::access_token" "$S_DIR/out" &&
		cli_in "other" store plex '' acct-9 && cli delete plex '' acct-9 &&
		! cli get plex '' acct-9
}
check "CLI round trip through the named pipe (store, get, list, delete)" round_trip
[ "$(field key_tier)" = keyring ] &&
	pass "Credential Manager tier: a new store keeps its data key there" ||
	fail "Credential Manager tier: a new store keeps its data key there" "key_tier=$(field key_tier)"

no_systemd_in_doctor() {
	cli doctor || return 1
	if grep -qi "systemd" "$S_DIR/out"; then
		grep -i systemd "$S_DIR/out" >&2
		return 1
	fi
}
check "doctor offers no systemd tier and no systemd-creds advice (bug 5)" no_systemd_in_doctor

# 2. Legacy read-through from Credential Manager entries written as
# keyring-rs' set_password writes them (UTF-16LE).
seed() { # seed SERVICE USER TOKEN
	printf '%s' "$3" | timeout 60 wine "$SEED" "$1" "$2" >/dev/null 2>"$S_DIR/seed.err" ||
		{ cat "$S_DIR/seed.err" >&2; return 1; }
}
reel_tok="reel-tök-😀-$RANDOM"
jt_tok="jellytau-ünïcode-🎬-$RANDOM"
jt2_tok="jellytau-service-placement-€-$RANDOM"
seed "reel.plex_123" token "$reel_tok" &&
	seed jellytau "jellytau::srv-jt::user-jt::access_token" "$jt_tok" &&
	seed "jellytau::srv.jt2::user-jt2::access_token" "jellytau-app" "$jt2_tok" ||
	fail "seeding legacy Credential Manager entries"
check "legacy read-through: Reel's UTF-16 entry migrates byte for byte (bug 2)" \
	get_equals "$reel_tok" plex '' 123
check "legacy read-through: JellyTau's entry under service jellytau, byte for byte" \
	get_equals "$jt_tok" jellyfin srv-jt user-jt
check "legacy read-through: JellyTau's key-as-the-service placement is found (bug 3)" \
	get_equals "$jt2_tok" jellyfin srv.jt2 user-jt2
migrated() {
	cli list && grep -q "plex::::123::access_token" "$S_DIR/out" &&
		grep -q "jellyfin::srv.jt2::user-jt2::access_token" "$S_DIR/out"
}
check "legacy read-through: the migrated tokens are in the store" migrated

# 3. The store lock.
second_refused() {
	local code
	KEYHAVEN_SOCKET="\\\\.\\pipe\\keyhaven-ci-second" timeout 60 wine "$KHD" >"$S_DIR/second.log" 2>&1
	code=$?
	[ "$code" -ne 0 ] && [ "$code" -ne 124 ] && grep -q "already running" "$S_DIR/second.log"
}
check "store lock: a second keyhavend on the same store is refused" second_refused

# 4. Ctrl-C, restart persistence.
grep_log() { grep -q "$1" "$S_DIR/daemon.log"; }
if stop_daemon && grep_log "received Ctrl-C"; then
	pass "clean stop on Ctrl-C: exit code 0"
else
	fail "clean stop on Ctrl-C: exit code 0" "$(tail -3 "$S_DIR/daemon.log")"
fi
if start_daemon && get_equals "$tok1" jellyfin srv-1 user-1 && get_equals "$reel_tok" plex '' 123; then
	pass "restart persistence: tokens stored before a restart are read after it"
else
	fail "restart persistence: tokens stored before a restart are read after it"
fi
stop_daemon >/dev/null

# 5. The key-file tier (bug 1; bug 4 on Windows too).
use file
echo 'key_source = "file"' >"$S_DIR/config.toml"
if start_daemon && [ "$(field key_tier)" = file ] && [ -s "$S_DIR/keyhaven.key" ]; then
	pass "file tier: first start with key_source = \"file\" (bug 1)"
else
	fail "file tier: first start with key_source = \"file\" (bug 1)" "$(grep -m1 -i error "$S_DIR/daemon.log")"
fi
tokf="tok-file-$RANDOM"
cli_in "$tokf" store emby srv-f user-f >/dev/null
old_id=$(field key_id)
rotate_ok() {
	cli key rotate || { cat "$S_DIR/err" >&2; return 1; }
	local new_id
	new_id=$(field key_id)
	[ -n "$new_id" ] && [ "$new_id" != "$old_id" ] &&
		field key_source | grep -q "$new_id" &&
		cli doctor && grep -q "$new_id" "$S_DIR/out" && ! grep -q "$old_id" "$S_DIR/out" &&
		get_equals "$tokf" emby srv-f user-f
}
check "file tier: key rotate; status and doctor name the new key id (bugs 1, 4)" rotate_ok
if stop_daemon && start_daemon && get_equals "$tokf" emby srv-f user-f; then
	pass "file tier: the rotated key opens the store after a restart"
else
	fail "file tier: the rotated key opens the store after a restart"
fi
stop_daemon >/dev/null

use move
echo 'allow_key_downgrade = true' >"$S_DIR/config.toml"
start_daemon >/dev/null || fail "move: keyhavend starts"
tokm="tok-move-$RANDOM"
cli_in "$tokm" store jellyfin srv-m user-m >/dev/null
move_ok() {
	[ "$(field key_tier)" = keyring ] || return 1
	cli key move --to file || { cat "$S_DIR/err" >&2; return 1; }
	[ "$(field key_tier)" = file ] && [ -s "$S_DIR/keyhaven.key" ] &&
		[ "$(tier_state file)" = active ] && [ "$(tier_state keyring)" != active ] &&
		[ "$(tier_state keyring)" != holds-key ] &&
		get_equals "$tokm" jellyfin srv-m user-m
}
check "file tier: key move --to file from the Credential Manager; doctor no longer reports the old tier (bugs 1, 4)" move_ok
if stop_daemon && start_daemon && [ "$(field key_tier)" = file ] && get_equals "$tokm" jellyfin srv-m user-m; then
	pass "file tier: the moved key opens the store after a restart"
else
	fail "file tier: the moved key opens the store after a restart"
fi
stop_daemon >/dev/null

# 6. Autostart, and a clean stop without a console (bug 5).
use auto
toka="tok-auto-$RANDOM"
autostarted() {
	printf '%s' "$toka" | KEYHAVEN_AUTOSTART=1 timeout 60 wine "$KH" store jellyfin srv-a user-a \
		>"$S_DIR/out" 2>"$S_DIR/err" || { cat "$S_DIR/err" >&2; return 1; }
	cli status && get_equals "$toka" jellyfin srv-a user-a
}
check "autostart: keyhaven starts keyhavend (detached, no console) on demand" autostarted
stopped_cleanly() {
	timeout 60 wine "$KHD" --stop >"$S_DIR/stop.out" 2>&1 || { cat "$S_DIR/stop.out" >&2; return 1; }
	grep -q "stopped" "$S_DIR/stop.out" || return 1
	# Nothing answers any more (exit code 5: daemon unavailable).
	cli status
	[ $? -eq 5 ]
}
check "clean stop of the autostarted daemon: keyhavend --stop (bug 5)" stopped_cleanly
if start_daemon && get_equals "$toka" jellyfin srv-a user-a; then
	pass "after keyhavend --stop the store opens again with the token"
else
	fail "after keyhavend --stop the store opens again with the token"
fi
stop_daemon >/dev/null
timeout 60 wine "$KHD" --stop >"$S_DIR/stop2.out" 2>&1 && grep -q "no keyhavend is running" "$S_DIR/stop2.out" &&
	pass "keyhavend --stop with no daemon says so and succeeds" ||
	fail "keyhavend --stop with no daemon says so and succeeds" "$(cat "$S_DIR/stop2.out")"

echo "== wine: not shown under Wine (neither passed nor failed)"
echo "not shown under Wine: FILE_FLAG_FIRST_PIPE_INSTANCE (Wine ignores it; a second daemon on the same pipe name is not refused by the pipe itself)"
echo "not shown under Wine: the pipe's DACL enforced on open (Wine stores the DACL but does not enforce it)"
echo "not shown under Wine: a client of another user refused (every Wine process has the same user SID)"
echo "not shown under Wine: remote clients refused (PIPE_REJECT_REMOTE_CLIENTS has no effect under Wine)"

echo "== wine: $passed passed, $failed failed ($(($(date +%s) - started)) s including the cross build)"
[ "$failed" -eq 0 ]
