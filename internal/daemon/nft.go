package daemon

import (
	"fmt"

	"github.com/enforcer-dev/enforcer/internal/policy"
	"github.com/enforcer-dev/enforcer/internal/redirect"
)

func loadNFT(d *Daemon, pol *policy.Policy) (redirect.Redirector, error) {
	return nil, fmt.Errorf("nftables mode is not built yet")
}

func uninstallNFT(table string) error { return nil }
