// Command agent is the Go example agent: it stores and searches memories, checkpoints and
// restores its working memory, records a burst of episodes over the bidirectional stream, and
// watches the episode log live until it has seen every peer's burst.
//
//	go run ./examples/agent -target 127.0.0.1:50051 -tenant demo -agent go-agent \
//	    -peers py-agent,ts-agent -burst 50 -since-ms 1767225600000
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"strings"
	"time"

	aether "github.com/aether-memory/aether/clients/go"
	memoryv1 "github.com/aether-memory/aether/clients/go/gen/aether/memory/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address")
	tenant := flag.String("tenant", "demo", "tenant")
	apiKey := flag.String("api-key", "", "API key, when the server requires one")
	agent := flag.String("agent", "go-agent", "this agent's id")
	peers := flag.String("peers", "", "comma-separated agent ids whose bursts to wait for")
	burst := flag.Int("burst", 50, "episodes to record")
	sinceMs := flag.Int64("since-ms", 0, "watch episodes recorded from this time (ms since epoch)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	memory, err := aether.NewMemory(aether.Options{Target: *target, Tenant: *tenant, APIKey: *apiKey}, *agent)
	if err != nil {
		log.Fatal(err)
	}
	defer memory.Close()
	client := memory.Client // the stubs, for the live subscription and the episode stream

	// Watch first, so nothing recorded after since-ms is missed.
	start := time.Now()
	if *sinceMs > 0 {
		start = time.UnixMilli(*sinceMs)
	}
	seen := make(chan map[string]int, 1)
	go func() {
		counts := map[string]int{}
		want := strings.Split(*peers, ",")
		sub, err := client.Episodes.SubscribeEpisodes(ctx, &memoryv1.SubscribeEpisodesRequest{
			Start: &memoryv1.SubscribeEpisodesRequest_StartTime{StartTime: timestamppb.New(start)},
		})
		if err != nil {
			log.Fatal(err)
		}
		for {
			response, err := sub.Recv()
			if err != nil {
				log.Fatalf("subscription: %v", err)
			}
			if ep := response.GetEpisode(); ep != nil {
				counts[ep.GetAgentId()]++
			}
			done := true
			for _, p := range want {
				if p != "" && counts[p] < *burst {
					done = false
				}
			}
			if done {
				seen <- counts
				return
			}
		}
	}()

	for _, content := range []string{"The user prefers window seats on long flights.", "The user's daughter is called Maya."} {
		if _, err := memory.Add(ctx, content, aether.AddOptions{}); err != nil {
			log.Fatal(err)
		}
	}
	hits, err := memory.Search(ctx, "where does the user like to sit on a plane?", aether.SearchOptions{K: 1})
	if err != nil || len(hits) == 0 || !strings.Contains(hits[0].Content, "window") {
		log.Fatalf("search: %v %v", err, hits)
	}
	if got, err := memory.Get(ctx, hits[0].ID); err != nil || got.AgentID != *agent {
		log.Fatalf("get: %v %v", err, got)
	}
	maya, err := memory.Search(ctx, "the user's daughter", aether.SearchOptions{K: 1})
	if err != nil || len(maya) == 0 {
		log.Fatalf("search: %v", err)
	}
	if forgotten, err := memory.Forget(ctx, maya[0].ID); err != nil || len(forgotten) != 1 {
		log.Fatalf("forget: %v %v", err, forgotten)
	}

	chat := memory.Session(*agent + "-session")
	if _, err := chat.Append(ctx, "user", "plan the trip"); err != nil {
		log.Fatal(err)
	}
	checkpoint, err := chat.Checkpoint(ctx, "before tools")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := chat.Append(ctx, "user", "a step to undo"); err != nil {
		log.Fatal(err)
	}
	restored, err := chat.Restore(ctx, checkpoint)
	if err != nil || len(restored) != 1 {
		log.Fatalf("restore: %v", err)
	}
	if _, err := memory.Record(ctx, "trip_planned", aether.RecordOptions{Kind: "decision", Outcome: "success", Session: chat.ID}); err != nil {
		log.Fatal(err)
	}

	episodes := make([]*memoryv1.Episode, *burst)
	for i := range episodes {
		episodes[i] = &memoryv1.Episode{EventId: fmt.Sprintf("%s-%d", *agent, i), AgentId: *agent,
			Type: memoryv1.EpisodeType_EPISODE_TYPE_TOOL_CALL, Name: "web_search",
			Outcome: memoryv1.EpisodeOutcome_EPISODE_OUTCOME_SUCCESS}
	}
	acks, err := client.Record(ctx, episodes, 3)
	if err != nil {
		log.Fatal(err)
	}
	for _, ack := range acks {
		if ack.GetWritten() == nil {
			log.Fatalf("episode %s not written: %v", ack.GetEventId(), ack.GetError())
		}
	}

	select {
	case counts := <-seen:
		fmt.Printf("%s: stored, searched, restored checkpoint %d, recorded %d episodes, saw %v\n",
			*agent, checkpoint, len(acks), counts)
	case <-ctx.Done():
		log.Fatal("timed out waiting for the peers' episodes")
	}
}
