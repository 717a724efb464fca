#!/usr/bin/python3
"""make_corpus.py: generates the hostile qcow2 images (the build runs it into
build/tests/unit/qcow2-corpus; also the seed corpus for libFuzzer runs).

Valid small images made by Debian's qemu-img/qemu-io (v2 and v3, 512 B and 4 KiB clusters,
zlib and zstd compressed clusters, zero clusters, internal snapshots, refcount widths 1 and
64, a backing file name), then copies with one field broken each: header fields, L1/L2
entries, refcount table and block entries, snapshot table entries, header extensions,
truncations, and seeded random byte flips. Each image is written twice: as is (the fuzz
target opens it read-only) and with a byte 0x01 appended (opened read-write, so the write
paths meet the broken metadata too). Usage: tests/fuzz/make_corpus.py [OUTDIR [STAMP]]
"""

import random
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("qcow2-corpus")
STAMP = Path(sys.argv[2]) if len(sys.argv) > 2 else None  # for meson's custom_target


def run(*args):
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)


def make_bases(tmp):
    bases = {}

    def qio(img, *cmds):
        args = ["qemu-io", "-f", "qcow2"]
        for c in cmds:
            args += ["-c", c]
        run(*args, img)

    def new(name, opts, size="1M", *cmds, backing=None):
        img = tmp / f"{name}.qcow2"
        args = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts]
        if backing:
            args += ["-b", backing, "-F", "raw"]
        run(*args, img, size)
        if cmds:
            qio(img, *cmds)
        bases[name] = img.read_bytes()
        return img

    writes = ("write -P 0x11 0 4k", "write -P 0x22 300k 9k", "write -P 0x33 1020k 4k")
    new("v3-512", "cluster_size=512", "1M", *writes)
    new("v2-4k", "cluster_size=4096,compat=0.10", "1M", *writes)
    new("v3-4k-zero", "cluster_size=4096", "1M", *writes, "write -z 300k 8k")
    new("v3-4k-rc1", "cluster_size=4096,refcount_bits=1", "1M", *writes)
    new("v3-4k-rc64", "cluster_size=4096,refcount_bits=64", "1M", *writes)
    (tmp / "base.raw").write_bytes(bytes(1 << 20))
    b = new("v3-4k-backing", "cluster_size=4096", "1M", "write -P 0x44 8k 4k",
            backing=str(tmp / "base.raw"))
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "/nonexistent/base.raw", "-F", "raw", b)
    bases["v3-4k-backing"] = b.read_bytes()
    snap = new("v3-4k-snap", "cluster_size=4096", "1M", *writes)
    run("qemu-img", "snapshot", "-c", "s1", snap)
    qio(snap, "write -P 0x55 0 8k")
    run("qemu-img", "snapshot", "-c", "second", snap)
    bases["v3-4k-snap"] = snap.read_bytes()
    raw = tmp / "pattern.raw"
    raw.write_bytes((bytes(range(256)) * 16 * 64) + bytes(256 << 10) + b"\x77" * (64 << 10))
    for ctype in ("zlib", "zstd"):
        img = tmp / f"comp-{ctype}.qcow2"
        run("qemu-img", "convert", "-c", "-O", "qcow2", "-o",
            f"cluster_size=4096,compression_type={ctype}", raw, img)
        bases[f"v3-4k-{ctype}"] = img.read_bytes()
    return bases


def be(fmt, data, off):
    return struct.unpack_from(">" + fmt, data, off)[0]


def put(data, fmt, off, value):
    d = bytearray(data)
    struct.pack_into(">" + fmt, d, off, value)
    return bytes(d)


def header_mutations(d):
    cb = be("I", d, 20)
    csize = 1 << cb
    end = len(d) + csize * 4
    m = {
        "magic": put(d, "I", 0, 0x514649fa),
        "version1": put(d, "I", 4, 1),
        "version4": put(d, "I", 4, 4),
        "cluster-bits-8": put(d, "I", 20, 8),
        "cluster-bits-22": put(d, "I", 20, 22),
        "cluster-bits-63": put(d, "I", 20, 63),
        "size-huge": put(d, "Q", 24, 1 << 63),
        "size-max": put(d, "Q", 24, (1 << 64) - 512),
        "size-0": put(d, "Q", 24, 0),
        "crypt-aes": put(d, "I", 32, 1),
        "crypt-luks": put(d, "I", 32, 2),
        "l1-size-0": put(d, "I", 36, 0),
        "l1-size-huge": put(d, "I", 36, 0x7fffffff),
        "l1-size-1": put(d, "I", 36, 1),
        "l1-offset-0": put(d, "Q", 40, 0),
        "l1-offset-eof": put(d, "Q", 40, end),
        "l1-offset-unaligned": put(d, "Q", 40, be("Q", d, 40) + 8),
        "l1-offset-huge": put(d, "Q", 40, 1 << 62),
        "reft-offset-0": put(d, "Q", 48, 0),
        "reft-offset-eof": put(d, "Q", 48, end),
        "reft-clusters-0": put(d, "I", 56, 0),
        "reft-clusters-huge": put(d, "I", 56, 0xffffffff),
        "snapshots-huge": put(d, "I", 60, 0xffffffff),
        "snapshots-offset-eof": put(put(d, "I", 60, 3), "Q", 64, end),
        "snapshots-offset-unaligned": put(put(d, "I", 60, 1), "Q", 64, csize + 8),
        "backing-offset-eof": put(put(d, "Q", 8, end), "I", 16, 10),
        "backing-size-huge": put(put(d, "Q", 8, 512), "I", 16, 0xffffffff),
        "backing-in-header": put(put(d, "Q", 8, 4), "I", 16, 200),
    }
    if be("I", d, 4) >= 3:
        for bit in (0, 1, 2, 3, 4, 13, 63):
            m[f"incompat-bit{bit}"] = put(d, "Q", 72, be("Q", d, 72) | (1 << bit))
        m["autoclear-all"] = put(d, "Q", 88, (1 << 64) - 1)
        m["compat-lazy"] = put(d, "Q", 80, 1)
        m["refcount-order-7"] = put(d, "I", 96, 7)
        m["refcount-order-huge"] = put(d, "I", 96, 0xffffffff)
        m["header-length-0"] = put(d, "I", 100, 0)
        m["header-length-huge"] = put(d, "I", 100, 0xfffffff0)
        m["header-length-cluster"] = put(d, "I", 100, csize)
        m["compression-type-9"] = put(put(d, "Q", 72, be("Q", d, 72) | 8), "B", 104, 9)
        hl = be("I", d, 100)
        m["ext-len-huge"] = put(put(d, "I", hl, 0x12345678), "I", hl + 4, 0xfffffff0)
        m["ext-backing-fmt-huge"] = put(put(d, "I", hl, 0xe2792aca), "I", hl + 4, csize)
        zeros_ext = bytearray(d)
        for o in range(hl, csize - 8, 8):  # unknown extensions of length 0 to the end
            struct.pack_into(">II", zeros_ext, o, 0x1234, 0)
        m["ext-many"] = bytes(zeros_ext)
    return m


def table_mutations(d):
    cb = be("I", d, 20)
    csize = 1 << cb
    end = len(d) + csize * 4
    m = {}
    l1 = be("Q", d, 40)
    l1e = [be("Q", d, l1 + 8 * i) for i in range(min(be("I", d, 36), 8))]
    used = [i for i, e in enumerate(l1e) if e]
    if used:
        i = used[0]
        o = l1 + 8 * i
        m["l1e-eof"] = put(d, "Q", o, (1 << 63) | end)
        m["l1e-unaligned"] = put(d, "Q", o, l1e[i] + 8)
        m["l1e-header"] = put(d, "Q", o, 1 << 63)
        m["l1e-self"] = put(d, "Q", o, (1 << 63) | l1)
        m["l1e-reserved"] = put(d, "Q", o, l1e[i] | (1 << 60))
        m["l1e-not-copied"] = put(d, "Q", o, l1e[i] & ~(1 << 63))
        l2 = l1e[i] & 0x00fffffffffffe00
        if l2 + csize <= len(d):
            l2e = [be("Q", d, l2 + 8 * k) for k in range(csize // 8)]
            data = [k for k, e in enumerate(l2e) if e]
            if data:
                k = data[0]
                o2 = l2 + 8 * k
                m["l2e-eof"] = put(d, "Q", o2, (1 << 63) | end)
                m["l2e-header"] = put(d, "Q", o2, 1 << 63)
                m["l2e-l1"] = put(d, "Q", o2, (1 << 63) | l1)
                m["l2e-unaligned"] = put(d, "Q", o2, l2e[k] + 0x10)
                m["l2e-reserved"] = put(d, "Q", o2, l2e[k] | 2)
                m["l2e-compressed-huge"] = put(d, "Q", o2, (1 << 62) | ((1 << 62) - 1))
                m["l2e-compressed-eof"] = put(d, "Q", o2, (1 << 62) | end)
                m["l2e-zero-eof"] = put(d, "Q", o2, (1 << 63) | end | 1)
                m["l2e-all-ones"] = put(d, "Q", o2, (1 << 64) - 1)
                m["l2-all-same"] = bytes(bytearray(d[:l2]) + struct.pack(">Q", l2e[k]) *
                                         (csize // 8) + d[l2 + csize:])
    reft = be("Q", d, 48)
    r0 = be("Q", d, reft)
    m["reft0-eof"] = put(d, "Q", reft, end)
    m["reft0-zero"] = put(d, "Q", reft, 0)
    m["reft0-header"] = put(d, "Q", reft, 0)
    m["reft0-unaligned"] = put(d, "Q", reft, r0 + 8)
    if r0 and r0 + csize <= len(d):
        m["refblock-zeroed"] = d[:r0] + bytes(csize) + d[r0 + csize:]
        m["refblock-ones"] = d[:r0] + b"\xff" * csize + d[r0 + csize:]
    return m


def snapshot_mutations(d):
    m = {}
    n, off = be("I", d, 60), be("Q", d, 64)
    if not n:
        return m
    m["snap-l1-eof"] = put(d, "Q", off, len(d) * 4)
    m["snap-l1-size-huge"] = put(d, "I", off + 8, 0x7fffffff)
    m["snap-id-size-huge"] = put(d, "H", off + 12, 0xffff)
    m["snap-name-size-huge"] = put(d, "H", off + 14, 0xffff)
    m["snap-extra-huge"] = put(d, "I", off + 36, 0xffffffff)
    m["snap-count-plus1"] = put(d, "I", 60, n + 1)
    return m


def main():
    if not shutil.which("qemu-img"):
        sys.exit("make_corpus.py: qemu-img (qemu-utils) is needed")
    tmp = Path(tempfile.mkdtemp(prefix="vmstack-corpus-"))
    try:
        bases = make_bases(tmp)
    finally:
        shutil.rmtree(tmp)
    images = {}
    for name, d in bases.items():
        images[name] = d
        for group in (header_mutations, table_mutations, snapshot_mutations):
            for mname, md in group(d).items():
                images[f"{name}--{mname}"] = md
        cs = 1 << be("I", d, 20)
        images[f"{name}--trunc-header"] = d[:cs]
        images[f"{name}--trunc-half"] = d[:len(d) // 2]
    images["empty"] = b""
    images["magic-only"] = b"QFI\xfb"
    images["v3-short-header"] = b"QFI\xfb\0\0\0\3" + bytes(64)
    rng = random.Random(20261123)
    for name in ("v3-512", "v2-4k", "v3-4k-snap", "v3-4k-zlib"):
        d = bases[name]
        for k in range(6):
            b = bytearray(d)
            for _ in range(12):
                b[rng.randrange(min(len(b), 16384))] = rng.randrange(256)
            images[f"{name}--flip{k}"] = bytes(b)
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for name, d in sorted(images.items()):
        (OUT / f"{name}.qcow2").write_bytes(d)
        (OUT / f"{name}.rw.qcow2").write_bytes(d + b"\x01")
    print(f"make_corpus.py: {len(images) * 2} images in {OUT}")
    if STAMP:
        STAMP.write_text(f"{len(images) * 2}\n")


if __name__ == "__main__":
    main()
