// Command ferretdb runs FerretDB v1 (SQLite backend) through its embeddable package, so the
// test run has a real MongoDB-wire-protocol server without mongod.
//
// The embeddable package (rather than cmd/ferretdb) is used because a `go install`ed
// cmd/ferretdb panics without the version.txt its release tooling generates; the embeddable
// package also fixes telemetry off and runs no debug listener.
//
// It prints the server's MongoDB URI on its first stdout line, then serves until SIGINT/SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TCP address to listen on (port 0 picks one)")
	stateDir := flag.String("state-dir", "", "directory of the SQLite databases (required)")
	logLevel := flag.String("log-level", "warn", "debug, info, warn or error")
	flag.Parse()
	if *stateDir == "" {
		log.Fatal("-state-dir is required")
	}
	dir, err := filepath.Abs(*stateDir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Fatal(err)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/",
	})
	if err != nil {
		log.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			log.Print(err)
		}
	}()
	fmt.Println(f.MongoDBURI())
	<-done
}
