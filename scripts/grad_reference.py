#!/usr/bin/env python3
"""Independent autograd reference for the differentiable Llama block (src/model/block_grad.h).

Builds a tiny Llama decoder block -- hidden 16, 2 query heads sharing 1 KV head, head_dim 8,
intermediate 32 -- written the way Hugging Face's LlamaDecoderLayer computes it (RMSNorm,
rotate_half RoPE, repeat_kv for grouped-query attention, causal softmax, SiLU-gated MLP, two
residual adds), in float64. It draws the weights, an input X of T = 5 tokens and a loss weight
G from a seeded torch.Generator, evaluates Y = block(X) and L = sum(Y * G), takes dL/dX and
the gradient of all nine weights (two norms, seven projections) by torch.autograd, and writes
inputs and results to tests/data/grad_block_reference.safetensors:

  x, G, y, <weight name> (e.g. "self_attn.q_proj.weight"), grad.x, grad.<weight name>
  __metadata__: hidden, n_heads, n_kv_heads, head_dim, intermediate, rms_eps, rope_theta,
                rope_interleaved, T, seed, torch

tests/grad_test.cpp (GradBlock.MatchesPyTorchAutograd) reads the inputs from that file, runs
the C++ block and compares y and every gradient (F64 within 1e-12, F32 within 1e-5): CI needs
no PyTorch, and this script is only rerun to regenerate the fixture. Nothing here shares code
with the C++ side; the two agree on the formulas only (RoPE angles in float64:
1 / theta^(2i/d) times the position; eps is the float32 value of rms_eps, as the C++ side
stores eps as a float).

Usage: python3 scripts/grad_reference.py [--out PATH] [--seed N]
Needs PyTorch (Debian: python3-torch, under /usr/bin/python3 where a pyenv python3 comes first
on PATH). The safetensors file is written by hand (no numpy, no safetensors package).
"""
import argparse
import json
import os
import struct
import sys

import torch

HIDDEN, N_HEADS, N_KV_HEADS, HEAD_DIM, INTERMEDIATE, T = 16, 2, 1, 8, 32, 5
RMS_EPS, ROPE_THETA = "1e-05", 10000.0

WEIGHTS = [
    "input_layernorm.weight", "post_attention_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
    "self_attn.o_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
    "mlp.down_proj.weight",
]


def float32_value(s):
    """The double nearest to float32(s): what the C++ side's `float eps` widens to."""
    return struct.unpack("<f", struct.pack("<f", float(s)))[0]


def draw(gen):
    """Seeded inputs: norm weights near 1, projections of entries ~ N(0, 1/in) (q and k
    twice that, for attention sharper than uniform), X and G standard normal."""
    def randn(*shape, sd=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * sd + mean

    sh, si = HIDDEN ** -0.5, INTERMEDIATE ** -0.5
    qw, kw = N_HEADS * HEAD_DIM, N_KV_HEADS * HEAD_DIM
    w = {
        "input_layernorm.weight": randn(HIDDEN, sd=0.2, mean=1.0),
        "post_attention_layernorm.weight": randn(HIDDEN, sd=0.2, mean=1.0),
        "self_attn.q_proj.weight": randn(qw, HIDDEN, sd=2 * sh),
        "self_attn.k_proj.weight": randn(kw, HIDDEN, sd=2 * sh),
        "self_attn.v_proj.weight": randn(kw, HIDDEN, sd=sh),
        "self_attn.o_proj.weight": randn(HIDDEN, qw, sd=sh),
        "mlp.gate_proj.weight": randn(INTERMEDIATE, HIDDEN, sd=sh),
        "mlp.up_proj.weight": randn(INTERMEDIATE, HIDDEN, sd=sh),
        "mlp.down_proj.weight": randn(HIDDEN, INTERMEDIATE, sd=si),
    }
    x = randn(T, HIDDEN)
    g = randn(T, HIDDEN)
    return w, x, g


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rope(x, positions):
    """x: [heads, T, head_dim], Hugging Face's apply_rotary_pos_emb in float64."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, dtype=torch.float64) / HEAD_DIM))
    freqs = positions[:, None].to(torch.float64) * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + rotate_half(x) * emb.sin()


def block(x, w, eps):
    n = x.shape[0]
    pos = torch.arange(n)
    h = rms_norm(x, w["input_layernorm.weight"], eps)
    q = (h @ w["self_attn.q_proj.weight"].T).view(n, N_HEADS, HEAD_DIM).transpose(0, 1)
    k = (h @ w["self_attn.k_proj.weight"].T).view(n, N_KV_HEADS, HEAD_DIM).transpose(0, 1)
    v = (h @ w["self_attn.v_proj.weight"].T).view(n, N_KV_HEADS, HEAD_DIM).transpose(0, 1)
    q, k = rope(q, pos), rope(k, pos)
    group = N_HEADS // N_KV_HEADS
    k = k.repeat_interleave(group, dim=0)  # repeat_kv: query head i reads KV head i // group
    v = v.repeat_interleave(group, dim=0)
    scores = q @ k.transpose(-1, -2) / HEAD_DIM ** 0.5
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(causal, float("-inf"))
    att = torch.softmax(scores, dim=-1) @ v  # [heads, T, head_dim]
    att = att.transpose(0, 1).reshape(n, N_HEADS * HEAD_DIM)
    x1 = x + att @ w["self_attn.o_proj.weight"].T
    m = rms_norm(x1, w["post_attention_layernorm.weight"], eps)
    a = torch.nn.functional.silu(m @ w["mlp.gate_proj.weight"].T) * (m @ w["mlp.up_proj.weight"].T)
    return x1 + a @ w["mlp.down_proj.weight"].T


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().to(torch.float64).contiguous()
        data = struct.pack("<%dd" % t.numel(), *t.flatten().tolist())
        header[name] = {"dtype": "F64", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data buffer 8-byte aligned, as lrquant writes it
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data",
                                                   "grad_block_reference.safetensors"))
    ap.add_argument("--seed", type=int, default=20)
    args = ap.parse_args()

    gen = torch.Generator().manual_seed(args.seed)
    w, x, g = draw(gen)
    leaves = {name: t.clone().requires_grad_(True) for name, t in w.items()}
    xl = x.clone().requires_grad_(True)
    y = block(xl, leaves, float32_value(RMS_EPS))
    loss = (y * g).sum()
    loss.backward()

    tensors = {"x": x, "G": g, "y": y}
    tensors.update(w)
    tensors["grad.x"] = xl.grad
    for name in WEIGHTS:
        tensors["grad." + name] = leaves[name].grad
    meta = {
        "hidden": str(HIDDEN), "n_heads": str(N_HEADS), "n_kv_heads": str(N_KV_HEADS),
        "head_dim": str(HEAD_DIM), "intermediate": str(INTERMEDIATE), "rms_eps": RMS_EPS,
        "rope_theta": repr(ROPE_THETA), "rope_interleaved": "false", "T": str(T),
        "seed": str(args.seed), "torch": torch.__version__,
        "generator": "scripts/grad_reference.py",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_safetensors(args.out, tensors, meta)
    print("%s: loss %.17g, |dL/dX| %.6g (torch %s)" %
          (os.path.relpath(args.out), loss.item(), xl.grad.norm().item(), torch.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
