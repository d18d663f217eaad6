#!/usr/bin/env python3
"""Renders the ROW json files written by bench/quant_table.py (one folder per run, copied into
bench/results/) as one markdown table, sorted by bits then recipe.
  bench/results_table.py bench/results/lab-m-lr [more folders...]"""
import glob, json, sys

rows = []
for d in sys.argv[1:]:
    rows += [json.load(open(f)) for f in sorted(glob.glob(d + "/row*.json"))]
f = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"
print("| recipe | bpw | valid PPL | wiki PPL | KLD | same top-1 | mean rank | quantize s |")
print("|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (-round(r["bpw"]), r["recipe"])):
    print(f"| `{r['recipe']}` | {f(r['bpw'])} | {f(r['valid_ppl'], 2)} | {f(r.get('wiki_ppl'), 1)} | "
          f"{f(r.get('kld'), 4)} | {f(r.get('top1'), 4)} | {f(r.get('mean_rank'), 2)} | "
          f"{f(r.get('quant_s'), 0)} |")
