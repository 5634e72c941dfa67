package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/enforcer-dev/enforcer/internal/redirect"
)

// Uninstall removes enforcement: it kills every enforced process first (once the programs are
// gone they would reach the network unchecked), then detaches and unpins the programs, deletes
// the nftables table and removes the cgroup subtree. It works with no daemon running.
func Uninstall(cfg *Config) error {
	var errs []error
	path := cfg.Cgroup
	if !filepath.IsAbs(path) {
		mnt, err := redirect.Cgroup2Mount()
		if err != nil {
			return err
		}
		path = filepath.Join(mnt, path)
	}
	if _, err := os.Stat(path); err == nil {
		if err := redirect.Kill(path); err != nil {
			errs = append(errs, err)
		}
	}
	if err := redirect.UninstallBPF(cfg.PinDir); err != nil {
		errs = append(errs, fmt.Errorf("detach BPF: %w", err))
	}
	if err := uninstallNFT(cfg.NFTTable); err != nil {
		errs = append(errs, fmt.Errorf("remove nftables table: %w", err))
	}
	if _, err := os.Stat(path); err == nil {
		if err := (&redirect.Subtree{Path: path}).RemoveAll(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
