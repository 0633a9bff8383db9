// The TypeScript example agent: stores and searches memories, checkpoints and restores its
// working memory, records a burst of episodes over the bidirectional stream, and watches the
// episode log live until it has seen every peer's burst.
//
//   node dist/examples/agent.js --target 127.0.0.1:50051 --tenant demo --agent ts-agent \
//       --peers py-agent,go-agent --burst 50 --since-ms 1767225600000
import { parseArgs } from "node:util";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { AgentMemory, EpisodeOutcome, EpisodeType } from "../src/index.js";

const { values } = parseArgs({
  options: {
    target: { type: "string", default: "127.0.0.1:50051" },
    tenant: { type: "string", default: "demo" },
    "api-key": { type: "string", default: "" },
    agent: { type: "string", default: "ts-agent" },
    peers: { type: "string", default: "" },
    burst: { type: "string", default: "50" },
    "since-ms": { type: "string", default: "0" },
  },
});
const agent = values.agent!;
const burst = Number(values.burst);
const peers = values.peers!.split(",").filter(Boolean);
const memory = new AgentMemory({
  baseUrl: `http://${values.target}`,
  tenant: values.tenant,
  apiKey: values["api-key"] || undefined,
  agent,
});
const client = memory.client; // the stubs, for the live subscription and the episode stream
const abort = new AbortController();
const deadline = setTimeout(() => abort.abort(), 90_000);

async function watch(): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const since = Number(values["since-ms"]) || Date.now();
  const stream = client.episodes.subscribeEpisodes(
    { start: { case: "startTime", value: timestampFromMs(since) } },
    { signal: abort.signal, timeoutMs: 0 },
  );
  for await (const response of stream) {
    if (response.event.case === "episode") {
      const id = response.event.value.agentId;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    if (peers.every((p) => (counts.get(p) ?? 0) >= burst)) return counts;
  }
  throw new Error("subscription ended early");
}

const seen = watch();
for (const content of ["The user prefers window seats on long flights.", "The user's daughter is called Maya."]) {
  await memory.add(content);
}
const [best] = await memory.search("where does the user like to sit on a plane?", { k: 1 });
if (!best?.content.includes("window")) throw new Error("search missed");
if ((await memory.get(best.id)).agentId !== agent) throw new Error("get returned another agent's memory");
const [maya] = await memory.search("the user's daughter", { k: 1 });
if ((await memory.forget([maya!.id])).join() !== maya!.id) throw new Error("forget missed");

const chat = memory.session(`${agent}-session`);
await chat.append("user", "plan the trip");
const checkpoint = await chat.checkpoint("before tools");
await chat.append("user", "a step to undo");
const restored = await chat.restore(checkpoint);
if (restored.length !== 1) throw new Error("restore did not roll back");
await memory.record("trip_planned", { kind: "decision", outcome: "success", session: chat.id });

const acks = await client.record(
  Array.from({ length: burst }, (_, i) => ({
    eventId: `${agent}-${i}`,
    agentId: agent,
    type: EpisodeType.TOOL_CALL,
    name: "web_search",
    outcome: EpisodeOutcome.SUCCESS,
  })),
);
const unwritten = acks.filter((a) => a.result.case !== "written");
if (unwritten.length) throw new Error(`${unwritten.length} episodes not written`);

const counts = await seen;
clearTimeout(deadline);
console.log(
  `${agent}: stored, searched, restored checkpoint ${checkpoint}, ` +
    `recorded ${acks.length} episodes, saw ${JSON.stringify(Object.fromEntries(counts))}`,
);
abort.abort();
process.exit(0);
