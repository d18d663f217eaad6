#!/usr/bin/env python3
"""Puts two table.json files of bench/quant_table.py side by side (before -> after), for the
recipes present in the second, in its order.
  bench/compare_tables.py bench/results/gpu/lab-m.json bench/results/gpu/lab-m-seedfix.json"""
import json, sys

before = {r["recipe"]: r for r in json.load(open(sys.argv[1]))}
after = json.load(open(sys.argv[2]))
f = lambda v, p: "-" if v is None else f"{v:.{p}f}"
pair = lambda a, b, k, p: f"{f(a.get(k) if a else None, p)} / {f(b.get(k), p)}"
print("| recipe | bpw | valid PPL | wiki PPL | KLD (valid) | same top-1 | mean rank |")
print("|---|---|---|---|---|---|---|")
for r in after:
    b = before.get(r["recipe"])
    top = lambda x: None if x is None or x.get("top1") is None else 100 * x["top1"]
    print(f"| `{r['recipe']}` | {pair(b, r, 'bpw', 3)} | {pair(b, r, 'valid_ppl', 2)} | "
          f"{pair(b, r, 'wiki_ppl', 1)} | {pair(b, r, 'kld', 4)} | "
          f"{f(top(b), 1)}% / {f(top(r), 1)}% | {pair(b, r, 'mean_rank', 1)} |")
