#!/bin/sh
# Installs the keyhavend launchd agent for the current user (no admin).
#
#   packaging/launchd/install.sh [path/to/keyhavend]
#
# The default daemon is the `keyhavend` found on PATH (e.g. from
# `cargo install --path daemon`, which puts it in ~/.cargo/bin).
# Uninstall: launchctl bootout gui/$(id -u)/org.keyhaven.keyhavend
#            rm ~/Library/LaunchAgents/org.keyhaven.keyhavend.plist
set -eu

here=$(cd "$(dirname "$0")" && pwd)
keyhavend=${1:-$(command -v keyhavend || true)}
if [ -z "$keyhavend" ] || [ ! -x "$keyhavend" ]; then
	echo "install.sh: keyhavend not found; pass its path as the first argument" >&2
	exit 1
fi
case $keyhavend in
/*) ;;
*) keyhavend=$(cd "$(dirname "$keyhavend")" && pwd)/$(basename "$keyhavend") ;;
esac

# The same directory the daemon and clients use without XDG_RUNTIME_DIR:
# ${TMPDIR:-/tmp}/keyhaven-<uid>, private to the user.
tmp=$(getconf DARWIN_USER_TEMP_DIR 2>/dev/null || printf '%s' "${TMPDIR:-/tmp}")
sockdir=${tmp%/}/keyhaven-$(id -u)
mkdir -p -m 0700 "$sockdir"
chmod 0700 "$sockdir"

logdir=$HOME/Library/Logs/keyhaven
mkdir -p "$logdir"
agents=$HOME/Library/LaunchAgents
mkdir -p "$agents"
plist=$agents/org.keyhaven.keyhavend.plist

sed -e "s|@KEYHAVEND@|$keyhavend|" \
	-e "s|@SOCKET@|$sockdir/keyhaven.sock|" \
	-e "s|@LOG@|$logdir/keyhavend.log|" \
	"$here/org.keyhaven.keyhavend.plist" >"$plist"
plutil -lint "$plist"

launchctl bootout "gui/$(id -u)/org.keyhaven.keyhavend" 2>/dev/null || true
launchctl bootstrap "gui/$(id -u)" "$plist"
echo "keyhavend agent installed: socket $sockdir/keyhaven.sock, log $logdir/keyhavend.log"
