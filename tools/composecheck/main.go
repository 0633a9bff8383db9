// composecheck loads a compose file the way Docker Compose does (compose-go: the Compose
// Specification's schema, interpolation, profiles, references) and prints the resolved project as
// JSON, or the loader's error and exit status 1. No Docker engine runs on the build machines, so
// tests/test_deploy.py checks the compose file through this.
//
//	composecheck [--profile NAME]... FILE
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type profiles []string

func (p *profiles) String() string     { return strings.Join(*p, ",") }
func (p *profiles) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var active profiles
	flag.Var(&active, "profile", "a profile to enable (repeat for more)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [--profile NAME]... FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{flag.Arg(0)},
		cli.WithOsEnv,
		cli.WithProfiles(active),
		cli.WithResolvedPaths(false),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
