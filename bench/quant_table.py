#!/usr/bin/env python3
"""Quantize a model with a list of recipes and measure each: the table behind bench/RESULTS.md.

For every recipe: `lrquant quantize` (calibration: N windows of L tokens from the calibration
text, seed 0 or --seed), then `lrquant eval` nonoverlap-512 on lab-corpus/valid.txt (with KL divergence,
same-top-token rate against the unquantized model) and on WikiText-2 test. Rows run in
parallel (--jobs), each with --threads T. Prints a markdown table and writes a JSON file.

  bench/quant_table.py --model ../shared/models/lab-m --out out/table-lab-m \
      --recipes 'rtn:w4g128' 'gptq:w4g128' ...
"""
import argparse, concurrent.futures as cf, json, os, subprocess, sys, time

ENV = dict(os.environ)

def run(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True, env=ENV)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}); see {log}")
    return p.stdout

def measure(a, recipe, idx):
    tag = f"{idx:02d}"
    qdir = os.path.join(a.qdir or a.out, f"q{tag}")
    log = os.path.join(a.qdir or a.out, f"q{tag}.log")
    t = ["--threads", str(a.threads)]
    row = {"recipe": recipe}
    model = a.model
    if recipe != "fp":
        t0 = time.time()
        run([a.bin, *t, "quantize", "--model", a.model, "--calib", a.calib, "--nsamples",
             str(a.nsamples), "--seqlen", str(a.seqlen), "--recipe", recipe, "--out", qdir,
             "--force", "--quiet", "--report", qdir + ".report.json", "--seed", str(a.seed)] +
            (["--device", a.quant_device] if a.quant_device else []) + a.quant_arg +
            sum([["--layer-recipe", lr] for lr in a.layer_recipe], []), log)
        row["quant_s"] = time.time() - t0
        rep = json.load(open(qdir + ".report.json"))
        row["bpw"] = rep["total"]["bpw"]
        row["mean_output_err"] = rep["total"]["mean_output_err"]
        row["peak_rss_mib"] = rep["total"].get("peak_rss_mib")
        ranks = [l.get("rank", l.get("lr_rank")) for l in rep["layers"]]
        ranks = [r for r in ranks if r is not None]
        if ranks:
            row["mean_rank"] = sum(ranks) / len(ranks)
        model = qdir
    else:
        row["bpw"] = 16.0
    ev = [a.bin, *t, "eval", "--model", model, "--ctx", "512", "--json", "--quiet"]
    if a.eval_device:
        ev += ["--device", a.eval_device]
    kld = a.kld and recipe != "fp"
    vw = ["--max-windows", str(a.max_windows)] if a.max_windows else []
    v = json.loads(run(ev + ["--text", a.valid] + vw + (["--reference", a.model] if kld else []), log))
    row.update(valid_ppl=v["ppl"], kld=v.get("kld"), top1=v.get("top1"), valid_tokens=v["tokens"])
    if a.wiki:
        w = json.loads(run(ev + ["--text", a.wiki], log))
        row.update(wiki_ppl=w["ppl"], wiki_tokens=w["tokens"])
    json.dump(row, open(os.path.join(a.out, f"row{tag}.json"), "w"))
    print("ROW " + json.dumps(row, separators=(",", ":")), flush=True)
    return row

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/release/lrquant")
    ap.add_argument("--model", required=True)
    ap.add_argument("--shared", default=os.environ.get("LRQ_SHARED", "../shared"))
    ap.add_argument("--calib"); ap.add_argument("--valid"); ap.add_argument("--wiki")
    ap.add_argument("--no-wiki", action="store_true")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0, help="quantize --seed (calibration windows and sketches)")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--layer-recipe", action="append", default=[])
    ap.add_argument("--out", required=True)
    ap.add_argument("--qdir", help="where quantized folders go (default: --out)")
    ap.add_argument("--max-windows", type=int, default=0,
                    help="score only the first N valid windows (0: all; the CPU tables use 40)")
    ap.add_argument("--kld", action="store_true", help="KL divergence against the model on valid")
    ap.add_argument("--quant-device", help="--device for quantize (cpu|cuda; default: the CLI's)")
    ap.add_argument("--quant-arg", action="append", default=[],
                    help="extra quantize argument (repeatable), e.g. --quant-arg=--bf16")
    ap.add_argument("--eval-device", help="--device for eval (cpu|cuda; default: the CLI's)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--recipes", nargs="+", required=True)
    a = ap.parse_args()
    a.calib = a.calib or os.path.join(a.shared, "data/lab-corpus/calib.txt")
    a.valid = a.valid or os.path.join(a.shared, "data/lab-corpus/valid.txt")
    a.wiki = None if a.no_wiki else (a.wiki or os.path.join(a.shared, "data/wikitext-2/wiki.test.raw"))
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.qdir or a.out, exist_ok=True)
    # Rows share the machine: pin each process's OpenMP/OpenBLAS pools and let idle threads
    # sleep instead of spinning (spinning pools of parallel processes starve each other).
    ENV.update(OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads),
               OMP_WAIT_POLICY="PASSIVE")
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        futs = [ex.submit(measure, a, r, i) for i, r in enumerate(a.recipes)]
        rows = []
        for fu in futs:
            try:
                rows.append(fu.result())
            except Exception as e:  # one failing recipe must not lose the others
                print(f"FAILED: {e}", flush=True)
    json.dump(rows, open(os.path.join(a.out, "table.json"), "w"), indent=1)
    f = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"
    print(f"| recipe | bpw | valid PPL | wiki PPL | KLD (valid) | same top-1 | mean rank | quantize s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['recipe']}` | {f(r['bpw'])} | {f(r['valid_ppl'], 2)} | {f(r.get('wiki_ppl'), 1)} | "
              f"{f(r.get('kld'), 4)} | {f(r.get('top1') and 100 * r['top1'], 1)}% | "
              f"{f(r.get('mean_rank'), 1)} | {f(r.get('quant_s'), 1)} |")

if __name__ == "__main__":
    main()
