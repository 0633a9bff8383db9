// Package aether is the Go client of Aether Memory: the generated stubs (package memoryv1 under
// gen/) behind a connection that adds the tenant and API key to every call, retries idempotent
// calls on UNAVAILABLE, and a RecordEpisodes helper that resends unacknowledged episodes with
// the same event ids after a broken stream.
package aether

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	memoryv1 "github.com/aether-memory/aether/clients/go/gen/aether/memory/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Options configure a Client. Target is host:port; Tenant and APIKey are sent on every call.
type Options struct {
	Target string
	Tenant string
	APIKey string
	// TLS, when set, secures the channel; nil means plaintext (loopback development).
	TLS credentials.TransportCredentials
}

// Client holds one channel and the two service stubs.
type Client struct {
	conn     *grpc.ClientConn
	Memory   memoryv1.MemoryServiceClient
	Episodes memoryv1.EpisodeServiceClient
}

// serviceConfig retries the unary reads (rpcs.go, generated from the protos' idempotency_level)
// with backoff when the server is UNAVAILABLE.
func serviceConfig() string {
	names := make([]map[string]string, 0, len(retryable))
	for _, r := range retryable {
		names = append(names, map[string]string{"service": r[0], "method": r[1]})
	}
	config, err := json.Marshal(map[string]any{"methodConfig": []any{map[string]any{
		"name": names,
		"retryPolicy": map[string]any{
			"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "2s",
			"backoffMultiplier": 2, "retryableStatusCodes": []string{"UNAVAILABLE"},
		},
	}}})
	if err != nil {
		panic(err) // a literal of strings and numbers always marshals
	}
	return string(config)
}

// Dial creates a Client; the connection is made lazily by the first call.
func Dial(opts Options) (*Client, error) {
	creds := opts.TLS
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	pairs := []string{}
	if opts.Tenant != "" {
		pairs = append(pairs, "aether-tenant", opts.Tenant)
	}
	if opts.APIKey != "" {
		pairs = append(pairs, "authorization", "Bearer "+opts.APIKey)
	}
	withMD := func(ctx context.Context) context.Context {
		if len(pairs) == 0 {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, pairs...)
	}
	conn, err := grpc.NewClient(opts.Target,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(serviceConfig()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
			cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return invoker(withMD(ctx), method, req, reply, cc, o...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc,
			cc *grpc.ClientConn, method string, streamer grpc.Streamer,
			o ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withMD(ctx), desc, cc, method, o...)
		}),
	)
	if err != nil {
		return nil, err
	}
	return &Client{
		conn:     conn,
		Memory:   memoryv1.NewMemoryServiceClient(conn),
		Episodes: memoryv1.NewEpisodeServiceClient(conn),
	}, nil
}

// Close releases the channel.
func (c *Client) Close() error { return c.conn.Close() }

// Record sends episodes over RecordEpisodes in requests of at most 100 and returns one ack per
// episode, in order. When the stream breaks, it opens a new one and resends the episodes not
// yet acknowledged with the same event ids (the server acks a resent id with the original
// episode), up to `attempts` streams.
func (c *Client) Record(ctx context.Context, episodes []*memoryv1.Episode, attempts int) ([]*memoryv1.EpisodeAck, error) {
	acks := make([]*memoryv1.EpisodeAck, 0, len(episodes))
	var last error
	for try := 0; try < attempts && len(acks) < len(episodes); try++ {
		stream, err := c.Episodes.RecordEpisodes(ctx)
		if err != nil {
			last = err
			continue
		}
		for len(acks) < len(episodes) {
			end := min(len(acks)+100, len(episodes))
			if err = stream.Send(&memoryv1.RecordEpisodesRequest{Episodes: episodes[len(acks):end]}); err != nil {
				break
			}
			var response *memoryv1.RecordEpisodesResponse
			if response, err = stream.Recv(); err != nil {
				break
			}
			acks = append(acks, response.GetAcks()...)
		}
		_ = stream.CloseSend()
		if err != nil && !errors.Is(err, io.EOF) {
			last = err
		}
	}
	if len(acks) < len(episodes) {
		return acks, fmt.Errorf("recorded %d of %d episodes: %w", len(acks), len(episodes), last)
	}
	return acks, nil
}
