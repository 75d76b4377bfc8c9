"""Writes the seed corpus for fuzz_safetensors / test_embed_safetensors into corpus_safetensors/:
small valid files (F32, F16, BF16, I64, empty tensors) and a few hand-made lies. Deterministic."""
import os, struct, json

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus_safetensors")
os.makedirs(here, exist_ok=True)

def write(name, header, data=b"", hlen=None):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(os.path.join(here, name), "wb") as f:
        f.write(struct.pack("<Q", len(h) if hlen is None else hlen) + h + data)

ok = {"__metadata__": {"format": "pt"},
      "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
      "h": {"dtype": "F16", "shape": [2], "data_offsets": [16, 20]},
      "b": {"dtype": "BF16", "shape": [2], "data_offsets": [20, 24]},
      "i": {"dtype": "I64", "shape": [1], "data_offsets": [24, 32]},
      "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [32, 32]}}
data = struct.pack("<4f", 1, 2, 3, 4) + bytes([0, 0x3c, 0, 0xc0, 0x80, 0x3f, 0x40, 0x40]) + struct.pack("<q", 7)
write("valid_mixed", ok, data)
write("valid_empty_header", {})
write("truncated_data", ok, data[:20])
write("header_len_lies", ok, data, hlen=1 << 40)
write("header_len_short", ok, data, hlen=10)
write("offsets_past_end", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1 << 50]}}, b"\0" * 16)
write("shape_mismatch", {"w": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, b"\0" * 16)
write("shape_overflow", {"w": {"dtype": "F32", "shape": [1 << 31, 1 << 31, 1 << 31], "data_offsets": [0, 16]}}, b"\0" * 16)
write("negative_offset", {"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}}, b"\0" * 16)
write("overlap", {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16)
write("not_json", b"{\"w\": {\"dtype\": \"F32\", ", b"\0" * 16)
write("unknown_dtype", {"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
with open(os.path.join(here, "tiny"), "wb") as f:
    f.write(b"\x02\0\0")  # shorter than the 8-byte length
