package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/enforcer-dev/enforcer/internal/agentca"
)

// openAgentCA returns the authority that signs the certificates agents calling http targets
// over HTTPS are shown: the configured one, else the daemon's own in state_dir/agent-ca.
func openAgentCA(cfg *Config) (*agentca.Authority, error) {
	c := cfg.AgentCA
	if c == nil {
		a, err := agentca.Open(filepath.Join(cfg.StateDir, "agent-ca"))
		if err != nil {
			return nil, fmt.Errorf("%w (or name one in the configuration: agent_ca: {cert_file, key_file})", err)
		}
		return a, nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("agent_ca: needs cert_file and key_file")
	}
	certPEM, err := os.ReadFile(c.CertFile)
	if err != nil {
		return nil, fmt.Errorf("agent_ca: %w", err)
	}
	keyPEM, err := readRootFile(c.KeyFile, "agent_ca key", 0o077, "it must be 0600 (chmod 600 "+c.KeyFile+")")
	if err != nil {
		return nil, fmt.Errorf("agent_ca: %w", err)
	}
	return agentca.New(certPEM, keyPEM)
}

// agentCAFile is where the daemon publishes the agent CA's certificate for agents and their
// launchers to read: beside the control socket, in a directory anyone may enter.
func agentCAFile(cfg *Config) string {
	return filepath.Join(filepath.Dir(cfg.Socket), agentca.CertFile)
}

// agentCABundleFile is the agent CA's certificate after the system's roots, for clients that
// take one file of every root they trust (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE).
func agentCABundleFile(cfg *Config) string {
	return filepath.Join(filepath.Dir(cfg.Socket), "agent-ca-bundle.pem")
}

// systemRootFiles are where distributions keep their bundle of trusted roots (as crypto/x509
// looks for them); the first that exists is used.
var systemRootFiles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Arch, Gentoo
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine
}

// publishAgentCA writes the certificate (public) to agentCAFile, and with the system's roots
// before it to agentCABundleFile, both readable by everyone, and returns the bundle's path. The
// bundle holds the roots as they were when the daemon started. Without the system's roots there
// is no bundle ("" returned, and any earlier one removed): a bundle of the agent CA alone, put
// where a client looks for every root, would fail every other HTTPS call the agent makes.
func publishAgentCA(cfg *Config, a *agentca.Authority) (string, error) {
	if err := publishFile(agentCAFile(cfg), a.CertPEM()); err != nil {
		return "", err
	}
	bundle := agentCABundleFile(cfg)
	for _, f := range systemRootFiles {
		if b, err := os.ReadFile(f); err == nil && len(b) > 0 {
			return bundle, publishFile(bundle, append(append(b, '\n'), a.CertPEM()...))
		}
	}
	os.Remove(bundle)
	return "", nil
}

// publishFile replaces path with data, mode 0644, through a temporary file.
func publishFile(path string, data []byte) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	// O_EXCL: a file or link someone else put there is not written through.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("publish the agent CA: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644) // whatever the umask
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("publish the agent CA: %w", err)
	}
	return nil
}
