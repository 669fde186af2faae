"""Writes the byte-level frame vectors in this folder from the Python reference.

Run it only when the frame format changes (and bump the version): the committed
.bin files are the specification's examples, checked byte for byte by both
backends in tests/test_vectors.py. Each case lists how to rebuild the value.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from datacomms.backend.python import framing

HERE = pathlib.Path(__file__).parent

# name -> (value description, seq, timestamp_ns, flags)
GOOD = {
    "raw_hello": ({"bytes": "68656c6c6f"}, 1, 1_700_000_000_000_000_000, 0),
    "raw_empty": ({"bytes": ""}, 2, 0, 0),
    "raw_64": ({"bytes": "ab" * 64}, 3, 42, 0),
    "json_joints": ({"json": {"timestamp": 1.5, "joint_1": 0.1, "joint_2": -0.25, "joint_3": 3.0}}, 7, 123456789, 0),
    "json_string": ({"json": "héllo"}, 8, 5, 0),
    "json_null": ({"json": None}, 9, 6, 0),
    "control_hello": ({"json": {"hello": 1}}, 0, 7, framing.FLAG_CONTROL),
    "array_f8_2x3": ({"array": {"dtype": "<f8", "shape": [2, 3], "values": [0, 1, 2, 3, 4, 5]}}, 10, 8, 0),
    "array_u1_100": ({"array": {"dtype": "|u1", "shape": [100], "values": list(range(100))}}, 11, 9, 0),
    "array_be_i4": ({"array": {"dtype": ">i4", "shape": [3], "values": [1, -2, 3]}}, 12, 10, 0),
    "array_0d": ({"array": {"dtype": "<f4", "shape": [], "values": [2.5]}}, 13, 11, 0),
    "array_struct": ({"array": {"dtype": [["x", "<f4"], ["n", "<i2"]], "shape": [2],
                                "values": [[1.5, 7], [-1.0, 9]]}}, 14, 12, 0),
    "mixed": ({"mixed": {"img": {"dtype": "|u1", "shape": [2, 2], "values": [1, 2, 3, 4]},
                         "blob": "00ff", "t": 3}}, 15, 13, 0),
}


def build(desc: dict) -> object:
    """The Python value a vector's description stands for."""
    if "bytes" in desc:
        return bytes.fromhex(desc["bytes"])
    if "json" in desc:
        return desc["json"]
    if "array" in desc:
        a = desc["array"]
        dt = np.lib.format.descr_to_dtype([tuple(f) for f in a["dtype"]] if isinstance(a["dtype"], list)
                                          else a["dtype"])
        if dt.names:
            return np.array([tuple(v) for v in a["values"]], dtype=dt).reshape(a["shape"])
        return np.array(a["values"], dtype=dt).reshape(a["shape"])
    m = desc["mixed"]
    return {"img": build({"array": m["img"]}), "blob": bytes.fromhex(m["blob"]), "t": m["t"]}


def main() -> None:
    manifest = {}
    for name, (desc, seq, ts, flags) in GOOD.items():
        frame = framing.encode_bytes(build(desc), seq, ts, flags)
        (HERE / f"{name}.bin").write_bytes(frame)
        manifest[name] = {"value": desc, "seq": seq, "timestamp_ns": ts, "flags": flags, "length": len(frame)}
    (HERE / "vectors.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
