// The high-level TypeScript API, the same shape as Python's `Memory` (named AgentMemory here:
// `Memory` and `Session` are the protobuf message types this package also exports): memories,
// sessions and episodes as plain objects, no protobuf messages to build.
//
//   const memory = new AgentMemory({ baseUrl: "http://127.0.0.1:50051", tenant: "demo", agent: "me" });
//   await memory.add("I am allergic to peanuts", { tags: ["health"] });
//   const hits = await memory.search("which foods should I avoid?", { k: 3 });
//   const chat = memory.session("s1");
//   await chat.append("user", "Book a table for two");
//   const saved = await chat.checkpoint("before booking");
//   await memory.record("restaurant_search", { outcome: "success", session: "s1" });
//   await chat.restore(saved);
//
// Errors are the server's statuses as ConnectError (the offending field in its details).
import { Code, ConnectError } from "@connectrpc/connect";
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { connect, type AetherClient, type Options } from "./index.js";
import { EpisodeOutcome, EpisodeType } from "./gen/aether/memory/v1/episode_pb.js";
import type { Memory as MemoryMessage } from "./gen/aether/memory/v1/memory_pb.js";
import type { Session as SessionMessage } from "./gen/aether/memory/v1/working_memory_pb.js";

/** A stored memory. */
export interface MemoryRecord {
  id: string;
  content: string;
  agentId: string;
  tags: string[];
  metadata: JsonObject;
  importance?: number;
  sessionId: string;
  created?: Date;
  /** When the remembered thing happened (event_time). */
  happened?: Date;
}

/** A search result: the memory, its final score (higher is better) and its cosine similarity. */
export interface Hit extends MemoryRecord {
  score: number;
  similarity: number;
}

/** What `add` stored; `deduplicated` when the agent already had this content. */
export interface Added extends MemoryRecord {
  deduplicated: boolean;
}

export interface Message {
  role: string;
  content: string;
}

function record(m: MemoryMessage | undefined): MemoryRecord {
  if (!m) throw new Error("the response carried no memory");
  return {
    id: m.id,
    content: m.content,
    agentId: m.agentId,
    tags: [...m.tags],
    metadata: (m.metadata ?? {}) as JsonObject,
    importance: m.importance,
    sessionId: m.sessionId,
    created: m.createTime ? timestampDate(m.createTime) : undefined,
    happened: m.eventTime ? timestampDate(m.eventTime) : undefined,
  };
}

function messages(session: SessionMessage | undefined): Message[] {
  return (session?.messages ?? []).map((m) => ({ role: m.role, content: m.content }));
}

function enumValue<E extends Record<string, string | number>>(values: E, name: string, what: string): number {
  const value = values[name.toUpperCase() as keyof E];
  if (typeof value !== "number") throw new RangeError(`unknown ${what}: ${name}`);
  return value;
}

/** A session's working memory, its checkpoints, and memories stored into it. */
export class AgentSession {
  constructor(
    readonly memory: AgentMemory,
    readonly id: string,
    readonly agent: string,
  ) {}

  /** Add a message; returns the session's messages after it. */
  async append(role: string, content: string): Promise<Message[]> {
    const response = await this.memory.client.memory.appendWorkingMemory({
      sessionId: this.id,
      agentId: this.agent,
      messages: [{ role, content }],
    });
    return messages(response.session);
  }

  /** The session's messages; none when it was never written or has expired. */
  async messages(): Promise<Message[]> {
    try {
      return messages((await this.memory.client.memory.getWorkingMemory({ sessionId: this.id })).session);
    } catch (error) {
      if (error instanceof ConnectError && error.code === Code.NotFound) return [];
      throw error;
    }
  }

  /** Save the session as it is now; returns the checkpoint's number. */
  async checkpoint(label = ""): Promise<number> {
    const response = await this.memory.client.memory.createCheckpoint({ sessionId: this.id, label });
    return Number(response.checkpoint!.number);
  }

  /** Roll the session back to a checkpoint; returns its messages then. */
  async restore(number: number): Promise<Message[]> {
    const response = await this.memory.client.memory.restoreCheckpoint({
      sessionId: this.id,
      number: BigInt(number),
    });
    return messages(response.session);
  }

  /** Store a long-term memory from this session. */
  async remember(text: string, options: AddOptions = {}): Promise<Added> {
    return this.memory.add(text, { ...options, agent: this.agent, session: this.id });
  }
}

export interface AddOptions {
  agent?: string;
  tags?: string[];
  metadata?: JsonObject;
  importance?: number;
  session?: string;
  /** With a requestId, a retry returns the first call's answer. */
  requestId?: string;
}

export interface SearchOptions {
  agent?: string;
  k?: number;
  tags?: string[];
  minSimilarity?: number;
}

export interface RecordOptions {
  /** tool_call (default), llm_call, error, checkpoint, message, decision or custom. */
  kind?: string;
  /** success, failure, cancelled or pending. */
  outcome?: string;
  payload?: JsonObject;
  session?: string;
  /** With the same eventId again, the first episode's id comes back. */
  eventId?: string;
  agent?: string;
}

/** The memories of one agent (each call may name another with `agent`). */
export class AgentMemory {
  readonly client: AetherClient;
  readonly agent: string;

  constructor(options: Options & { agent?: string }) {
    this.client = connect(options);
    this.agent = options.agent ?? "default";
  }

  /** Store `text`. */
  async add(text: string, options: AddOptions = {}): Promise<Added> {
    const response = await this.client.memory.storeMemory({
      memory: {
        agentId: options.agent ?? this.agent,
        content: text,
        tags: options.tags ?? [],
        metadata: options.metadata,
        importance: options.importance,
        sessionId: options.session ?? "",
      },
      requestId: options.requestId ?? "",
    });
    return { ...record(response.memory), deduplicated: response.deduplicated };
  }

  /** The best `k` memories for `query`, best first (hybrid search, re-ranked). */
  async search(query: string, options: SearchOptions = {}): Promise<Hit[]> {
    const response = await this.client.memory.searchMemories({
      agentId: options.agent ?? this.agent,
      query,
      pageSize: options.k ?? 10,
      filter: options.tags?.length ? { tags: options.tags } : undefined,
      minSimilarity: options.minSimilarity,
    });
    return response.results.map((r) => ({
      ...record(r.memory),
      score: r.score,
      similarity: r.breakdown?.vectorSimilarity ?? 0,
    }));
  }

  async get(id: string): Promise<MemoryRecord> {
    return record((await this.client.memory.getMemory({ id })).memory);
  }

  /** Forget these memories; returns the ids that were forgotten. */
  async forget(ids: string[], options: { agent?: string } = {}): Promise<string[]> {
    const response = await this.client.memory.forgetMemories({
      agentId: options.agent ?? this.agent,
      selector: { case: "ids", value: { ids } },
    });
    return response.forgottenIds;
  }

  session(id: string, options: { agent?: string } = {}): AgentSession {
    return new AgentSession(this, id, options.agent ?? this.agent);
  }

  /** Record one episode (a tool call by default); returns its episode id. */
  async record(name: string, options: RecordOptions = {}): Promise<string> {
    const response = await this.client.episodes.recordEpisode({
      episode: {
        eventId: options.eventId ?? crypto.randomUUID(),
        agentId: options.agent ?? this.agent,
        sessionId: options.session ?? "",
        type: enumValue(EpisodeType, options.kind ?? "tool_call", "episode kind"),
        name,
        outcome: options.outcome ? enumValue(EpisodeOutcome, options.outcome, "outcome") : undefined,
        payload: options.payload,
      },
    });
    return response.episode!.episodeId;
  }
}
