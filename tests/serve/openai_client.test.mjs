// End-to-end: `tandem serve` driven by the official OpenAI Node client (a real client, not our
// own HTTP code). Needs TANDEM_BIN and TANDEM_SERVE_MODEL (a checkpoint or run directory).
//   node --test tests/serve/openai_client.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import OpenAI from 'openai';

const BIN = process.env.TANDEM_BIN;
const MODEL_DIR = process.env.TANDEM_SERVE_MODEL;
if (!BIN || !MODEL_DIR) throw new Error('set TANDEM_BIN and TANDEM_SERVE_MODEL');

// Starts a server on a free port; resolves to {proc, url} once it listens.
function startServer(extra = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(BIN, ['serve', '-c', MODEL_DIR, '--port', '0', '--threads', '2',
      '--model-name', 'tiny-test', ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const timer = setTimeout(() => reject(new Error('server did not start: ' + err)), 60000);
    proc.stderr.on('data', (d) => {
      err += d;
      const m = err.match(/listening on (http:\/\/[\d.]+:\d+)/);
      if (m) { clearTimeout(timer); resolve({ proc, url: m[1] }); }
    });
    proc.on('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
}

function stopServer(s) {
  return new Promise((resolve) => {
    s.proc.removeAllListeners('exit');
    s.proc.on('exit', (code, sig) => resolve({ code, sig }));
    s.proc.kill('SIGTERM');
  });
}

let server, client;
before(async () => {
  server = await startServer(['--parallel', '16']);
  client = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'unused', maxRetries: 0 });
});
after(async () => {
  const r = await stopServer(server);
  assert.equal(r.code, 0, 'SIGTERM stops the server cleanly');
});

const PROMPT = 'And the LORD said';

test('lists the served model', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny-test']);
});

test('greedy completion equals `tandem generate --greedy`', async () => {
  const r = await client.completions.create({ model: 'tiny-test', prompt: PROMPT, max_tokens: 24, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  const out = execFileSync(BIN, ['generate', '-c', MODEL_DIR, '-p', PROMPT, '-n', '24', '--greedy', '--threads', '2'],
    { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  // generate prints the prompt, the continuation, then a newline.
  const text = r.choices[0].text;
  if (r.choices[0].finish_reason === 'length') assert.equal(r.usage.completion_tokens, 24);
  assert.equal(PROMPT + text + '\n', out);
  assert.ok(r.usage.prompt_tokens > 1);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('streaming deltas add up to the non-streaming text, with usage at the end', async () => {
  const args = { model: 'tiny-test', prompt: PROMPT, max_tokens: 30, temperature: 0.8, seed: 7 };
  const whole = await client.completions.create(args);
  const stream = await client.completions.create({ ...args, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) { text += ch.text; if (ch.finish_reason) finish = ch.finish_reason; }
  }
  // Tokens produced while the handler was still writing are merged into one delta, so a
  // loaded machine may send the whole text at once: at least a content chunk, the finish
  // chunk and the usage chunk, and never more chunks than tokens plus those two.
  assert.ok(chunks >= 3, `chunks ${chunks}`);
  assert.ok(chunks <= whole.usage.completion_tokens + 2, `chunks ${chunks}`);
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
});

test('chat completion, whole and streamed', async () => {
  const messages = [{ role: 'system', content: 'Answer briefly.' }, { role: 'user', content: 'Who made the heaven?' }];
  const r = await client.chat.completions.create({ model: 'tiny-test', messages, max_tokens: 12, seed: 3 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  const stream = await client.chat.completions.create({ model: 'tiny-test', messages, max_tokens: 12, seed: 3, stream: true });
  let text = '', role = null, finish = null;
  for await (const c of stream) {
    assert.equal(c.object, 'chat.completion.chunk');
    const d = c.choices[0].delta;
    if (d.role) role = d.role;
    if (d.content) text += d.content;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, r.choices[0].message.content);
  assert.equal(finish, r.choices[0].finish_reason);
});

test('n choices are distinct streams, and a seed reproduces them', async () => {
  const args = { model: 'tiny-test', prompt: PROMPT, max_tokens: 16, n: 3, seed: 11, temperature: 1 };
  const a = await client.completions.create(args);
  const b = await client.completions.create(args);
  assert.deepEqual(a.choices.map((c) => c.index).sort(), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.ok(new Set(a.choices.map((c) => c.text)).size > 1, 'choices should differ');
  assert.ok(a.usage.completion_tokens > 3 && a.usage.completion_tokens <= 3 * 16);
});

test('logprobs: one entry per token, top alternatives, consistent values', async () => {
  const r = await client.completions.create({ model: 'tiny-test', prompt: PROMPT, max_tokens: 10, logprobs: 3, temperature: 0 });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, r.usage.completion_tokens);
  assert.equal(lp.tokens.join(''), r.choices[0].text);
  for (let i = 0; i < lp.tokens.length; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const tops = Object.values(lp.top_logprobs[i]);
    assert.ok(tops.length >= 1 && tops.length <= 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...tops) - lp.token_logprobs[i]) < 1e-5);
    assert.ok(tops.reduce((s, v) => s + Math.exp(v), 0) <= 1 + 1e-5);
  }
  const chat = await client.chat.completions.create({ model: 'tiny-test', messages: [{ role: 'user', content: 'Hi' }],
    max_tokens: 5, logprobs: true, top_logprobs: 2, temperature: 0 });
  const content = chat.choices[0].logprobs.content;
  assert.equal(content.length, chat.usage.completion_tokens);
  assert.equal(content[0].top_logprobs.length, 2);
});

test('stop sequences cut the text before the match', async () => {
  const base = await client.completions.create({ model: 'tiny-test', prompt: PROMPT, max_tokens: 40, temperature: 0 });
  const text = base.choices[0].text;
  const stop = text.slice(8, 11);  // three characters from the middle of the greedy text
  const r = await client.completions.create({ model: 'tiny-test', prompt: PROMPT, max_tokens: 40, temperature: 0, stop: [stop, 'zzzz'] });
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.equal(r.choices[0].text, text.slice(0, text.indexOf(stop)));
  // Streamed, the held-back partial match never leaks out.
  const s = await client.completions.create({ model: 'tiny-test', prompt: PROMPT, max_tokens: 40, temperature: 0, stop, stream: true });
  let streamed = '';
  for await (const c of s) streamed += c.choices[0]?.text ?? '';
  assert.equal(streamed, r.choices[0].text);
});

test('a seeded request gives the same text alone and among 16 concurrent streams', async () => {
  const target = { model: 'tiny-test', prompt: 'In the beginning', max_tokens: 32, temperature: 0.9, top_p: 0.95, seed: 42 };
  const alone = (await client.completions.create(target)).choices[0].text;
  const collect = async (args) => {
    const s = await client.completions.create({ ...args, stream: true });
    let t = '';
    for await (const c of s) t += c.choices[0]?.text ?? '';
    return t;
  };
  const others = [];
  for (let i = 0; i < 15; i++)
    others.push({ model: 'tiny-test', prompt: `${PROMPT} ${'unto them '.repeat(i % 5)}`, max_tokens: 20 + i, temperature: 1, seed: 100 + i });
  const results = await Promise.all([...others.slice(0, 7).map(collect), collect(target), ...others.slice(7).map(collect)]);
  assert.equal(results[7], alone);
});

test('errors come back in OpenAI shape through the client', async () => {
  await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x' }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && /does not exist/.test(e.message));
  await assert.rejects(client.completions.create({ model: 'tiny-test', prompt: 'x', max_tokens: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'max_tokens');
  await assert.rejects(client.completions.create({ model: 'tiny-test', prompt: 'x', max_tokens: 100000 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'max_tokens');
  await assert.rejects(client.completions.create({ model: 'tiny-test', prompt: '' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'prompt');
  await assert.rejects(client.completions.create({ model: 'tiny-test', prompt: 'x', temperature: 'hot' }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'temperature');
  // The server keeps serving.
  const r = await client.completions.create({ model: 'tiny-test', prompt: PROMPT, max_tokens: 2 });
  assert.equal(r.choices.length, 1);
});

test('metrics count requests, tokens and time to first token', async () => {
  const text = await (await fetch(server.url + '/metrics')).text();
  const value = (re) => Number((text.match(re) || [])[1]);
  assert.ok(value(/tandem_requests_total\{path="\/v1\/completions",code="200"\} (\d+)/) >= 5);
  assert.ok(value(/tandem_requests_total\{path="\/v1\/completions",code="400"\} (\d+)/) >= 3);
  assert.ok(value(/^tandem_generated_tokens_total (\d+)/m) > 100);
  assert.ok(value(/^tandem_time_to_first_token_seconds_count (\d+)/m) >= 10);
  assert.match(text, /^tandem_queue_depth 0$/m);
  // Engine time: a step holds its forward; the tokens through the forward are at least the
  // generated ones (prompt chunks come on top), at least one per step.
  const steps = value(/^tandem_engine_steps_total (\d+)/m);
  const stepTokens = value(/^tandem_engine_step_tokens_total (\d+)/m);
  const forward = value(/^tandem_engine_forward_seconds_total ([\d.e+-]+)/m);
  const whole = value(/^tandem_engine_step_seconds_total ([\d.e+-]+)/m);
  assert.ok(steps > 0 && stepTokens >= steps, `steps ${steps}, step tokens ${stepTokens}`);
  assert.ok(stepTokens >= value(/^tandem_generated_tokens_total (\d+)/m));
  assert.ok(forward > 0 && whole >= forward, `forward ${forward} s, steps ${whole} s`);
});

test('--api-key requires the bearer token', async () => {
  const s = await startServer(['--api-key', 'sesame', '--parallel', '2']);
  try {
    const bad = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'wrong', maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
    const good = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'sesame', maxRetries: 0 });
    assert.equal((await good.models.list()).data[0].id, 'tiny-test');
    assert.equal((await fetch(s.url + '/health')).status, 200);  // health needs no key
  } finally {
    await stopServer(s);
  }
});
