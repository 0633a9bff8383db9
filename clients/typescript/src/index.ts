// The TypeScript client of Aether Memory: the generated stubs (protobuf-es + Connect, under
// src/gen) on a gRPC transport that adds the tenant and API key to every call and retries
// idempotent reads on UNAVAILABLE, plus a RecordEpisodes helper that resends unacknowledged
// episodes with the same event ids after a broken stream.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { EpisodeService } from "./gen/aether/memory/v1/episode_service_pb.js";
import type { EpisodeAck, EpisodeSchema } from "./gen/aether/memory/v1/episode_pb.js";
import { MemoryService } from "./gen/aether/memory/v1/memory_service_pb.js";
import { RETRYABLE } from "./rpcs.js";

export * from "./gen/aether/memory/v1/memory_pb.js";
export * from "./gen/aether/memory/v1/episode_pb.js";
export * from "./gen/aether/memory/v1/memory_service_pb.js";
export * from "./gen/aether/memory/v1/episode_service_pb.js";
export * from "./gen/aether/memory/v1/working_memory_pb.js";
export * from "./gen/aether/memory/v1/agent_state_pb.js";

export interface Options {
  /** "http://host:port" (plaintext) or "https://host:port" (TLS). */
  baseUrl: string;
  tenant?: string;
  apiKey?: string;
  /** Default deadline per call, milliseconds. */
  timeoutMs?: number;
}


function metadata(options: Options): Interceptor {
  return (next) => async (req) => {
    if (options.tenant) req.header.set("aether-tenant", options.tenant);
    if (options.apiKey) req.header.set("authorization", `Bearer ${options.apiKey}`);
    return next(req);
  };
}

const retryReads: Interceptor = (next) => async (req) => {
  if (req.stream || !RETRYABLE.has(`/${req.service.typeName}/${req.method.name}`)) return next(req);
  for (let attempt = 1; ; attempt++) {
    try {
      return await next(req);
    } catch (error) {
      const unavailable = error instanceof ConnectError && error.code === Code.Unavailable;
      if (!unavailable || attempt >= 4) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** (attempt - 1)));
    }
  }
};

async function* cancelledOnExit<T>(
  start: (signal: AbortSignal) => AsyncIterable<T>,
  outer?: AbortSignal,
): AsyncGenerator<T> {
  const own = new AbortController();
  try {
    yield* start(outer ? AbortSignal.any([outer, own.signal]) : own.signal);
  } finally {
    own.abort();
  }
}

export interface AetherClient {
  memory: Client<typeof MemoryService>;
  episodes: Client<typeof EpisodeService>;
  /** Record episodes, one ack per episode in order; resends unacked ones after a broken stream. */
  record(episodes: MessageInitShape<typeof EpisodeSchema>[], attempts?: number): Promise<EpisodeAck[]>;
}

export function connect(options: Options): AetherClient {
  const transport = createGrpcTransport({
    baseUrl: options.baseUrl,
    interceptors: [metadata(options), retryReads],
    defaultTimeoutMs: options.timeoutMs ?? 30_000,
  });
  const memory = createClient(MemoryService, transport);
  const stubs = createClient(EpisodeService, transport);
  const episodes: Client<typeof EpisodeService> = {
    ...stubs,
    // A live tail: no deadline unless one is given, and leaving the loop (break, return,
    // throw) cancels the call. Connect's own iterable does neither: a loop left early kept
    // the HTTP/2 stream, and with it the process, alive until the deadline.
    subscribeEpisodes(request, options) {
      return cancelledOnExit((signal) =>
        stubs.subscribeEpisodes(request, { ...options, timeoutMs: options?.timeoutMs ?? 0, signal }),
        options?.signal,
      );
    },
  };

  async function record(
    batch: MessageInitShape<typeof EpisodeSchema>[],
    attempts = 3,
  ): Promise<EpisodeAck[]> {
    const acks: EpisodeAck[] = [];
    let last: unknown;
    for (let attempt = 0; attempt < attempts && acks.length < batch.length; attempt++) {
      const pending = batch.slice(acks.length);
      async function* requests() {
        for (let i = 0; i < pending.length; i += 100) yield { episodes: pending.slice(i, i + 100) };
      }
      try {
        // Each attempt has the client's deadline (as in the Python client): a stream that
        // never ends fails and is retried with the episodes not yet acknowledged.
        for await (const response of episodes.recordEpisodes(requests())) {
          acks.push(...response.acks);
        }
      } catch (error) {
        last = error;
      }
    }
    if (acks.length < batch.length) {
      throw new Error(`recorded ${acks.length} of ${batch.length} episodes: ${String(last)}`);
    }
    return acks;
  }

  return { memory, episodes, record };
}

export {
  AgentMemory,
  AgentSession,
  type Added,
  type Hit,
  type MemoryRecord,
  type Message,
} from "./memory.js";
