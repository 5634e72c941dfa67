package daemon

import (
	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

func loadNFT(d *Daemon, pol *policy.Policy) (redirect.Redirector, error) {
	return redirect.LoadNFT(redirect.NFTConfig{
		Subtree:       d.subtree,
		ProxyPort:     d.cfg.ProxyPort,
		ReservedPorts: d.cfg.reservedPorts(),
		DNSResolvers:  pol.Resolvers,
		TableName:     d.cfg.NFTTable,
		Logger:        d.log,
	})
}

// uninstallNFT deletes the table; a running daemon owns it and must be stopped first.
func uninstallNFT(table string) error { return redirect.UninstallNFT(table) }
