package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/enforcer-dev/enforcer/internal/daemon"
)

func cmdDaemon(ctx context.Context, fs *flag.FlagSet, args []string) error {
	cfgPath := fs.String("config", "/etc/enforcer/enforcer.yaml", "daemon configuration file")
	redirectMode := fs.String("redirect", "", "override the configuration: bpf or nftables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the daemon needs root (it loads BPF programs and manages cgroups)")
	}
	cfg, err := daemon.LoadDaemonConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *redirectMode != "" {
		cfg.Redirect = *redirectMode
	}
	if os.Getenv("GOMAXPROCS") == "" {
		procs := 1
		if cfg.MaxProcs != nil {
			procs = *cfg.MaxProcs
		}
		if procs > 0 {
			runtime.GOMAXPROCS(procs)
		}
	}
	return daemon.Run(ctx, cfg, newLogger(cfg.LogLevel))
}

func cmdUninstall(ctx context.Context, fs *flag.FlagSet, args []string) error {
	cfgPath := fs.String("config", "/etc/enforcer/enforcer.yaml", "daemon configuration file (for the pin dir, cgroup and table names)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("uninstall needs root")
	}
	path := *cfgPath
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		path = "" // defaults
	}
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		return err
	}
	if err := daemon.Uninstall(cfg); err != nil {
		return err
	}
	fmt.Println("enforcement removed: programs detached and unpinned, enforced processes killed, cgroups removed")
	return nil
}
