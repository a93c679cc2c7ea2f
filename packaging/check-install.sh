#!/usr/bin/env bash
# packaging/check-install.sh DEB: installs the Debian package into a copy-on-write view of
# this machine's root (an overlay whose writes go to a tmpfs), inside new mount, network and
# PID namespaces, so nothing on the host changes and nothing leaves the machine. There it
# checks that dpkg installs it (maintainer scripts included), that `systemd-analyze verify`
# accepts ingot.service, and that the installed `ingot serve --config
# /etc/ingot/ingot.toml`, run as the service's user with the service's state directory,
# answers /v1 on loopback. Run as root (cargo xtask package --check).
set -euo pipefail
deb=$(readlink -f "$1")
[ -f "$deb" ] || { echo "check-install: no package at $1" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "check-install: needs root (namespaces, overlay, dpkg)" >&2; exit 1; }

# The namespace's mounts vanish with it; only this empty mount point is left to remove.
scratch=$(mktemp -d /tmp/ingot-pkg-check.XXXXXX)
trap 'rmdir "$scratch"' EXIT
unshare --mount --net --pid --fork --propagation private bash -s "$deb" "$scratch" <<'INNER'
set -euo pipefail
deb=$1
scratch=$2
# The overlay's writable layer lives on a tmpfs: a different filesystem from the lower one.
mount -t tmpfs -o size=2g tmpfs "$scratch"
mkdir -p "$scratch"/{upper,work,root}
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/root"
r=$scratch/root
mount -t proc proc "$r/proc"
mount --rbind /dev "$r/dev"
mount -t sysfs sysfs "$r/sys"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
cp "$deb" "$r/tmp/ingot.deb"
in_root() { chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

echo "check-install: dpkg -i $(basename "$deb")"
in_root dpkg -i /tmp/ingot.deb
in_root dpkg -s ingot | grep -q '^Status: install ok installed'
in_root getent passwd ingot >/dev/null
for f in /usr/bin/ingot /usr/lib/ingot/agent/vmlinuz /usr/lib/ingot/agent/initramfs.cpio.zst \
         /lib/systemd/system/ingot.service /etc/ingot/ingot.toml \
         /usr/share/bash-completion/completions/ingot /usr/share/man/man1/ingot-serve.1.gz \
         /usr/share/doc/ingot/copyright /usr/lib/sysctl.d/60-ingot.conf; do
    [ -s "$r$f" ] || { echo "check-install: $f missing from the package" >&2; exit 1; }
done
in_root man -l /usr/share/man/man1/ingot.1.gz >/dev/null 2>&1 || \
    { zcat "$r/usr/share/man/man1/ingot.1.gz" | grep -q '^.TH ingot 1'; }

echo "check-install: systemd-analyze verify ingot.service"
in_root systemd-analyze verify /lib/systemd/system/ingot.service

echo "check-install: ingot serve --config /etc/ingot/ingot.toml as user ingot"
ip link set lo up
# The provisioning listener on loopback too, to fetch the agent kernel it serves by default.
in_root runuser -u ingot -- env INGOT_NETBOOT__HTTP_LISTEN=127.0.0.1:8080 \
    /usr/bin/ingot serve --config /etc/ingot/ingot.toml > "$scratch/serve.log" 2>&1 &
serve=$!
ok=
for _ in $(seq 100); do
    if in_root curl -fsS http://127.0.0.1:6385/v1 > "$scratch/v1.json" 2>/dev/null; then
        ok=1
        break
    fi
    sleep 0.1
done
if [ -z "$ok" ]; then
    echo "check-install: the installed ingot serve did not answer /v1" >&2
    cat "$scratch/serve.log" >&2
    exit 1
fi
grep -q '"id": *"v1"' "$scratch/v1.json" || { echo "check-install: unexpected /v1: $(cat "$scratch/v1.json")" >&2; exit 1; }
# The agent ramdisk is found where the package put it (the default for an installed ingot).
in_root curl -fsS -o /tmp/vmlinuz http://127.0.0.1:8080/boot/vmlinuz
cmp "$r/tmp/vmlinuz" "$r/usr/lib/ingot/agent/vmlinuz" || \
    { echo "check-install: the served agent kernel is not the packaged one" >&2; exit 1; }
mode=$(in_root stat -c '%a %U' /var/lib/ingot)
[ "$mode" = "700 ingot" ] || { echo "check-install: state dir is $mode" >&2; exit 1; }
[ -f "$r/var/lib/ingot/ingot.db" ] || { echo "check-install: no database in /var/lib/ingot" >&2; exit 1; }
# Stop it as systemd would (SIGTERM to the service's processes); this PID namespace holds
# only what this script started, and the chroot's /proc is that namespace's.
in_root pkill -TERM -u ingot -x ingot
wait "$serve" || true

echo "check-install: dpkg --purge ingot"
in_root dpkg --purge ingot
if in_root getent passwd ingot >/dev/null; then
    echo "check-install: purge left the ingot user" >&2
    exit 1
fi
[ ! -e "$r/usr/bin/ingot" ] || { echo "check-install: purge left /usr/bin/ingot" >&2; exit 1; }
echo "check-install: ok"
INNER
