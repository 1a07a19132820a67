#!/usr/bin/env bash
# keyhaven under a real systemd user manager: boots a minimal Debian 12 guest
# under qemu (software emulation), installs the .deb there, enables
# keyhavend.socket for a lingering user and checks socket activation, a stop
# and re-activation, the journal and the sandbox's exposure level
# (guest-test.sh has the checks).
#
#   .ci/systemd-vm/run.sh [PATH/TO/keyhaven.deb]
#
# Without an argument it takes the newest target/debian/*.deb (what
# `cargo deb -p keyhaven-daemon --no-build` wrote). Prints PASS or FAIL per
# check and "N passed, N failed"; exits non-zero on any failure, on a guest
# that never reports, and (clearly, at once) when the image must be built
# and the Debian mirror is unreachable.
#
# The guest image is cached in $KEYHAVEN_CI_CACHE (default
# /var/cache/keyhaven-ci/systemd-vm), keyed by a hash of build-image.sh (its
# package list and customisation), outside the clone. Run it after cargo,
# not beside it: the emulation uses both cores. Needs root (mmdebstrap,
# debugfs on the image) and Debian 12 host packages, installed when missing:
# qemu-system-x86 seabios mmdebstrap e2fsprogs.
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
here=.ci/systemd-vm

die() {
	echo "systemd-vm: $*" >&2
	echo "== systemd-vm: 0 passed, 1 failed ($*)"
	exit 1
}

deb=${1:-$(ls -t "${CARGO_TARGET_DIR:-target}"/debian/*.deb 2>/dev/null | head -n 1)}
[ -n "$deb" ] && [ -f "$deb" ] || die "no .deb given and none in target/debian (run cargo deb -p keyhaven-daemon first)"

echo "== systemd-vm: tools"
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
[ -e /usr/share/seabios/bios-256k.bin ] || missing+=(seabios)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v debugfs >/dev/null 2>&1 || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ]; then
	echo "-- installing ${missing[*]}"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		die "could not install ${missing[*]}"
fi

cache_root=${KEYHAVEN_CI_CACHE:-/var/cache/keyhaven-ci/systemd-vm}
key=$(sha256sum "$here/build-image.sh" | cut -c1-16)
image=$cache_root/$key
if [ -s "$image/rootfs.img" ] && [ -s "$image/vmlinuz" ] && [ -s "$image/initrd.img" ]; then
	echo "== systemd-vm: cached image $image"
else
	echo "== systemd-vm: building the guest image (cache key $key)"
	mkdir -p "$cache_root"
	tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
	if ! "$here/build-image.sh" "$tmp"; then
		rm -rf "$tmp"
		die "building the guest image failed (see above)"
	fi
	# Older images are of no further use; the new one appears whole or not at all.
	find "$cache_root" -mindepth 1 -maxdepth 1 -not -name "$(basename "$tmp")" -exec rm -rf {} +
	mv "$tmp" "$image"
fi

work=$(mktemp -d /var/tmp/keyhaven-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp --sparse=always "$image/rootfs.img" "$work/rootfs.img"
cp "$deb" "$work/keyhaven.deb"
debugfs -w -f - "$work/rootfs.img" >"$work/debugfs.log" 2>&1 <<EOF
mkdir /root/ci
write $here/guest-test.sh /root/ci/guest-test.sh
write $work/keyhaven.deb /root/ci/keyhaven.deb
EOF
debugfs -R "ls -l /root/ci" "$work/rootfs.img" 2>/dev/null | grep -q keyhaven.deb ||
	die "could not write the test into the image: $(cat "$work/debugfs.log")"

echo "== systemd-vm: booting the guest (qemu, software emulation, at most 10 min)"
: >"$work/results.txt"
timeout 600 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
	-nographic -monitor none \
	-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
	-append "root=/dev/vda rw console=ttyS0 quiet" \
	-drive "file=$work/rootfs.img,format=raw,if=virtio" \
	-nic none \
	-serial "file:$work/console.log" -serial "file:$work/results.txt" \
	</dev/null >"$work/qemu.log" 2>&1
qemu_code=$?

tr -d '\r' <"$work/results.txt" >"$work/results.clean"
passed=$(grep -c '^PASS ' "$work/results.clean")
failed=$(grep -c '^FAIL ' "$work/results.clean")
sed -e 's/^PASS /PASS  /' -e 's/^FAIL /FAIL  /' -e 's/^INFO /      /' -e '/^DONE$/d' "$work/results.clean"
if ! grep -q '^DONE$' "$work/results.clean"; then
	if [ "$qemu_code" -eq 124 ]; then
		echo "FAIL  the guest finished its tests within 10 minutes (qemu timed out)"
	else
		echo "FAIL  the guest finished its tests (qemu exit code $qemu_code)"
	fi
	failed=$((failed + 1))
	echo "-- last lines of the guest console:"
	tr -d '\r' <"$work/console.log" | tail -n 30
	tail -n 5 "$work/qemu.log"
fi
echo "== systemd-vm: $passed passed, $failed failed ($(($(date +%s) - started)) s)"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
