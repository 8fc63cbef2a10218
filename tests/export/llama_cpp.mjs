// Runs a GGUF file in unmodified llama.cpp (node-llama-cpp's prebuilt CPU build): for each
// prompt, llama.cpp's own tokenization (with BOS) and its greedy continuation of N tokens
// (end-of-sequence is just another token here), optionally with the logits at every generated
// position. Prints JSON.
//   node tests/export/llama_cpp.mjs MODEL.gguf N_TOKENS [--logits] PROMPT [PROMPT...]
//   node tests/export/llama_cpp.mjs MODEL.gguf --chat MESSAGES_JSON
// --chat: the GGUF's tokenizer.chat_template rendered by llama.cpp's own Jinja engine for the
// messages (with the generation prompt), and llama.cpp's tokens for it (BOS, special tokens
// parsed).
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const args = process.argv.slice(2);
if (args[1] === '--chat') {
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: args[0] });
  const template = model.fileInfo.metadata.tokenizer.chat_template;
  if (!template) {
    console.error('the GGUF has no tokenizer.chat_template');
    process.exit(3);
  }
  const renderer = new llama._bindings.AddonJinjaRenderer(template);
  const text = renderer.render({ messages: JSON.parse(args[2]), add_generation_prompt: true });
  const tokens = [model.tokens.bos, ...model.tokenize(text, true)];
  console.log(JSON.stringify({ template, text, tokens, eot: model.tokens.eot }));
  await model.dispose();
  await llama.dispose();
  process.exit(0);
}
const withLogits = args.includes('--logits');
const [modelPath, nArg, ...prompts] = args.filter((a) => a !== '--logits');
if (!modelPath || !nArg || prompts.length === 0) {
  console.error('usage: llama_cpp.mjs MODEL.gguf N_TOKENS [--logits] PROMPT...');
  process.exit(2);
}
const major = Number(process.versions.node.split('.')[0]);
if (major < 20) {
  console.error(`node-llama-cpp needs Node.js 20 or newer; this is ${process.versions.node}`);
  process.exit(2);
}
const n = Number(nArg);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath });
const vocab = model.fileInfo.metadata.llama.vocab_size;
const out = { bos: model.tokens.bos, eos: model.tokens.eos, results: [] };
const next = { generateNext: { token: true, options: { temperature: 0 }, ...(withLogits ? { logits: true } : {}) } };
for (const prompt of prompts) {
  const context = await model.createContext({ contextSize: model.trainContextSize, threads: 2 });
  const sequence = context.getSequence();
  const tokens = [model.tokens.bos, ...model.tokenize(prompt)];
  const generated = [], logits = [];
  let input = tokens.map((t, i) => (i === tokens.length - 1 ? [t, next] : t));
  const room = model.trainContextSize - tokens.length;
  while (generated.length < Math.min(n, room)) {
    const res = await sequence.controlledEvaluate(input);
    const r = res[input.length - 1].next;
    generated.push(r.token);
    if (withLogits) {
      const row = new Array(vocab).fill(null);
      for (const [tok, v] of r.logits) row[tok] = v;
      logits.push(row);
    }
    input = [[r.token, next]];
  }
  out.results.push({ prompt, tokens, generated, ...(withLogits ? { logits } : {}) });
  await context.dispose();
}
console.log(JSON.stringify(out));
await model.dispose();
await llama.dispose();
