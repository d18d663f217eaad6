#!/usr/bin/env python3
"""How well each budget objective predicts the model's error (issue 24, "the objective's
quality"): N random allocations drawn from a measurement table (the report of a
`lrquant quantize --budget ... --objective layer-kl` run), each quantized with its recipes as
--layer-recipe overrides and evaluated (KLD against the FP model on valid); prints each
objective's prediction beside the measured KLD and the Spearman rank correlation per objective.

Allocations vary in size and shape: each draws a Dirichlet weight over the candidates and each
layer picks from it, so both the total bits and which layers get them change.

  bench/budget_objective_check.py --model models/lab-s --measurement rep.json --out out/objcheck
"""
import argparse, json, os, random, re, subprocess


def esc(name):
    return "^" + name.replace(".", "\\.") + "$"


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):  # average ranks of ties
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(a, b):
    ra, rb = ranks(a), ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/cpu/lrquant")
    ap.add_argument("--model", required=True)
    ap.add_argument("--shared", default=os.environ.get("LRQ_SHARED", "../shared"))
    ap.add_argument("--measurement", required=True, help="report of a --budget layer-kl run")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=40)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rep = json.load(open(a.measurement))
    m = rep["budget"]["measurement"]
    cands, layers = m["candidates"], m["layers"]
    weights = sum(l["in"] * l["out"] for l in layers)
    rng = random.Random(a.seed)
    rows = []
    for t in range(a.n):
        w = [rng.gammavariate(0.5, 1.0) for _ in cands]
        pick = [rng.choices(range(len(cands)), weights=w)[0] for _ in layers]
        pred = {"sum": 0.0, "power": 0.0, "block-kl": 0.0, "layer-kl": 0.0}
        nbytes = 0
        for i, (l, k) in enumerate(zip(layers, pick)):
            e = l["output_err"][k]
            nbytes += l["bytes"][k]
            pred["sum"] += e
            pred["power"] += e * e
            pred["block-kl"] += m["block_sensitivity"][l["block"]] * e * e
            pred["layer-kl"] += m["layer_sensitivity"][i] * e * e
        qdir = os.path.join(a.out, f"r{t:02d}")
        args = [a.bin, "--threads", str(a.threads), "quantize", "--model", a.model, "--calib",
                os.path.join(a.shared, "data/lab-corpus/calib.txt"), "--nsamples",
                str(a.nsamples), "--seqlen", str(a.seqlen), "--seed", "0", "--out", qdir,
                "--force", "--quiet", "--recipe", "fp"]
        for l, k in zip(layers, pick):
            args += ["--layer-recipe", esc(l["name"]) + "=" + cands[k]]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        ev = subprocess.run([a.bin, "--threads", str(a.threads), "eval", "--model", qdir, "--text",
                             os.path.join(a.shared, "data/lab-corpus/valid.txt"), "--ctx", "512",
                             "--max-windows", str(a.max_windows), "--json", "--quiet",
                             "--reference", a.model], check=True, stdout=subprocess.PIPE, text=True)
        kld = json.loads(ev.stdout)["kld"]
        row = {"bpw": 8 * nbytes / weights, "kld": kld, **pred}
        rows.append(row)
        print("ROW " + json.dumps(row), flush=True)
    json.dump(rows, open(os.path.join(a.out, "rows.json"), "w"))
    print("\n| allocation | bpw | measured KLD | " + " | ".join(pred) + " |")
    print("|---|---:|---:|" + "---:|" * len(pred))
    for t, r in enumerate(rows):
        print(f"| {t} | {r['bpw']:.3f} | {r['kld']:.4f} | " +
              " | ".join(f"{r[o]:.4g}" for o in pred) + " |")
    print("\nSpearman rank correlation with the measured KLD: " +
          ", ".join(f"{o} {spearman([r[o] for r in rows], [r['kld'] for r in rows]):.3f}"
                    for o in pred))


if __name__ == "__main__":
    main()
