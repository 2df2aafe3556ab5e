// The BullMQ side of benchmarks/bullmq.py: the seed's engine, measured on the same Redis.
//
// One Worker with `concurrency` jobs at once runs no-op chain steps; each step's processor
// adds the chain's next step to the queue (the "processor adds the next step" pattern),
// the last one records the chain's end. Commands arrive on stdin, one JSON per line; each
// answer is one JSON line on stdout:
//   {"cmd": "throughput", "chains": 200, "steps": 10}  -> {"steps_per_s", "wall_s", "submit_s"}
//   {"cmd": "latency", "runs": 50, "steps": 10}        -> {"latencies_ms": [...]}
//   {"cmd": "quit"}
// Usage: node bullmq_chain.js REDIS_URL PREFIX CONCURRENCY   (run from a folder where
// `npm install bullmq` was done; benchmarks/bullmq.py does that in a temporary folder).
"use strict";

const { Queue, Worker } = require("bullmq");
const readline = require("readline");

const [url, prefix, concurrencyArg] = process.argv.slice(2);
const parsed = new URL(url);
const connection = { host: parsed.hostname, port: Number(parsed.port || 6379), maxRetriesPerRequest: null };
const concurrency = Number(concurrencyArg || 2);
const queue = new Queue("chain", { connection, prefix });
const jobOptions = { removeOnComplete: false, removeOnFail: false }; // BullMQ's defaults, spelled out

let ends = new Map(); // chain tag -> finish time (ms) of its last step
let waiters = new Map(); // chain tag -> resolve()

const worker = new Worker(
  "chain",
  async (job) => {
    const { tag, i, n } = job.data;
    if (i + 1 < n) {
      await queue.add("step", { tag, i: i + 1, n }, jobOptions);
    } else {
      const at = Date.now();
      ends.set(tag, at);
      const resolve = waiters.get(tag);
      if (resolve) resolve(at);
    }
  },
  { connection, prefix, concurrency },
);

function finished(tag) {
  if (ends.has(tag)) return Promise.resolve(ends.get(tag));
  return new Promise((resolve) => waiters.set(tag, resolve));
}

async function throughput(chains, steps) {
  const run = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const tags = Array.from({ length: chains }, (_, c) => `${run}:${c}`);
  const t0 = Date.now();
  for (const tag of tags) await queue.add("step", { tag, i: 0, n: steps }, jobOptions);
  const submitted = Date.now();
  const finishes = await Promise.all(tags.map(finished));
  const wall = (Math.max(...finishes) - t0) / 1000;
  return { steps: chains * steps, wall_s: wall, steps_per_s: (chains * steps) / wall, submit_s: (submitted - t0) / 1000 };
}

async function latency(runs, steps) {
  const out = [];
  for (let r = 0; r < runs; r++) {
    const tag = `lat-${Date.now()}-${r}`;
    const t0 = process.hrtime.bigint();
    await queue.add("step", { tag, i: 0, n: steps }, jobOptions);
    await finished(tag);
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { latencies_ms: out };
}

async function main() {
  await worker.waitUntilReady();
  process.stdout.write(JSON.stringify({ ready: true }) + "\n");
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const msg = JSON.parse(line);
    let answer;
    if (msg.cmd === "throughput") answer = await throughput(msg.chains, msg.steps);
    else if (msg.cmd === "latency") answer = await latency(msg.runs, msg.steps);
    else break;
    ends = new Map();
    waiters = new Map();
    process.stdout.write(JSON.stringify(answer) + "\n");
  }
  await worker.close();
  await queue.close();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
