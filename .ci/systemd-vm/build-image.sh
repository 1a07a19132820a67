#!/usr/bin/env bash
# Builds the Debian 12 guest image for .ci/systemd-vm/run.sh:
#   build-image.sh <out dir>
# writes <out dir>/rootfs.img (ext4), vmlinuz and initrd.img.
#
# The image is a minimal bookworm with systemd, a user manager for a
# lingering user `kh` (uid 1000) and a oneshot unit, keyhaven-ci.service,
# that runs /root/ci/guest-test.sh at boot when it exists. run.sh writes the
# test script and the .deb into a copy of the image with debugfs, so the
# image itself does not change with the code and can be cached: run.sh keys
# the cache on a hash of this file.
#
# Needs root and the host packages mmdebstrap, e2fsprogs.
set -euo pipefail

out=${1:?usage: build-image.sh OUT_DIR}
mirror=${KEYHAVEN_CI_MIRROR:-http://deb.debian.org/debian}

packages=systemd,systemd-sysv,udev,dbus,dbus-user-session,libpam-systemd,procps,iproute2,kmod,initramfs-tools,linux-image-cloud-amd64

# Fail fast and clearly when the mirror cannot be reached, instead of
# letting apt retry for minutes.
host=$(printf '%s\n' "$mirror" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
if ! timeout 20 bash -c "exec 3<>/dev/tcp/$host/80" 2>/dev/null; then
	echo "systemd-vm: the Debian mirror $mirror is unreachable (no TCP connection to $host:80 within 20 s); cannot build the VM image" >&2
	exit 3
fi

work=$(mktemp -d /var/tmp/keyhaven-vm-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root

# The guest's test runner: a oneshot system unit that waits for the user
# manager of `kh` and runs the test script the host dropped in.
unit='[Unit]
Description=keyhaven CI guest test
After=multi-user.target user@1000.service
ConditionPathExists=/root/ci/guest-test.sh

[Service]
Type=oneshot
ExecStart=/bin/sh /root/ci/guest-test.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target'

timeout 900 mmdebstrap --variant=minbase --include="$packages" \
	--customize-hook='chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash kh' \
	--customize-hook='mkdir -p "$1/var/lib/systemd/linger" && touch "$1/var/lib/systemd/linger/kh"' \
	--customize-hook='echo keyhaven-ci > "$1/etc/hostname"' \
	--customize-hook='printf "/dev/vda / ext4 rw 0 1\n" > "$1/etc/fstab"' \
	--customize-hook="printf '%s\n' '$unit' > \"\$1/etc/systemd/system/keyhaven-ci.service\"" \
	--customize-hook='chroot "$1" systemctl enable keyhaven-ci.service' \
	--customize-hook='chroot "$1" passwd -d root' \
	bookworm "$root" "$mirror"

mkdir -p "$out"
cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp "$root"/boot/initrd.img-* "$out/initrd.img"
rm -f "$out/rootfs.img"
mkfs.ext4 -q -L keyhaven-ci -d "$root" "$out/rootfs.img" 2G
echo "systemd-vm: image built in $out"
