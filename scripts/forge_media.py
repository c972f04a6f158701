#!/usr/bin/env python3
"""Writes the hostile media files scripts/bench.sh media measures `probe` on, into DIR:

  forged.mp4            1.2 kB, one H.264 track whose stts, stsc and stsz declare 80
                        million samples of one byte (libavformat indexed them in 1.9 GB)
  forged-fragments.mp4  the same track fragmented: one trun declares the 80 million
  forged.flv            an onMetaData keyframe index declaring 200 million entries

They are the files tests/it/media_hostile.rs builds; usage: forge_media.py DIR
"""
import os
import struct
import sys

N = 80_000_000


def box(t, payload):
    return struct.pack(">I", 8 + len(payload)) + t + payload


def full(t, flags, payload):
    return box(t, struct.pack(">I", flags) + payload)


def be(*fields):
    return struct.pack(f">{len(fields)}I", *fields)


IDENTITY = be(0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def moov(tables, extra=b""):
    mvhd = be(0, 0, 1000, 1000, 0x10000) + b"\1\0" + bytes(10) + IDENTITY + bytes(24) + be(2)
    tkhd = be(0, 0, 1, 0, 1000, 0, 0, 0, 0) + IDENTITY + be(64 << 16, 64 << 16)
    mdhd = be(0, 0, 25, 0) + b"\x55\xc4\0\0"
    hdlr = be(0) + b"vide" + bytes(12) + b"VideoHandler\0"
    avc1 = (bytes(7) + b"\1" + bytes(16) + be((64 << 16) | 64, 0x480000, 0x480000, 0)
            + b"\0\1" + bytes(32) + b"\0\x18\xff\xff")
    stsd = full(b"stsd", 0, be(1) + box(b"avc1", avc1))
    dinf = box(b"dinf", full(b"dref", 0, be(1) + full(b"url ", 1, b"")))
    stbl = box(b"stbl", stsd + b"".join(tables))
    minf = box(b"minf", full(b"vmhd", 1, bytes(8)) + dinf + stbl)
    mdia = box(b"mdia", full(b"mdhd", 0, mdhd) + full(b"hdlr", 0, hdlr) + minf)
    trak = box(b"trak", full(b"tkhd", 3, tkhd) + mdia)
    return box(b"moov", full(b"mvhd", 0, mvhd) + trak + extra)


def forged_mp4():
    ftyp = box(b"ftyp", b"isom\0\0\2\0isomiso2avc1mp41")

    def tables(chunk):
        return [full(b"stts", 0, be(1, N, 1)), full(b"stsc", 0, be(1, 1, N, 1)),
                full(b"stsz", 0, be(1, N)), full(b"stco", 0, be(1, chunk))]

    at = len(ftyp) + len(moov(tables(0))) + 8
    return ftyp + moov(tables(at)) + box(b"mdat", bytes(600))


def forged_fragments():
    tables = [full(b"stts", 0, be(0)), full(b"stsc", 0, be(0)),
              full(b"stsz", 0, be(0, 0)), full(b"stco", 0, be(0))]
    mvex = box(b"mvex", full(b"trex", 0, be(1, 1, 1, 1, 0)))
    traf = box(b"traf", full(b"tfhd", 0x20000, be(1)) + full(b"trun", 1, be(N, 0)))
    moof = box(b"moof", full(b"mfhd", 0, be(1)) + traf)
    return (box(b"ftyp", b"iso5\0\0\2\0iso5iso6mp41") + moov(tables, mvex) + moof
            + box(b"mdat", bytes(600)))


def forged_flv():
    def key(k):
        return struct.pack(">H", len(k)) + k

    def array(n):
        return b"\x0a" + be(n) + b"\0" + struct.pack(">d", 0.0)

    keyframes = (b"\x03" + key(b"times") + array(200_000_000) + key(b"filepositions")
                 + array(200_000_000) + b"\0\0\x09")
    meta = (b"\x02" + key(b"onMetaData") + b"\x08" + be(1) + key(b"keyframes") + keyframes
            + b"\0\0\x09")

    def tag(kind, data):
        t = bytes([kind]) + struct.pack(">I", len(data))[1:] + bytes(7) + data
        return t + be(len(t))

    return b"FLV\1\1\0\0\0\x09\0\0\0\0" + tag(18, meta) + tag(9, b"\x17\0\0\0\0")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in (("forged.mp4", forged_mp4()), ("forged-fragments.mp4", forged_fragments()),
                       ("forged.flv", forged_flv())):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
