// The TypeScript example agent: stores and searches memories, checkpoints and restores its
// working memory, records a burst of episodes over the bidirectional stream, and watches the
// episode log live until it has seen every peer's burst.
//
//   node dist/examples/agent.js --target 127.0.0.1:50051 --tenant demo --agent ts-agent \
//       --peers py-agent,go-agent --burst 50 --since-ms 1767225600000
import { parseArgs } from "node:util";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EpisodeOutcome, EpisodeType, connect } from "../src/index.js";

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
const client = connect({
  baseUrl: `http://${values.target}`,
  tenant: values.tenant,
  apiKey: values["api-key"] || undefined,
});
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
  await client.memory.storeMemory({ memory: { agentId: agent, content } });
}
const found = await client.memory.searchMemories({
  agentId: agent,
  query: "where does the user like to sit on a plane?",
  pageSize: 1,
});
if (!found.results[0]?.memory?.content.includes("window")) throw new Error("search missed");

const session = `${agent}-session`;
const say = (content: string) =>
  client.memory.appendWorkingMemory({ sessionId: session, agentId: agent, messages: [{ role: "user", content }] });
await say("plan the trip");
const checkpoint = await client.memory.createCheckpoint({ sessionId: session, label: "before tools" });
await say("a step to undo");
const restored = await client.memory.restoreCheckpoint({
  sessionId: session,
  number: checkpoint.checkpoint!.number,
});
if (restored.session!.messages.length !== 1) throw new Error("restore did not roll back");

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
  `${agent}: stored, searched, restored checkpoint ${checkpoint.checkpoint!.number}, ` +
    `recorded ${acks.length} episodes, saw ${JSON.stringify(Object.fromEntries(counts))}`,
);
abort.abort();
process.exit(0);
