#!/usr/bin/env python3
"""decode_quant_fixture.py: writes tests/fixtures/decode/quant_dequant.bin, random blocks of
every supported GGUF tensor type with their dequantised values computed by the `gguf` Python
package (an implementation independent of ours). test_kernels_quant.c checks our
dequantisation against it. Deterministic (seeded); rerun after adding a type.

Record layout (little-endian): u32 type, u32 n_elements, u32 n_bytes, bytes[n_bytes],
f32[n_elements]. The file ends with type 0xFFFFFFFF.
"""
import os
import struct

import numpy as np
import gguf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "decode", "quant_dequant.bin")
T = gguf.GGMLQuantizationType


def main():
    rng = np.random.default_rng(1234)
    recs = []
    for qt in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K):
        n = 512
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        if qt in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q8_0):
            x = (rng.standard_normal(n) * 2).astype(np.float32)
            raw = gguf.quants.quantize(x.reshape(1, n), qt).view(np.uint8).reshape(-1)
        else:
            nb = n // bs
            raw = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
            d = rng.uniform(-0.05, 0.05, size=nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
            if qt == T.Q6_K:
                raw[:, 208:210] = d
            else:
                raw[:, 0:2] = d
                raw[:, 2:4] = rng.uniform(0, 0.05, size=nb).astype(np.float16).view(np.uint8).reshape(nb, 2)
            raw = raw.reshape(-1)
        deq = gguf.quants.dequantize(raw.reshape(1, -1), qt).astype(np.float32).reshape(-1)
        assert deq.size == n
        recs.append(struct.pack("<III", int(qt), n, raw.size) + raw.tobytes() + deq.tobytes())
    with open(OUT, "wb") as f:
        for r in recs:
            f.write(r)
        f.write(struct.pack("<I", 0xFFFFFFFF))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
