#!/usr/bin/env bash
# build.sh: builds the minimal test guest kernel (vmlinux + bzImage) from Debian's
# linux-source-6.1, guest.config + vmstack.config and nested-kvm-guest.patch.
# The result is cached under $VMSTACK_CACHE/linux-<hash of inputs>/, so a second
# run is instant. Prints the cache directory on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${VMSTACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmstack}
src=/usr/src/linux-source-6.1.tar.xz
if [ ! -r "$src" ]; then
	echo "build.sh: $src missing — apt-get install linux-source-6.1 bc flex bison libelf-dev libssl-dev" >&2
	exit 1
fi
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null || stat -c %s "$src")
key=$( (cat "$here/guest.config" "$here/vmstack.config" "$here/nested-kvm-guest.patch" "$here/build.sh"; echo "$srcver") | sha256sum | cut -c1-16)
out="$cache/linux-$key"
if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
	echo "$out"
	exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/linux-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build.sh: building the test guest kernel in $work (about 5 minutes on 2 cores)" >&2
tar -C "$work" -xf "$src"
cd "$work"/linux-source-6.1
patch -s -p1 < "$here/nested-kvm-guest.patch"
make -s tinyconfig >&2
scripts/kconfig/merge_config.sh -m .config "$here/guest.config" "$here/vmstack.config" >/dev/null
make -s olddefconfig >&2
# Reproducible: fixed build identity, no timestamps from this machine.
export KBUILD_BUILD_TIMESTAMP="2026-01-01" KBUILD_BUILD_USER=vmstack KBUILD_BUILD_HOST=vmstack
make -s -j"$(nproc)" vmlinux bzImage >&2
mkdir -p "$out.tmp"
cp vmlinux "$out.tmp/vmlinux"
cp arch/x86/boot/bzImage "$out.tmp/bzImage"
cp .config "$out.tmp/config"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
