#!/usr/bin/env bash
# build.sh: packs the test initramfs (busybox-static + init), uncompressed newc cpio.
# Cached under $VMSTACK_CACHE/initramfs-<hash of inputs>.cpio; prints the path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VMSTACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmstack}
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok'; then
	echo "build.sh: busybox-static missing — apt-get install busybox-static cpio" >&2
	exit 1
fi
bbver=$(dpkg-query -W -f='${Version}' busybox-static)
key=$( (cat "$here/init" "$here/build.sh"; echo "$bbver") | sha256sum | cut -c1-16)
out="$cache/initramfs-$key.cpio"
if [ -f "$out" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$cache"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,etc,mnt,root}
cp /bin/busybox "$root/bin/busybox"
for app in $("$root/bin/busybox" --list); do
	[ "$app" = busybox ] || ln -sf busybox "$root/bin/$app"
done
cp "$here/init" "$root/init"
chmod 755 "$root/init"
# Reproducible: fixed timestamps and owners, sorted names.
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
