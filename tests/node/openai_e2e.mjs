// End-to-end check of the kvmesh router with the official OpenAI Node.js client (the `openai` npm
// package, version pinned in package.json). Run by tests/router_openai_test.sh against a running
// graph: KVMESH_E2E_BASE_URL=http://127.0.0.1:PORT/v1, KVMESH_E2E_MODEL=tiny.
// Covers completions and chat completions, streaming and not, usage fields, stream termination,
// models.list, and the client's typed errors (404 -> NotFoundError, 400 -> BadRequestError).
// Prints ok/FAIL per check and exits 1 if any failed.
import OpenAI from "openai";

const baseURL = process.env.KVMESH_E2E_BASE_URL;
const model = process.env.KVMESH_E2E_MODEL || "tiny";
if (!baseURL) {
  console.error("KVMESH_E2E_BASE_URL is not set");
  process.exit(2);
}
const client = new OpenAI({
  baseURL,
  apiKey: process.env.KVMESH_E2E_API_KEY || "none",
  maxRetries: 0,
  timeout: 60_000,
});

const failures = [];
function check(cond, what) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures.push(what);
  return cond;
}

function checkUsage(usage, what, maxTokens) {
  const ok =
    usage != null &&
    Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0 &&
    Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0 &&
    usage.completion_tokens <= maxTokens &&
    usage.total_tokens === usage.prompt_tokens + usage.completion_tokens &&
    Number.isInteger(usage.prompt_tokens_details?.cached_tokens) &&
    usage.prompt_tokens_details.cached_tokens >= 0 &&
    usage.prompt_tokens_details.cached_tokens <= usage.prompt_tokens;
  check(ok, `${what}: usage fields ${JSON.stringify(usage)}`);
}

const FINISH = new Set(["length", "stop"]);
const MAX = 8;
const LONG_SYSTEM =
  "You are a careful assistant for a logistics company. Answer briefly and precisely. " +
  "Shipments leave the northern depot every morning at six and the southern depot at nine; " +
  "refrigerated goods always travel on the early trucks, and fragile parcels are packed last. ";

async function run(what, fn) {
  try {
    await fn();
  } catch (err) {
    check(false, `${what}: threw ${err?.constructor?.name}: ${err?.status ?? ""} ${err?.message}`);
  }
}

await run("models.list", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  check(ids.includes(model), `models.list has ${model} (${JSON.stringify(ids)})`);
});

let completionText = null;
await run("completions", async () => {
  const r = await client.completions.create({
    model, prompt: "The capital of France is", max_tokens: MAX, temperature: 0, ignore_eos: true,
  });
  check(r.object === "text_completion", `completions object ${r.object}`);
  check(r.model === model, `completions model ${r.model}`);
  check(r.choices.length === 1 && typeof r.choices[0].text === "string" && r.choices[0].text.length > 0,
        `completions text non-empty: ${JSON.stringify(r.choices[0]?.text)}`);
  check(r.choices[0].finish_reason === "length", `completions finish_reason ${r.choices[0].finish_reason}`);
  checkUsage(r.usage, "completions", MAX);
  check(r.usage?.completion_tokens === MAX, `completions completion_tokens == ${MAX} with ignore_eos`);
  completionText = r.choices[0].text;
});

await run("completions stream", async () => {
  const stream = await client.completions.create({
    model, prompt: "The capital of France is", max_tokens: MAX, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null, chunks = 0, afterUsage = 0;
  for await (const c of stream) {
    chunks++;
    if (usage) afterUsage++;
    for (const ch of c.choices ?? []) {
      text += ch.text ?? "";
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    if (c.usage) usage = c.usage;
  }
  // Reaching here means the stream ended (the client stops at [DONE] or EOF) without an error.
  check(chunks >= 2, `completions stream: ${chunks} chunks`);
  check(text.length > 0, `completions stream text non-empty: ${JSON.stringify(text)}`);
  check(finish === "length", `completions stream finish_reason ${finish}`);
  checkUsage(usage, "completions stream", MAX);
  check(afterUsage === 0, "completions stream: usage chunk is the last one");
  if (completionText !== null) {
    check(text === completionText, `greedy stream text == non-stream text (${JSON.stringify(text)} vs ${JSON.stringify(completionText)})`);
  }
});

const messages = [
  { role: "system", content: LONG_SYSTEM.repeat(2) },
  { role: "user", content: "When do refrigerated goods leave?" },
];
let chatText = null;
await run("chat", async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: MAX, temperature: 0, ignore_eos: true });
  check(r.object === "chat.completion", `chat object ${r.object}`);
  const m = r.choices[0]?.message;
  check(m?.role === "assistant", `chat message role ${m?.role}`);
  check(typeof m?.content === "string" && m.content.length > 0, `chat content non-empty: ${JSON.stringify(m?.content)}`);
  check(FINISH.has(r.choices[0]?.finish_reason), `chat finish_reason ${r.choices[0]?.finish_reason}`);
  checkUsage(r.usage, "chat", MAX);
  check(r.usage?.prompt_tokens > 64, `chat prompt long enough for remote prefill (${r.usage?.prompt_tokens} tokens)`);
  chatText = m?.content ?? null;
});

await run("chat stream", async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: MAX, temperature: 0, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null, role = null, chunks = 0, wrongObject = 0;
  for await (const c of stream) {
    chunks++;
    if (c.object !== "chat.completion.chunk") wrongObject++;
    for (const ch of c.choices ?? []) {
      if (ch.delta?.role) role = ch.delta.role;
      text += ch.delta?.content ?? "";
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    if (c.usage) usage = c.usage;
  }
  check(chunks >= 2 && wrongObject === 0, `chat stream: ${chunks} chat.completion.chunk objects`);
  check(role === "assistant", `chat stream delta role ${role}`);
  check(text.length > 0, `chat stream content non-empty: ${JSON.stringify(text)}`);
  check(FINISH.has(finish), `chat stream finish_reason ${finish}`);
  checkUsage(usage, "chat stream", MAX);
  check(usage?.prompt_tokens_details?.cached_tokens > 0,
        `chat stream after the same chat: cached_tokens ${usage?.prompt_tokens_details?.cached_tokens} > 0`);
  if (chatText !== null) check(text === chatText, "greedy chat stream content == non-stream content");
});

await run("unknown model", async () => {
  try {
    await client.chat.completions.create({ model: "no-such-model", messages, max_tokens: 4 });
    check(false, "unknown model: request succeeded");
  } catch (err) {
    check(err instanceof OpenAI.NotFoundError && err.status === 404,
          `unknown model -> OpenAI.NotFoundError 404 (got ${err?.constructor?.name} ${err?.status})`);
    check(typeof err?.error?.message === "string" || typeof err?.message === "string", "404 carries a message");
  }
});

await run("bad request", async () => {
  try {
    await client.completions.create({ model, prompt: "hi", max_tokens: -1 });
    check(false, "max_tokens -1: request succeeded");
  } catch (err) {
    check(err instanceof OpenAI.BadRequestError && err.status === 400,
          `max_tokens -1 -> OpenAI.BadRequestError 400 (got ${err?.constructor?.name} ${err?.status})`);
  }
});

if (failures.length) {
  console.log(`\n${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("\nall checks passed");
