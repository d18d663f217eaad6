#!/usr/bin/env python3
"""llama.cpp's own K-quant mixes against lrquant's K-quant recipes, every file evaluated by
llama.cpp itself (tests/llama_cpp/ppl.mjs): perplexity and KL divergence against the F32 export on
the first W nonoverlap-512 windows of the lab corpus's valid.txt.

For each llama.cpp type (Q4_K_M, Q3_K_M, Q2_K) the peer is what `llama_model_quantize` (called
through ctypes in the libllama that node-llama-cpp ships) makes from lrquant's F32 export, with the
embedding kept BF16 as lrquant keeps it, so only the projections differ. lrquant's row quantizes
the same projections with GPTQ onto the same types, tensor by tensor (--layer-recipe overrides
copy the mix's per-tensor choices), so both files have the same projection bits per weight. The
low-rank rows add a branch (exported as a LoRA adapter) on top of a K-quant residual; their bits
count the branch as lrquant stores it (F16 factors; the adapter file holds them as F32).

  bench/gguf_peer.py [--models lab-m,lab-mx] [--windows 8] [--nsamples 64] [--build build/cpu]
Prints a Markdown table.
"""
import argparse
import ctypes
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("LRQ_SHARED", os.path.join(REPO, "..", "shared"))
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
      "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
      "ffn_down": "mlp.down_proj"}
# ggml type numbers and sizes (values per block, bytes per block) of the types that appear.
TYPES = {0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
         6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 10: ("q2_K", 256, 84),
         11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144), 13: ("q5_K", 256, 176),
         14: ("q6_K", 256, 210), 20: ("iq4_nl", 32, 18), 30: ("bf16", 1, 2)}
LLAMA_FTYPES = {"Q4_K_M": 15, "Q3_K_M": 12, "Q2_K": 10}
GGML_TYPE_BF16 = 30


def tensor_types(path):
    """{name: (ggml type number, number of values)} from a GGUF file's header."""
    with open(path, "rb") as f:
        data = f.read(1 << 24)
    off = 0

    def take(fmt):
        nonlocal off
        v = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string():
        nonlocal off
        n = take("Q")
        s = data[off:off + n].decode()
        off += n
        return s

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip(t):
        nonlocal off
        if t == 8:
            string()
        elif t == 9:
            et, n = take("I"), take("Q")
            for _ in range(n):
                skip(et)
        else:
            off += sizes[t]

    assert data[:4] == b"GGUF", path
    off = 8
    n_tensors, n_kv = take("Q"), take("Q")
    for _ in range(n_kv):
        string()
        skip(take("I"))
    out = {}
    for _ in range(n_tensors):
        name = string()
        nd = take("I")
        ne = [take("q") for _ in range(nd)]
        t = take("I")
        take("Q")
        n = 1
        for x in ne:
            n *= x
        out[name] = (t, n)
    return out


def tensor_bytes(t, n):
    _, blk, bb = TYPES[t]
    return n // blk * bb


def projection_bits(path, adapter=None):
    """Bits per weight of the seven projections (the adapter's factors counted as F16)."""
    tt = tensor_types(path)
    weights = nbytes = 0
    for name, (t, n) in tt.items():
        if name.split(".")[-2] in PROJ:
            weights += n
            nbytes += tensor_bytes(t, n)
    if adapter:
        nbytes += sum(2 * n for (_, n) in tensor_types(adapter).values())
    return 8.0 * nbytes / weights


class QuantizeParams(ctypes.Structure):  # llama_model_quantize_params of llama.h (v0.4.0)
    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int32),
                ("output_tensor_type", ctypes.c_int32), ("token_embedding_type", ctypes.c_int32),
                ("allow_requantize", ctypes.c_bool), ("quantize_output_tensor", ctypes.c_bool),
                ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
                ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool),
                ("imatrix", ctypes.c_void_p), ("kv_overrides", ctypes.c_void_p),
                ("tt_overrides", ctypes.c_void_p), ("prune_layers", ctypes.c_void_p),
                ("max_buf_size", ctypes.c_size_t)]


def llama_quantize(lib, src, dst, ftype):
    p = lib.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = os.cpu_count() or 1
    p.token_embedding_type = GGML_TYPE_BF16  # the embedding as lrquant keeps it
    p.output_tensor_type = GGML_TYPE_BF16
    rc = lib.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize {src} -> {dst} failed ({rc})")


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="lab-m,lab-mx")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--nsamples", type=int, default=64)
    ap.add_argument("--build", default=os.path.join(REPO, "build", "cpu"))
    a = ap.parse_args()
    lrq = os.path.join(a.build, "lrquant")
    llama_dir = os.path.join(a.build, "llama_cpp")
    run(["bash", os.path.join(REPO, "scripts", "llama_cpp_setup.sh"), llama_dir])
    arch = "linux-arm64" if os.uname().machine in ("aarch64", "arm64") else "linux-x64"
    bins = os.path.join(llama_dir, "node_modules", "@node-llama-cpp", arch, "bins", arch)
    lib = ctypes.CDLL(os.path.join(bins, "libllama.v0.4.0.so"))
    lib.llama_model_quantize_default_params.restype = QuantizeParams
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                         ctypes.POINTER(QuantizeParams)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    lib.llama_backend_init()
    text = os.path.join(SHARED, "data", "lab-corpus", "valid.txt")
    calib = os.path.join(SHARED, "data", "lab-corpus", "calib.txt")
    tmp = tempfile.mkdtemp(prefix="gguf_peer_")
    try:
        table(a, lrq, lib, llama_dir, text, calib, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table(a, lrq, lib, llama_dir, text, calib, tmp):

    def llama_eval(model, ref, lora=None):
        cmd = ["node", os.path.join(REPO, "tests", "llama_cpp", "ppl.mjs"), "--llama-dir",
               llama_dir, "--model", model, "--text", text, "--ctx", "512", "--max-windows",
               str(a.windows), "--threads", str(os.cpu_count() or 1), "--reference", ref]
        if lora:
            cmd += ["--lora", lora]
        return json.loads(run(cmd))

    def ours(model, name, recipe, overrides=(), lora=False):
        folder = os.path.join(tmp, name)
        cmd = [lrq, "quantize", "--model", model, "--calib", calib, "--nsamples",
               str(a.nsamples), "--seqlen", "512", "--recipe", recipe, "--out", folder, "--quiet"]
        for o in overrides:
            cmd += ["--layer-recipe", o]
        run(cmd)
        out = folder + ".gguf"
        cmd = [lrq, "export", "--model", folder, "--out", out]
        if lora:
            cmd += ["--lora-out", folder + ".lora.gguf"]
        run(cmd)
        return out, (folder + ".lora.gguf" if lora else None)

    print(f"| model | file | quantizer | projection bpw | llama.cpp ppl | KLD vs F32 | same top |")
    print("|---|---|---|---:|---:|---:|---:|")

    def row(model, label, who, path, ref, lora=None):
        r = llama_eval(path, ref, lora)
        print(f"| {model} | {label} | {who} | {projection_bits(path, lora):.4f} | "
              f"{r['ppl']:.4f} | {r['kld']:.5f} | {r['same_top']:.4f} |", flush=True)

    for name in a.models.split(","):
        model = os.path.join(SHARED, "models", name)
        f32 = os.path.join(tmp, name + "-f32.gguf")
        run([lrq, "export", "--model", model, "--out", f32, "--type", "f32"])
        row(name, "F32", "lrquant export", f32, f32)
        for ftype, base in (("Q4_K_M", "q4_k"), ("Q3_K_M", "q3_k"), ("Q2_K", "q2_k")):
            peer = os.path.join(tmp, f"{name}-{ftype}.gguf")
            llama_quantize(lib, f32, peer, LLAMA_FTYPES[ftype])
            row(name, ftype, "llama.cpp llama_model_quantize", peer, f32)
            # The mix's per-tensor types, as --layer-recipe overrides of gptq:<base>.
            overrides = []
            for tname, (t, _) in sorted(tensor_types(peer).items()):
                parts = tname.split(".")
                if parts[0] != "blk" or parts[2] not in PROJ:
                    continue
                tn = TYPES[t][0].lower()
                if tn != base:
                    hf = f"model.layers.{parts[1]}.{HF[parts[2]]}".replace(".", r"\.")
                    overrides.append(f"^{hf}$=gptq:{tn}")
            path, _ = ours(model, f"{name}-gptq-{ftype}", f"gptq:{base}", overrides)
            row(name, f"gptq:{base} + the {ftype} mix", "lrquant", path, f32)
        for recipe in ("flrq:q3_k,residual=gptq", "gptq:q3_k+lr:r16,scale=diag"):
            path, lora = ours(model, f"{name}-{recipe.replace(':', '_').replace(',', '_')}",
                              recipe, lora=True)
            row(name, f"{recipe} + LoRA adapter", "lrquant", path, f32, lora)


if __name__ == "__main__":
    main()
