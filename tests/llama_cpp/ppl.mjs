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
// --lora ADAPTER.gguf [--lora-scale S].
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
  let nll = 0, n = 0;
  for (let w = 0; w < windows; w++) {
    const win = ids.slice(w * a.ctx, (w + 1) * a.ctx);
    await seq.clearHistory();
    const input = win.map((t, i) => (i < a.ctx - 1 ? [t, {generateNext: {probabilities: true}}] : t));
    const res = await seq.controlledEvaluate(input);
    for (let i = 0; i < a.ctx - 1; i++) {
      const probs = res[i].next.probabilities;
      let sum = 0;
      for (const p of probs.values()) sum += p;
      nll -= Math.log(probs.get(win[i + 1]) ?? 0) - Math.log(sum);
      n++;
    }
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
