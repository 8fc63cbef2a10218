// llama.cpp's batch-1 speed on a GGUF file (node-llama-cpp's prebuilt CPU build, installed by
// scripts/setup.sh under tests/export): prefill of a P-token prompt, then greedy decoding of G
// tokens, median of several repetitions. Prints one JSON line.
//   node bench/llama_cpp_speed.mjs MODEL.gguf LABEL [P] [G] [REPS] [THREADS]
const lib = new URL('../tests/export/node_modules/node-llama-cpp/dist/index.js', import.meta.url);
const { getLlama, LlamaLogLevel } = await import(lib.href);

const [path, label, pArg = '128', gArg = '128', rArg = '5', tArg = '2'] = process.argv.slice(2);
const P = Number(pArg), G = Number(gArg), reps = Number(rArg), threads = Number(tArg);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: path });
const ctxSize = model.trainContextSize;
const context = await model.createContext({ contextSize: ctxSize, batchSize: ctxSize, threads });
const prompt = [];
for (let i = 0; i < Math.min(P, ctxSize - G); i++) prompt.push(3 + (i * 7919) % (model.fileInfo.metadata.llama.vocab_size - 3));
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const pre = [], dec = [];
for (let r = 0; r < reps + 1; r++) {
  const seq = context.getSequence();
  const t0 = performance.now();
  let t1 = 0, n = 0;
  for await (const _ of seq.evaluate([model.tokens.bos, ...prompt.slice(1)], { temperature: 0 })) {
    if (n === 0) t1 = performance.now();
    if (++n > G) break;
  }
  const t2 = performance.now();
  seq.dispose();
  if (r === 0) continue;
  pre.push(prompt.length / ((t1 - t0) / 1000));
  dec.push(G / ((t2 - t1) / 1000));
}
console.log(JSON.stringify({ runtime: 'llama.cpp', quant: label, prompt: prompt.length, gen: G,
  prefill_tps: Math.round(median(pre) * 10) / 10, decode_tps: Math.round(median(dec) * 10) / 10 }));
await context.dispose();
await model.dispose();
await llama.dispose();
