#!/usr/bin/env python3
"""The bits-per-weight budget tables of issue 24 (bench/RESULTS.md, "One global budget").

For one model and a list of budgets (bits per weight over the projections' bytes on disk):
  - allocated rows: `lrquant quantize --budget B --objective O`; the first run measures every
    candidate (its report keeps the measurement), the others reuse it (`--measurements`), so
    the allocation time of a row is the measurement's plus its own solve and final run;
  - uniform rows: every candidate of the measured set as one recipe for all layers (run once,
    listed under every budget it fits; the measurement gives its bytes exactly);
  - a llama.cpp-style heuristic mix per budget: one base candidate for all layers, attn_v and
    ffn_down of the first and last blocks one bit wider (same group and options), the richest
    base whose mix fits;
and every row evaluated on valid (perplexity, KLD and same top-1 against the FP model).
Rows land in OUT/*.json; a markdown table is printed at the end.

  bench/budget_tables.py --model ../shared/models/lab-m --out out/budget/lab-m \\
      --budgets 2.25 2.5 3.0 3.5 --objectives power block-kl
"""
import argparse, json, os, re, shlex, subprocess, sys, time


def run(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        t0 = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}); see {log}")
    return p.stdout, time.time() - t0


class Bench:
    def __init__(self, a):
        self.a = a
        os.makedirs(a.out, exist_ok=True)
        self.log = os.path.join(a.out, "log.txt")
        self.t = ["--threads", str(a.threads)]
        self.dev = ["--device", a.device] if a.device else []

    def quantize(self, tag, args):
        """Quantizes into OUT/<tag> (skipped when its row exists); returns (dir, report, secs)."""
        qdir = os.path.join(self.a.out, tag)
        rep = qdir + ".report.json"
        row = os.path.join(self.a.out, tag + ".row.json")
        if os.path.exists(row) and os.path.exists(rep):
            return qdir, json.load(open(rep)), json.load(open(row)).get("quant_s")
        _, secs = run([self.a.bin, *self.t, "quantize", "--model", self.a.model, "--calib",
                       self.a.calib, "--nsamples", str(self.a.nsamples), "--seqlen",
                       str(self.a.seqlen), "--seed", "0", "--out", qdir, "--force", "--quiet",
                       "--report", rep] + self.dev + args, self.log)
        return qdir, json.load(open(rep)), secs

    def evaluate(self, tag, qdir):
        row = os.path.join(self.a.out, tag + ".row.json")
        if os.path.exists(row):
            r = json.load(open(row))
            if "valid_ppl" in r:
                return r
        out, _ = run([self.a.bin, *self.t, "eval", "--model", qdir, "--text", self.a.valid,
                      "--ctx", "512", "--max-windows", str(self.a.max_windows), "--json",
                      "--quiet"] + self.dev + (["--reference", self.a.model] if qdir != self.a.model else []),
                     self.log)
        v = json.loads(out)
        return {"valid_ppl": v["ppl"], "kld": v.get("kld"), "top1": v.get("top1")}

    def row(self, tag, kind, args, extra=None):
        # A finished row is kept as it is (rows are committed under bench/results/, their
        # checkpoints and most reports are not); the report is read back when it is there.
        done = os.path.join(self.a.out, tag + ".row.json")
        rep_file = os.path.join(self.a.out, tag + ".report.json")
        if os.path.exists(done) and "valid_ppl" in json.load(open(done)):
            return json.load(open(done)), (json.load(open(rep_file))
                                           if os.path.exists(rep_file) else None)
        qdir, rep, secs = self.quantize(tag, args)
        r = {"tag": tag, "kind": kind, "quant_s": secs, "bpw": rep["total"]["bpw"]}
        r.update(extra or {})
        if "budget" in rep:
            b = rep["budget"]
            r.update(projection_bpw=b["projection_bpw"], objective=b["objective"],
                     predicted=b["solver"]["cost"], solver=b["solver"]["how"],
                     exact=b["solver"]["exact"], overrides=len(b["layer_recipes"]),
                     measure_s=b["seconds"]["measure"] + b["seconds"]["sensitivity"],
                     final_s=b["seconds"]["final"], budget_bpw=b["bpw"])
        r.update(self.evaluate(tag, qdir))
        json.dump(r, open(os.path.join(self.a.out, tag + ".row.json"), "w"))
        print("ROW " + json.dumps(r, separators=(",", ":")), flush=True)
        return r, rep


def wider(recipe):
    """The same recipe one bit wider (w2g64 -> w3g64), or None past 4 bits."""
    m = re.search(r"w(\d)(g\d+)?", recipe)
    if not m or int(m.group(1)) >= 4:
        return None
    return recipe[:m.start(1)] + str(int(m.group(1)) + 1) + recipe[m.end(1):]


def packed_bytes(recipe, rows, cols, measured):
    """Bytes of a GPTQ/RTN recipe on one layer: from the measurement when it was a candidate,
    else codes + F16 scales (+ F16 offsets unless sym) per group; refuses anything else."""
    if recipe in measured:
        return measured[recipe]
    m = re.fullmatch(r"(gptq|rtn):w(\d)g(\d+)((?:,\w+)*)", recipe)
    if not m:
        raise SystemExit(f"no byte formula for heuristic recipe {recipe}")
    b, g, opts = int(m.group(2)), int(m.group(3)), m.group(4).split(",")
    return rows * cols * b // 8 + rows * (cols // g) * 2 * (1 if "sym" in opts else 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/cpu/lrquant")
    ap.add_argument("--model", required=True)
    ap.add_argument("--shared", default=os.environ.get("LRQ_SHARED", "../shared"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", type=float, nargs="+", default=[2.25, 2.5, 3.0, 3.5])
    ap.add_argument("--objectives", nargs="+", default=["power"])
    ap.add_argument("--candidates", help="--candidates for the budget runs (default: lrquant's)")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=40)
    ap.add_argument("--device", help="--device for quantize and eval (cuda on a GPU machine)")
    ap.add_argument("--no-uniform", action="store_true")
    ap.add_argument("--uniform", choices=["all", "best"], default="all",
                    help="uniform rows: every candidate that fits, or the one the measurement "
                         "predicts best")
    ap.add_argument("--no-heuristic", action="store_true")
    ap.add_argument("--table-only", action="store_true",
                    help="print the table of the rows already in --out, run nothing")
    a = ap.parse_args()
    if a.table_only:
        return table_only(a)
    a.calib = os.path.join(a.shared, "data/lab-corpus/calib.txt")
    a.valid = os.path.join(a.shared, "data/lab-corpus/valid.txt")
    B = Bench(a)
    cand = ["--candidates", a.candidates] if a.candidates else []

    fp_row = os.path.join(a.out, "fp.row.json")
    if not os.path.exists(fp_row):
        json.dump(B.evaluate("fp", a.model), open(fp_row, "w"))
    fp = json.load(open(fp_row))
    rows = []
    # The first allocation measures (with the sensitivities the objectives need: layer-kl's
    # measurement has the per-block ones too), the others reuse its table.
    first_obj = next((o for o in ("layer-kl", "block-kl") if o in a.objectives), a.objectives[0])
    b0 = a.budgets[0]
    first_tag = f"alloc-{b0}-{first_obj}"
    r, rep = B.row(first_tag, "allocated", ["--budget", str(b0), "--objective", first_obj] + cand)
    rows.append(r)
    meas_file = os.path.join(a.out, first_tag + ".report.json")
    meas = rep["budget"]["measurement"]
    measure_s = rep["budget"]["seconds"]["measure"] + rep["budget"]["seconds"]["sensitivity"]
    weights = sum(l["in"] * l["out"] for l in meas["layers"])
    cands = meas["candidates"]
    uniform_bpw = {c: 8 * sum(l["bytes"][k] for l in meas["layers"]) / weights
                   for k, c in enumerate(cands)}
    done_uniform = set()
    sens = meas.get("layer_sensitivity") or [1.0] * len(meas["layers"])
    uniform_pred = {c: sum(s * l["output_err"][k] ** 2 for s, l in zip(sens, meas["layers"]))
                    for k, c in enumerate(cands)}
    # A ladder of fixed mixes per base candidate: attn_v and ffn_down one bit wider on the
    # first and last blocks (the llama.cpp-style rule), then on every block; the richest mix
    # that fits is the budget's heuristic row.
    nblocks = 1 + max(l["block"] for l in meas["layers"])
    rules = [(rf"layers\.(0|{nblocks - 1})\.(self_attn\.v_proj|mlp\.down_proj)$",
              f"v/down of blocks 0 and {nblocks - 1}"),
             (r"(self_attn\.v_proj|mlp\.down_proj)$", "v/down of every block")]

    # Budget by budget, so that an interrupted run (rows are kept and skipped when run again)
    # has whole budgets: allocations, the uniform candidates that fit (richest first), the mix.
    for b in a.budgets:
        for o in a.objectives:
            tag = f"alloc-{b}-{o}"
            if tag == first_tag:
                continue
            r, _ = B.row(tag, "allocated", ["--budget", str(b), "--objective", o,
                                            "--measurements", meas_file] + cand,
                         {"shared_measure_s": measure_s})
            rows.append(r)
        if not a.no_uniform:
            fit = [(k, c) for k, c in enumerate(cands) if uniform_bpw[c] <= b + 1e-9]
            fit.sort(key=lambda kc: -uniform_bpw[kc[1]])
            if a.uniform == "best" and fit:
                # The uniform candidate the measurement predicts best (layer-kl's prediction
                # tracks the measured KLD: bench/budget_objective_check.py); the others that fit
                # are listed with their predictions only.
                k, c = min(fit, key=lambda kc: uniform_pred[kc[1]])
                print(f"budget {b}: uniform predictions " + ", ".join(
                    f"{cc} {uniform_pred[cc]:.4g}" for _, cc in fit), flush=True)
                fit = [(k, c)]
            for k, c in fit:
                if c in done_uniform:
                    continue
                done_uniform.add(c)
                r, _ = B.row(f"uniform-{k}", "uniform", ["--recipe", c], {"recipe": c})
                rows.append(r)
        if not a.no_heuristic:
            best = None
            for k, c in enumerate(cands):
                w = wider(c)
                if w is None or "+" in c:
                    continue
                for pat, what in rules:
                    total = 0
                    for l in meas["layers"]:
                        have = {cc: l["bytes"][kk] for kk, cc in enumerate(cands)}
                        total += packed_bytes(w if re.search(pat, l["name"]) else c, l["out"],
                                              l["in"], have)
                    if 8 * total / weights <= b and (best is None or total > best[2]):
                        best = (c, w, total, pat, what)
            if best is None:
                print(f"no heuristic mix fits {b} bits per weight", file=sys.stderr)
            else:
                c, w, total, pat, what = best
                r, _ = B.row(f"heuristic-{b}", "heuristic",
                             ["--recipe", c, "--layer-recipe", f"{pat}={w}"],
                             {"recipe": f"{c}, {w} on {what}", "budget_bpw": b})
                rows.append(r)
                # The mix rarely fills the budget: the allocation at exactly its bytes too.
                hb = 8 * total / weights
                r, _ = B.row(f"alloc-{b}-at-heuristic", "allocated",
                             ["--budget", repr(hb), "--objective", a.objectives[0],
                              "--measurements", meas_file] + cand,
                             {"shared_measure_s": measure_s, "at_heuristic": True,
                              "table_budget": b})
                rows.append(r)

    print_table(rows, a.budgets, fp, a.max_windows)


def print_table(rows, budgets, fp, max_windows):
    print(f"\nFP valid PPL {fp['valid_ppl']:.2f} ({max_windows} windows)\n")
    print("| budget | row | bpw | valid PPL | KLD | same top-1 | time s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for b in budgets:
        sel = []
        for r in rows:
            if r["kind"] == "uniform" and r["bpw"] <= b + 1e-9:
                sel.append((f"uniform `{r['recipe']}`", r))
            elif r.get("table_budget", r.get("budget_bpw")) == b:
                name = (f"allocated ({r['objective']}"
                        + (", at the heuristic's bytes)" if r.get("at_heuristic") else ")")
                        if r["kind"] == "allocated" else f"heuristic `{r['recipe']}`")
                sel.append((name, r))
        for name, r in sel:
            t = r["quant_s"]
            if r["kind"] == "allocated":
                t = r["measure_s"] + r["final_s"]
            print(f"| {b} | {name} | {r['bpw']:.3f} | {r['valid_ppl']:.2f} | {r['kld']:.4f} | "
                  f"{100 * r['top1']:.1f}% | {t:.0f} |")


def table_only(a):
    """The table from the rows already in OUT (an interrupted run's included)."""
    rows = []
    for f in sorted(os.listdir(a.out)):
        if f.endswith(".row.json") and f != "fp.row.json":
            r = json.load(open(os.path.join(a.out, f)))
            if "valid_ppl" in r:
                rows.append(r)
    order = {"allocated": 0, "uniform": 1, "heuristic": 2}
    rows.sort(key=lambda r: (order[r["kind"]], r.get("at_heuristic", False), r["tag"]))
    print_table(rows, a.budgets, json.load(open(os.path.join(a.out, "fp.row.json"))),
                a.max_windows)

if __name__ == "__main__":
    main()
