// llama.cpp as the independent reference for lrquant's GGUF files: the prebuilt CPU library that
// node-llama-cpp ships (scripts/llama_cpp_setup.sh installs it; never builds or downloads).
// Prints one JSON object with what was asked for:
//   --text FILE --ctx N [--max-windows K]  perplexity under lrquant's nonoverlap-N protocol
//                                          (../shared/docs/EVAL.md): the whole text tokenized
//                                          once with one BOS, cut into windows of N tokens, the
//                                          N-1 next-token predictions of each window scored
//   --prompt TEXT --max-tokens N           greedy continuation (ids and text)
//   --tokens                               the text's token ids (with --text)
// plus --model M.gguf (required), --llama-dir DIR (where the setup script installed
// node-llama-cpp; default $LRQ_LLAMA_CPP_DIR, else build/llama_cpp), --threads T,
// --lora ADAPTER.gguf [--lora-scale S] (an adapter on --model), --reference REF.gguf (with --text:
// also the mean KL divergence KL(ref || model) per predicted token and the rate at which both put
// the same token on top, REF evaluated on the same windows without the adapter).
// Activations run in F32 with an F32 KV cache, so an F32 GGUF computes what lrquant computes;
// node-llama-cpp normalises probabilities in float32, so p(target) is renormalised in double.
import fs from "node:fs";
import crypto from "node:crypto";
import path from "node:path";
import {fileURLToPath, pathToFileURL} from "node:url";

function parse(argv) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const a = {ctx: 512, maxWindows: 0, maxTokens: 0, threads: 2, loraScale: 1,
             llamaDir: process.env.LRQ_LLAMA_CPP_DIR || path.join(here, "../../build/llama_cpp")};
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i], v = () => argv[++i];
    if (k === "--model") a.model = v();
    else if (k === "--text") a.text = v();
    else if (k === "--ctx") a.ctx = Number(v());
    else if (k === "--max-windows") a.maxWindows = Number(v());
    else if (k === "--prompt") a.prompt = v();
    else if (k === "--max-tokens") a.maxTokens = Number(v());
    else if (k === "--threads") a.threads = Number(v());
    else if (k === "--tokens") a.tokens = true;
    else if (k === "--llama-dir") a.llamaDir = v();
    else if (k === "--lora") a.lora = v();
    else if (k === "--lora-scale") a.loraScale = Number(v());
    else if (k === "--reference") a.reference = v();
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.model) throw new Error("--model is required");
  return a;
}

const a = parse(process.argv.slice(2));
// Imported by path: the package lives in the folder the tests own, not beside this script.
const {getLlama} = await import(
    pathToFileURL(path.join(a.llamaDir, "node_modules/node-llama-cpp/dist/index.js")).href);
const llama = await getLlama({gpu: false, build: "never", skipDownload: true, maxThreads: a.threads,
                              logLevel: "error"});
const model = await llama.loadModel({modelPath: a.model});
const contextSize = Math.max(a.text ? a.ctx : 0, a.prompt ? 1024 : 0, 256);
const context = await model.createContext({
  contextSize, batchSize: contextSize, sequences: 1, threads: a.threads, flashAttention: false,
  experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
  ...(a.lora ? {lora: {adapters: [{filePath: a.lora, scale: a.loraScale}]}} : {}),
});
const seq = context.getSequence();
let refSeq = null;
if (a.reference) {
  const refModel = await llama.loadModel({modelPath: a.reference});
  const refContext = await refModel.createContext({
    contextSize, batchSize: contextSize, sequences: 1, threads: a.threads, flashAttention: false,
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
  });
  refSeq = refContext.getSequence();
}
const out = {model: a.model, library: "node-llama-cpp llama.cpp", threads: a.threads};

function encode(text) {
  let ids = model.tokenize(text, false);
  if (model.tokens.shouldPrependBosToken && model.tokens.bos != null) ids = [model.tokens.bos, ...ids];
  return ids;
}

if (a.text) {
  const ids = encode(fs.readFileSync(a.text, "utf8"));
  out.stream_tokens = ids.length;
  const u16 = Buffer.alloc(ids.length * 2);
  ids.forEach((t, i) => u16.writeUInt16LE(t, 2 * i));
  out.token_sha256 = crypto.createHash("sha256").update(u16).digest("hex");
  if (a.tokens) out.ids = ids;
  let windows = Math.floor(ids.length / a.ctx);
  if (a.maxWindows > 0) windows = Math.min(windows, a.maxWindows);
  let nll = 0, n = 0, kl = 0, top = 0;
  // The next-token distributions of one window, each renormalised in double.
  async function distributions(sequence, win) {
    await sequence.clearHistory();
    const input = win.map((t, i) => (i < a.ctx - 1 ? [t, {generateNext: {probabilities: true}}] : t));
    const res = await sequence.controlledEvaluate(input);
    const out = [];
    for (let i = 0; i < a.ctx - 1; i++) {
      const probs = res[i].next.probabilities;
      let sum = 0;
      for (const p of probs.values()) sum += p;
      out.push({probs, sum});
    }
    return out;
  }
  const argmax = (d) => {
    let best = -1, bp = -1;
    for (const [t, p] of d.probs) if (p > bp) bp = p, best = t;
    return best;
  };
  for (let w = 0; w < windows; w++) {
    const win = ids.slice(w * a.ctx, (w + 1) * a.ctx);
    const dist = await distributions(seq, win);
    const ref = refSeq ? await distributions(refSeq, win) : null;
    for (let i = 0; i < a.ctx - 1; i++) {
      nll -= Math.log(dist[i].probs.get(win[i + 1]) ?? 0) - Math.log(dist[i].sum);
      n++;
      if (ref) {
        // KL(ref || model) over the reference's support; a token the model gives no probability
        // gets the smallest normal double instead of an infinite term.
        let k = 0;
        for (const [t, p] of ref[i].probs) {
          if (p <= 0) continue;
          const pr = p / ref[i].sum;
          const pq = Math.max((dist[i].probs.get(t) ?? 0) / dist[i].sum, 2.2250738585072014e-308);
          k += pr * (Math.log(pr) - Math.log(pq));
        }
        kl += k;
        if (argmax(ref[i]) === argmax(dist[i])) top++;
      }
    }
  }
  if (refSeq) {
    out.kld = kl / n;
    out.same_top = top / n;
  }
  out.protocol = `nonoverlap-${a.ctx}`;
  out.windows = windows;
  out.tokens = n;
  out.nll = nll / n;
  out.ppl = Math.exp(nll / n);
}

if (a.prompt !== undefined) {
  await seq.clearHistory();
  const prompt = encode(a.prompt);
  const gen = [];
  let next = [...prompt];
  for (let k = 0; k < a.maxTokens; k++) {
    const input = next.map((t, i) => (i === next.length - 1
        ? [t, {generateNext: {token: true, options: {temperature: 0}}}] : t));
    const res = await seq.controlledEvaluate(input);
    const t = res[next.length - 1].next.token;
    if (t == null || t === model.tokens.eos) break;
    gen.push(t);
    next = [t];
  }
  out.prompt_ids = prompt;
  out.generated_ids = gen;
  out.text = model.detokenize([...prompt, ...gen]);
}

console.log(JSON.stringify(out));
await context.dispose();
await model.dispose();
await llama.dispose();
