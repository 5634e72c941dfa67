package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/enforcer-dev/enforcer/internal/control"
)

// agentCAEnv are the variables that make common TLS clients trust the agent CA: the ones that
// add a file to the roots take the certificate alone, the ones that replace the roots take the
// bundle (the system's roots and the certificate).
var agentCAEnv = []struct {
	name   string
	bundle bool
	who    string
}{
	{"SSL_CERT_FILE", true, "OpenSSL, Go, Python's ssl, Ruby"},
	{"REQUESTS_CA_BUNDLE", true, "Python requests"},
	{"CURL_CA_BUNDLE", true, "curl"},
	{"GIT_SSL_CAINFO", true, "git"},
	{"NODE_EXTRA_CA_CERTS", false, "Node.js"},
}

func cmdAgentCA(ctx context.Context, fs *flag.FlagSet, args []string) error {
	file := fs.Bool("file", false, "print the certificate's file instead")
	env := fs.Bool("env", false, "print shell lines that make common TLS clients trust it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ca control.AgentCA
	if err := client().Do(ctx, "GET", "/v1/agent-ca", nil, &ca); err != nil {
		return err
	}
	switch {
	case *env:
		for _, v := range agentCAEnv {
			path := ca.File
			if v.bundle {
				path = ca.Bundle
			}
			fmt.Printf("export %s=%s  # %s\n", v.name, path, v.who)
		}
	case *file:
		fmt.Println(ca.File)
	default:
		fmt.Print(ca.PEM)
	}
	return nil
}

// trustAgentCA sets, in this process's environment (which the command inherits), each of
// agentCAEnv the caller has not set, so the command's TLS clients accept the proxy on http
// targets called over HTTPS. A variable already set is the caller's choice and is kept.
func trustAgentCA(run *control.Run) {
	if run.AgentCA == "" {
		return
	}
	for _, v := range agentCAEnv {
		if _, set := os.LookupEnv(v.name); set {
			continue
		}
		path := run.AgentCA
		if v.bundle && run.AgentCABundle != "" {
			path = run.AgentCABundle
		}
		os.Setenv(v.name, path)
	}
}
