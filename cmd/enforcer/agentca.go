package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"path/filepath"

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

// trustAgentCA makes the command's TLS clients accept the proxy on http targets called over
// HTTPS, through its environment (which the command inherits from this process): each of
// agentCAEnv the caller has not set names the daemon's file; one the caller has set (to the
// system's bundle, or roots of their own) names a copy of its file with the agent CA after it,
// so nothing the caller trusted is lost. It returns what removes those copies.
func trustAgentCA(run *control.Run) (cleanup func()) {
	cleanup = func() {}
	if run.AgentCA == "" {
		return cleanup
	}
	caPEM, err := os.ReadFile(run.AgentCA)
	if err != nil {
		fmt.Fprintf(os.Stderr, "enforcer: warning: %v; https:// calls to http targets will fail their certificate check\n", err)
		return cleanup
	}
	var dir string
	copies := map[string]string{} // the caller's file → its copy with the agent CA
	for _, v := range agentCAEnv {
		own, set := os.LookupEnv(v.name)
		if !set || own == "" {
			path := run.AgentCA
			if v.bundle {
				// The daemon found no system roots: the agent CA alone, where a client looks
				// for every root, would fail every other HTTPS call.
				if path = run.AgentCABundle; path == "" {
					continue
				}
			}
			os.Setenv(v.name, path)
			continue
		}
		if c, ok := copies[own]; ok {
			os.Setenv(v.name, c)
			continue
		}
		roots, err := readCertificates(own)
		if err != nil {
			fmt.Fprintf(os.Stderr, "enforcer: warning: $%s: %v; left as it is, so https:// calls to http targets may fail their certificate check\n", v.name, err)
			continue
		}
		if dir == "" {
			if dir, err = os.MkdirTemp("", "enforcer-run-ca-"); err != nil {
				fmt.Fprintf(os.Stderr, "enforcer: warning: %v; $%s left as it is\n", err, v.name)
				continue
			}
			os.Chmod(dir, 0o755) // the command may run as another user (sudo -u inside it)
			d := dir
			cleanup = func() { os.RemoveAll(d) }
		}
		c := filepath.Join(dir, fmt.Sprintf("roots-%d.pem", len(copies)))
		if err := os.WriteFile(c, append(append(roots, '\n'), caPEM...), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "enforcer: warning: %v; $%s left as it is\n", err, v.name)
			continue
		}
		copies[own] = c
		os.Setenv(v.name, c)
	}
	return cleanup
}

// readCertificates returns the PEM certificates of the file at path, re-encoded, and nothing
// else of it: the copy trustAgentCA makes is readable by everyone, and `enforcer run` may run as
// root, so a variable naming another file (SSL_CERT_FILE=/etc/shadow) must not have it copied.
func readCertificates(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []byte
	for rest := b; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" && block.Type != "TRUSTED CERTIFICATE" {
			return nil, fmt.Errorf("%s holds something else than certificates; only certificates are copied", path)
		}
		if _, err := x509.ParseCertificate(block.Bytes); block.Type == "CERTIFICATE" && err != nil {
			return nil, fmt.Errorf("%s holds something else than certificates; only certificates are copied", path)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: block.Type, Bytes: block.Bytes})...)
	}
	if out == nil {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return out, nil
}
