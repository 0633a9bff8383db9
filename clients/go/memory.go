package aether

// The high-level Go API, the same shape as Python's Memory: memories, sessions and episodes as
// plain structs, no request messages to build.
//
//	memory, _ := aether.NewMemory(aether.Options{Target: "127.0.0.1:50051", Tenant: "demo"}, "me")
//	defer memory.Close()
//	memory.Add(ctx, "I am allergic to peanuts", aether.AddOptions{Tags: []string{"health"}})
//	hits, _ := memory.Search(ctx, "which foods should I avoid?", aether.SearchOptions{K: 3})
//	chat := memory.Session("s1")
//	chat.Append(ctx, "user", "Book a table for two")
//	saved, _ := chat.Checkpoint(ctx, "before booking")
//	memory.Record(ctx, "restaurant_search", aether.RecordOptions{Outcome: "success", Session: "s1"})
//	chat.Restore(ctx, saved)
//
// Errors are the server's gRPC statuses (status.FromError names the code and, in its details,
// the offending field).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	memoryv1 "github.com/aether-memory/aether/clients/go/gen/aether/memory/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// MemoryRecord is a stored memory.
type MemoryRecord struct {
	ID         string
	Content    string
	AgentID    string
	Tags       []string
	Metadata   map[string]any
	Importance *float64
	SessionID  string
	Created    time.Time
	Happened   time.Time // when the remembered thing happened (event_time)
}

// Hit is a search result: the memory, its final score (higher is better) and its cosine
// similarity to the query.
type Hit struct {
	MemoryRecord
	Score      float64
	Similarity float64
}

// Added is what Add stored; Deduplicated when the agent already had this content.
type Added struct {
	MemoryRecord
	Deduplicated bool
}

// Message is one message of a session's working memory.
type Message struct {
	Role    string
	Content string
}

// AddOptions are Add's optional fields; Agent empty means the Memory's agent.
type AddOptions struct {
	Agent      string
	Tags       []string
	Metadata   map[string]any
	Importance *float64
	Session    string
	RequestID  string // with one, a retry returns the first call's answer
}

// SearchOptions are Search's optional fields; K 0 means 10.
type SearchOptions struct {
	Agent         string
	K             int32
	Tags          []string
	MinSimilarity *float64
}

// RecordOptions are Record's optional fields. Kind: tool_call (default), llm_call, error,
// checkpoint, message, decision or custom; Outcome: success, failure, cancelled or pending.
type RecordOptions struct {
	Kind    string
	Outcome string
	Payload map[string]any
	Session string
	EventID string // the same EventID again returns the first episode's id
	Agent   string
}

// Memory is the memories of one agent over a Client.
type Memory struct {
	Client *Client
	Agent  string
}

// NewMemory dials the service for one agent.
func NewMemory(opts Options, agent string) (*Memory, error) {
	client, err := Dial(opts)
	if err != nil {
		return nil, err
	}
	if agent == "" {
		agent = "default"
	}
	return &Memory{Client: client, Agent: agent}, nil
}

// Close releases the channel.
func (m *Memory) Close() error { return m.Client.Close() }

func (m *Memory) agent(named string) string {
	if named != "" {
		return named
	}
	return m.Agent
}

func record(memory *memoryv1.Memory) MemoryRecord {
	out := MemoryRecord{
		ID: memory.GetId(), Content: memory.GetContent(), AgentID: memory.GetAgentId(),
		Tags: memory.GetTags(), Metadata: memory.GetMetadata().AsMap(), Importance: memory.Importance,
		SessionID: memory.GetSessionId(),
	}
	if memory.GetCreateTime() != nil {
		out.Created = memory.GetCreateTime().AsTime()
	}
	if memory.GetEventTime() != nil {
		out.Happened = memory.GetEventTime().AsTime()
	}
	return out
}

// Add stores text.
func (m *Memory) Add(ctx context.Context, text string, opts AddOptions) (Added, error) {
	memory := &memoryv1.Memory{AgentId: m.agent(opts.Agent), Content: text, Tags: opts.Tags,
		Importance: opts.Importance, SessionId: opts.Session}
	if opts.Metadata != nil {
		metadata, err := structpb.NewStruct(opts.Metadata)
		if err != nil {
			return Added{}, fmt.Errorf("metadata: %w", err)
		}
		memory.Metadata = metadata
	}
	response, err := m.Client.Memory.StoreMemory(ctx, &memoryv1.StoreMemoryRequest{Memory: memory, RequestId: opts.RequestID})
	if err != nil {
		return Added{}, err
	}
	return Added{MemoryRecord: record(response.GetMemory()), Deduplicated: response.GetDeduplicated()}, nil
}

// Search returns the best K memories for query, best first (hybrid search, re-ranked).
func (m *Memory) Search(ctx context.Context, query string, opts SearchOptions) ([]Hit, error) {
	request := &memoryv1.SearchMemoriesRequest{AgentId: m.agent(opts.Agent), Query: query,
		PageSize: opts.K, MinSimilarity: opts.MinSimilarity}
	if request.PageSize == 0 {
		request.PageSize = 10
	}
	if len(opts.Tags) > 0 {
		request.Filter = &memoryv1.MemoryFilter{Tags: opts.Tags}
	}
	response, err := m.Client.Memory.SearchMemories(ctx, request)
	if err != nil {
		return nil, err
	}
	hits := make([]Hit, 0, len(response.GetResults()))
	for _, r := range response.GetResults() {
		hits = append(hits, Hit{MemoryRecord: record(r.GetMemory()), Score: r.GetScore(),
			Similarity: r.GetBreakdown().GetVectorSimilarity()})
	}
	return hits, nil
}

// Get returns one memory by id.
func (m *Memory) Get(ctx context.Context, id string) (MemoryRecord, error) {
	response, err := m.Client.Memory.GetMemory(ctx, &memoryv1.GetMemoryRequest{Id: id})
	if err != nil {
		return MemoryRecord{}, err
	}
	return record(response.GetMemory()), nil
}

// Forget forgets these memories of the Memory's agent; it returns the ids forgotten.
func (m *Memory) Forget(ctx context.Context, ids ...string) ([]string, error) {
	response, err := m.Client.Memory.ForgetMemories(ctx, &memoryv1.ForgetMemoriesRequest{
		AgentId: m.Agent, Selector: &memoryv1.ForgetMemoriesRequest_Ids{Ids: &memoryv1.MemoryIds{Ids: ids}}})
	if err != nil {
		return nil, err
	}
	return response.GetForgottenIds(), nil
}

// Record records one episode (a tool call by default) and returns its episode id.
func (m *Memory) Record(ctx context.Context, name string, opts RecordOptions) (string, error) {
	kind := opts.Kind
	if kind == "" {
		kind = "tool_call"
	}
	episodeType, ok := memoryv1.EpisodeType_value["EPISODE_TYPE_"+strings.ToUpper(kind)]
	if !ok || episodeType == 0 {
		return "", fmt.Errorf("unknown episode kind %q", kind)
	}
	episode := &memoryv1.Episode{EventId: opts.EventID, AgentId: m.agent(opts.Agent),
		SessionId: opts.Session, Type: memoryv1.EpisodeType(episodeType), Name: name}
	if episode.EventId == "" {
		id := make([]byte, 16)
		_, _ = rand.Read(id) // crypto/rand.Read never fails (Go 1.24+)
		episode.EventId = hex.EncodeToString(id)
	}
	if opts.Outcome != "" {
		outcome, ok := memoryv1.EpisodeOutcome_value["EPISODE_OUTCOME_"+strings.ToUpper(opts.Outcome)]
		if !ok || outcome == 0 {
			return "", fmt.Errorf("unknown outcome %q", opts.Outcome)
		}
		episode.Outcome = memoryv1.EpisodeOutcome(outcome)
	}
	if opts.Payload != nil {
		payload, err := structpb.NewStruct(opts.Payload)
		if err != nil {
			return "", fmt.Errorf("payload: %w", err)
		}
		episode.Payload = payload
	}
	response, err := m.Client.Episodes.RecordEpisode(ctx, &memoryv1.RecordEpisodeRequest{Episode: episode})
	if err != nil {
		return "", err
	}
	return response.GetEpisode().GetEpisodeId(), nil
}

// Session is a session's working memory, its checkpoints, and memories stored into it.
type Session struct {
	Memory *Memory
	ID     string
	Agent  string
}

// Session returns the session id of the Memory's agent.
func (m *Memory) Session(id string) *Session { return &Session{Memory: m, ID: id, Agent: m.Agent} }

func messages(session *memoryv1.Session) []Message {
	out := make([]Message, 0, len(session.GetMessages()))
	for _, message := range session.GetMessages() {
		out = append(out, Message{Role: message.GetRole(), Content: message.GetContent()})
	}
	return out
}

// Append adds a message and returns the session's messages after it.
func (s *Session) Append(ctx context.Context, role, content string) ([]Message, error) {
	response, err := s.Memory.Client.Memory.AppendWorkingMemory(ctx, &memoryv1.AppendWorkingMemoryRequest{
		SessionId: s.ID, AgentId: s.Agent, Messages: []*memoryv1.ContextMessage{{Role: role, Content: content}}})
	if err != nil {
		return nil, err
	}
	return messages(response.GetSession()), nil
}

// Messages returns the session's messages; none when it was never written or has expired.
func (s *Session) Messages(ctx context.Context) ([]Message, error) {
	response, err := s.Memory.Client.Memory.GetWorkingMemory(ctx, &memoryv1.GetWorkingMemoryRequest{SessionId: s.ID})
	if status.Code(err) == codes.NotFound {
		return []Message{}, nil
	}
	if err != nil {
		return nil, err
	}
	return messages(response.GetSession()), nil
}

// Checkpoint saves the session as it is now and returns the checkpoint's number.
func (s *Session) Checkpoint(ctx context.Context, label string) (int64, error) {
	response, err := s.Memory.Client.Memory.CreateCheckpoint(ctx, &memoryv1.CreateCheckpointRequest{SessionId: s.ID, Label: label})
	if err != nil {
		return 0, err
	}
	return response.GetCheckpoint().GetNumber(), nil
}

// Restore rolls the session back to a checkpoint and returns its messages then.
func (s *Session) Restore(ctx context.Context, number int64) ([]Message, error) {
	response, err := s.Memory.Client.Memory.RestoreCheckpoint(ctx, &memoryv1.RestoreCheckpointRequest{SessionId: s.ID, Number: number})
	if err != nil {
		return nil, err
	}
	return messages(response.GetSession()), nil
}

// Remember stores a long-term memory from this session.
func (s *Session) Remember(ctx context.Context, text string, opts AddOptions) (Added, error) {
	opts.Agent, opts.Session = s.Agent, s.ID
	return s.Memory.Add(ctx, text, opts)
}
