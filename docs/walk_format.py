#!/usr/bin/env python3
"""An independent reader of a tern data directory, written from docs/FORMAT.md alone.

It shares no code with the engine: it walks the commitlog and every consume queue, checks every
record and entry, and prints one JSON object summarising what it found. The engine's test suite
(engine/tests/independent_reader.rs) compares that summary with what the engine serves, so the
document and the code cannot drift apart unnoticed.

Usage: walk_format.py DATA_DIR
"""
import json
import os
import struct
import sys

_POLY = 0x82F63B78  # CRC32C, reflected
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def fnv1a_64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


RECORD_MAGIC = 0x4E524554
EOS_MAGIC = 0x534F4554
HEADER = struct.Struct("<IIIHHQQQQQ16sIIIHHHBB")
assert HEADER.size == 92


def is_name(n):
    return len(n) == 20 and n.isdigit()


def parse_record(seg, pos, seg_start):
    """Return (record dict, size) or raise ValueError."""
    if len(seg) - pos < 92:
        raise ValueError("truncated header")
    (total, magic, crc, version, flags, clog_off, q_off, store_ts, born_ts, deliver_at, msg_id,
     queue_id, reconsume, body_len, topic_len, keys_len, props_len, tag_len, reserved) = HEADER.unpack_from(seg, pos)
    if magic != RECORD_MAGIC:
        raise ValueError("bad magic")
    if total < 92 or pos + total > len(seg):
        raise ValueError("bad size")
    if crc32c(seg[pos + 12:pos + total]) != crc:
        raise ValueError("bad crc")
    if version != 1 or reserved != 0:
        raise ValueError("bad version")
    if 92 + topic_len + tag_len + keys_len + props_len + body_len != total:
        raise ValueError("lengths")
    if clog_off != seg_start + pos:
        raise ValueError("self offset")
    at = pos + 92
    topic = seg[at:at + topic_len].decode()
    at += topic_len
    tag = seg[at:at + tag_len].decode()
    at += tag_len
    keys_raw = seg[at:at + keys_len]
    at += keys_len
    keys = []
    k = 0
    while k < len(keys_raw):
        n = keys_raw[k]
        keys.append(keys_raw[k + 1:k + 1 + n].decode())
        k += 1 + n
    props_raw = seg[at:at + props_len]
    at += props_len
    props = []
    k = 0
    while k < len(props_raw):
        (n,) = struct.unpack_from("<H", props_raw, k)
        name = props_raw[k + 2:k + 2 + n].decode()
        k += 2 + n
        (n,) = struct.unpack_from("<H", props_raw, k)
        value = props_raw[k + 2:k + 2 + n].decode()
        k += 2 + n
        props.append([name, value])
    body = seg[at:at + body_len]
    return {
        "commitlog_offset": clog_off, "size": total, "topic": topic, "queue_id": queue_id,
        "queue_offset": q_off, "tag": tag, "keys": keys, "properties": props,
        "body_crc": crc32c(body), "store_timestamp_ms": store_ts, "flags": flags,
    }, total


def walk(data):
    records = {}
    seg_dir = os.path.join(data, "commitlog")
    names = sorted(n for n in os.listdir(seg_dir) if is_name(n))
    expected_start = None
    for name in names:
        start = int(name)
        with open(os.path.join(seg_dir, name), "rb") as f:
            seg = f.read()
        if expected_start is not None and start != expected_start:
            raise SystemExit(f"segment {name} does not follow the previous one")
        expected_start = start + len(seg)
        pos = 0
        while pos + 8 <= len(seg):
            total, magic = struct.unpack_from("<II", seg, pos)
            if total == 0 and magic == 0:
                break
            if magic == EOS_MAGIC:
                if pos + total != len(seg):
                    raise SystemExit(f"bad end-of-segment marker in {name} at {pos}")
                break
            rec, size = parse_record(seg, pos, start)
            records[rec["commitlog_offset"]] = rec
            pos += size
    queues = {}
    cq_root = os.path.join(data, "consumequeue")
    for topic in sorted(os.listdir(cq_root)) if os.path.isdir(cq_root) else []:
        for qid in sorted(os.listdir(os.path.join(cq_root, topic)), key=int):
            qdir = os.path.join(cq_root, topic, qid)
            entries = []
            for name in sorted(n for n in os.listdir(qdir) if is_name(n)):
                with open(os.path.join(qdir, name), "rb") as f:
                    raw = f.read()
                first_index = int(name) // 20
                if first_index != len(entries) and not entries:
                    entries.extend([None] * first_index)
                for i in range(0, len(raw) - len(raw) % 20, 20):
                    off, size, tag_hash = struct.unpack_from("<QIQ", raw, i)
                    if off == 0 and size == 0 and tag_hash == 0:
                        break
                    entries.append((off, size, tag_hash))
            checked = []
            for index, e in enumerate(entries):
                if e is None:
                    continue
                off, size, tag_hash = e
                rec = records.get(off)
                if rec is None or rec["size"] != size or rec["topic"] != topic or rec["queue_id"] != int(qid) \
                        or rec["queue_offset"] != index or fnv1a_64(rec["tag"].encode()) != tag_hash:
                    raise SystemExit(f"consume queue {topic}/{qid} entry {index} does not match its record")
                checked.append([index, off, rec["tag"], rec["body_crc"]])
            queues[f"{topic}/{qid}"] = checked
    with open(os.path.join(data, "checkpoint"), "rb") as f:
        cp = f.read()
    best = None
    for slot in (cp[0:64], cp[64:128]):
        if len(slot) < 64:
            continue
        magic, version, flags, seq, clog_durable, cq_durable, ts = struct.unpack_from("<IHHQQQQ", slot, 0)
        (crc, reserved) = struct.unpack_from("<II", slot, 56)
        if magic == 0x504B4354 and version == 1 and reserved == 0 and crc32c(slot[:56]) == crc:
            if best is None or seq > best["sequence"]:
                best = {"sequence": seq, "commitlog_durable": clog_durable, "cq_durable": cq_durable,
                        "clean": bool(flags & 1)}
    with open(os.path.join(data, "config", "topics.json")) as f:
        topics = json.load(f)
    assert topics["format"] == "tern-topics" and topics["version"] == 1
    return {"records": len(records), "queues": queues, "checkpoint": best,
            "topics": {t["name"]: t["queues"] for t in topics["topics"]}}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(json.dumps(walk(sys.argv[1])))
